"""Production settings (docs/product.md §14): development secrets are refused outside CRM_ENV=development,
and the Kafka authentication settings reach every client the services make."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eventkit import partition_ends, topics
from eventkit.acceptance import Acceptance
from eventkit.consumer import IdempotentConsumer, Waiters
from eventkit.signing import generate_key_pair
from intake.settings import IntakeSettings
from notification.settings import NotificationSettings
from servicekit import app as app_module
from servicekit.app import StartupRefused, refuse_bad_settings
from servicekit.settings import Settings, kafka_options

ROOT = Path(__file__).resolve().parents[2]
PRIVATE, PUBLIC = generate_key_pair()
STRONG = "s" * 40
WHSEC = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def production(**overrides: Any) -> dict[str, Any]:
    """Settings a production service may start with; override one to break it."""
    return {
        "crm_env": "production",
        "database_url": "postgresql://crm_case:pw@db:5432/crm_case",
        "auth_event_public_keys": {"k1": PUBLIC},
        "auth_bootstrap_admin_key": STRONG,
        "webhook_secret": "w" * 40,
        "master_key": base64.b64encode(os.urandom(32)).decode(),
        "auth_event_signing_key": PRIVATE,
        "auth_event_signing_key_id": "k1",
        "stream_ticket_secret": "t" * 40,
        **overrides,
    }


def test_crm_env_is_production_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_ENV", raising=False)
    assert Settings().crm_env == "production"


def test_production_refuses_development_defaults_and_missing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUTH_EVENT_PUBLIC_KEYS", "AUTH_BOOTSTRAP_ADMIN_KEY", "WEBHOOK_SECRET", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_ENV", "production")
    problems = NotificationSettings.for_service("notification").startup_problems()
    assert "WEBHOOK_SECRET is a development default" in problems
    assert any(p.startswith("DATABASE_URL is not set") for p in problems)
    assert any(p.startswith("AUTH_EVENT_PUBLIC_KEYS is not set") for p in problems)
    assert any(p.startswith("KEY_SERVICE_API_KEY (or AUTH_BOOTSTRAP_ADMIN_KEY) is not set") for p in problems)
    with pytest.raises(StartupRefused, match=r"notification refuses to start \(CRM_ENV=production\).*WEBHOOK_SECRET"):
        refuse_bad_settings(NotificationSettings.for_service("notification"))
    # the same settings are fine in development
    monkeypatch.setenv("CRM_ENV", "development")
    assert NotificationSettings.for_service("notification").startup_problems() == []


def assert_problem(problems: list[str], problem: str | None) -> None:
    """None: no problem at all; otherwise one problem starts with the words given."""
    if problem is None:
        assert problems == []
    else:
        assert any(p.startswith(problem) for p in problems), problems


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({}, None),
        ({"webhook_secret": "dev-webhook-secret"}, "WEBHOOK_SECRET is a development default"),
        ({"webhook_secret": "short"}, "WEBHOOK_SECRET is shorter than 32 characters"),
        ({"webhook_secret": WHSEC}, None),  # Standard Webhooks' form
        ({"webhook_secret": "whsec_" + base64.b64encode(b"k" * 20).decode()}, "WEBHOOK_SECRET's key is under"),
        ({"webhook_secret": "whsec_" + "not base64!" * 4}, "WEBHOOK_SECRET: the part after whsec_ is not base64"),
        ({"auth_bootstrap_admin_key": "crm_admin_x"}, "AUTH_BOOTSTRAP_ADMIN_KEY is shorter than 32 characters"),
        ({"auth_required": False}, "AUTH_REQUIRED=false is for development only"),
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME"),
        ({"stream_ticket_secret": None}, "STREAM_TICKET_SECRET is not set"),
        ({"stream_ticket_secret": "short"}, "STREAM_TICKET_SECRET is shorter than"),
    ],
)
def test_notification_in_production(overrides: dict[str, Any], problem: str | None) -> None:
    problems = NotificationSettings(**production(**overrides)).startup_problems()
    assert_problem(problems, problem)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({}, None),
        ({"master_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, "MASTER_KEY is a development default"),
        ({"auth_bootstrap_admin_key": None}, "AUTH_BOOTSTRAP_ADMIN_KEY is not set"),
        ({"auth_event_signing_key": None}, "AUTH_EVENT_SIGNING_KEY and AUTH_EVENT_SIGNING_KEY_ID are not set"),
        ({"auth_event_public_keys": {"k1": generate_key_pair()[1]}}, "AUTH_EVENT_PUBLIC_KEYS has no public key 'k1'"),
        ({"auth_event_public_keys": {"k1": "nonsense"}}, "AUTH_EVENT_PUBLIC_KEYS['k1']: not a raw Ed25519"),
        ({"identity_hmac_secrets": {"chat": "short"}}, "IDENTITY_HMAC_SECRETS['chat'] is shorter than"),
        ({"identity_hmac_secrets": {"chat": "c" * 40}}, None),
    ],
)
def test_intake_in_production(overrides: dict[str, Any], problem: str | None) -> None:
    problems = IntakeSettings(**production(**overrides)).startup_problems()
    assert_problem(problems, problem)


def test_a_malformed_whsec_webhook_secret_is_refused_in_development_too() -> None:
    problems = NotificationSettings(**production(crm_env="development", webhook_secret="whsec_%%")).startup_problems()
    assert problems == ["WEBHOOK_SECRET: the part after whsec_ is not base64"]


def test_intake_without_a_matching_signing_key_is_refused_in_development_too() -> None:
    problems = IntakeSettings(**production(crm_env="development", auth_event_public_keys={})).startup_problems()
    assert any(p.startswith("AUTH_EVENT_PUBLIC_KEYS has no public key 'k1'") for p in problems)


@pytest.mark.parametrize("service", ["notification", "intake"])
def test_a_service_process_with_a_development_secret_exits_with_the_reason(service: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "WEBHOOK_", "DATABASE_URL"))}
    env |= {
        "CRM_ENV": "production",
        "PYTHONPATH": f"{ROOT / 'services'}{os.pathsep}{ROOT}",
        "MASTER_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # the one contracts.generate uses
        "HTTP_PORT": "1",  # never bound: it must not get that far
    }
    result = subprocess.run(
        [sys.executable, "-m", f"{service}.main"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode != 0
    assert f"{service} refuses to start (CRM_ENV=production)" in result.stderr
    expected = "WEBHOOK_SECRET is a development default" if service == "notification" else "MASTER_KEY is a development"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


SASL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "crm-case",
    "KAFKA_SASL_PASSWORD": "p" * 40,
}


@pytest.fixture
def sasl_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)


def test_plaintext_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SASL:
        monkeypatch.delenv(name, raising=False)
    assert kafka_options() == {"security_protocol": "PLAINTEXT"}


def test_ssl_protocols_get_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    options = kafka_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["ssl_context"] is not None


class Captures:
    """Stands in for an aiokafka client class: records the keyword arguments; start() fails (to
    end the caller there) unless told to succeed."""

    made: list[dict[str, Any]]

    def __init__(self, start_fails: bool = True) -> None:
        self.made = []
        self.start_fails = start_fails

    def __call__(self, *args: Any, **kwargs: Any) -> "Captures":
        self.made.append(kwargs)
        return self

    async def start(self) -> None:
        if self.start_fails:
            raise _Stop

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _Stop(Exception):
    pass


def assert_sasl(options: dict[str, Any]) -> None:
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "crm-case"
    assert options["sasl_plain_password"] == "p" * 40


@pytest.mark.usefixtures("sasl_env")
async def test_sasl_settings_reach_every_kafka_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # the consumer: a real aiokafka client, configured but not started
    consumer = IdempotentConsumer(
        service="t",
        bootstrap_servers="127.0.0.1:1",
        group_id="g",
        topics=["t"],
        pool=None,  # type: ignore[arg-type]
        producer=None,  # type: ignore[arg-type]
        subscribers=[],
        waiters=Waiters(),
        acceptance=Acceptance({}),
        deadletter_topic="dl",
        client_options=kafka_options(),  # what the service wiring passes (Settings.kafka_client_options)
    )
    client = consumer._consumer._client
    assert (client._security_protocol, client._sasl_mechanism, client._sasl_plain_username) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "crm-case",
    )
    # the producer of the service and its relay
    producer = Captures(start_fails=False)  # _start_producer retries until one starts
    monkeypatch.setattr(app_module, "AIOKafkaProducer", producer)
    await app_module._start_producer(Settings())
    assert_sasl(producer.made[0])
    # the admin client that makes the topics
    admin = Captures()
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", admin)
    with pytest.raises(_Stop):
        await topics.ensure_topics("127.0.0.1:1", [topics.TopicSpec("t", 1, 1)], client_options=kafka_options())
    assert_sasl(admin.made[0])
    # the readers of partition ends and committed offsets
    reader = Captures()
    monkeypatch.setattr(partition_ends, "AIOKafkaConsumer", reader)
    with pytest.raises(_Stop):
        await partition_ends.committed_offsets("127.0.0.1:1", "g", [], client_options=kafka_options())
    assert_sasl(reader.made[0])


def test_public_keys_come_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_EVENT_PUBLIC_KEYS", json.dumps({"a": PUBLIC, "b": PUBLIC}))
    assert Settings().auth_event_public_keys == {"a": PUBLIC, "b": PUBLIC}
