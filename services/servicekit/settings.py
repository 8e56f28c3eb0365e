"""Settings from environment variables, with the defaults `make run` uses.

Every service process reads the same names (one process is one service), so pointing a
service at a real Kafka cluster and PostgreSQL is a matter of setting
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL.

CRM_ENV says where a service runs: `production` (the default), where a service refuses to start
while a secret is missing, weak or a development default (startup_problems), or `development`
(set by `make run` and the tests), which accepts the development defaults.
"""

import ssl
from pathlib import Path
from typing import Any, Literal, Self

from eventkit.eventstore import DEFAULT_MAX_EVENT_BYTES
from eventkit.signing import load_public_key
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.services import SERVICES

# services/servicekit/settings.py -> the root of the source tree (/app in the image)
DEFAULT_TOPICS_FILE = Path(__file__).resolve().parents[2] / "infra" / "topics.yaml"
DEFAULT_PORTS: dict[str, int] = {s.name: s.port for s in SERVICES}
# Secrets written in this repository (defaults, examples): never accepted in production.
DEVELOPMENT_SECRETS = frozenset({"dev-webhook-secret", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
MIN_SECRET_CHARS = 32


class KafkaSecurity(BaseSettings):
    """How the Kafka clients authenticate; PLAINTEXT (the embedded broker) unless told."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None  # SSL, SASL_SSL: the CA to trust (default: the system's)

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_security_protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        return options


def kafka_options() -> dict[str, Any]:
    """The Kafka client options from the environment, for code that has no Settings at hand."""
    return KafkaSecurity().kafka_client_options()


class Settings(KafkaSecurity):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    crm_env: Literal["development", "production"] = "production"

    service_name: str = "intake"
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0: the service's default port from DEFAULT_PORTS
    database_url: str = ""  # "": postgresql://postgres@127.0.0.1:5432/crm_<service>
    database_pool_size: int = 10
    max_body_bytes: int = 1024 * 1024  # routes may allow more (intake's batch)
    # The largest event, as published (data sealed and encoded, headers, key): 413 event_too_large
    # over it. Keep it under the producer's and the broker's message limits (1 MiB by default).
    event_max_bytes: int = DEFAULT_MAX_EVENT_BYTES

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_create_topics: bool = True
    # The topics' definitions (infra/topics.yaml; topic_plan.py). "": that file in the source
    # tree, which is /app/infra/topics.yaml in the image.
    topics_file: str = ""
    # Overrides of every topic's partitions and replication factor in TOPICS_FILE, for a cluster
    # of fewer brokers than the file assumes (the embedded broker is one: `make run` sets 1).
    kafka_topic_partitions: int | None = None
    kafka_replication_factor: int | None = None
    # Apply the database migrations at start. In Kubernetes a Job runs `crm migrate <service>`
    # first and the services, with false, refuse to start on a database that lacks one.
    migrate_on_start: bool = True
    kafka_consumer_group: str = ""  # "": crm-<service>
    kafka_session_timeout_ms: int = 10_000
    kafka_linger_ms: int = 2

    consumer_max_batch: int = 1000
    # How long the broker may hold a fetch with nothing new. It bounds how late an event is
    # seen: the client sends no second fetch to a broker while one is outstanding, so an event
    # for a partition outside that fetch waits for it to return (~30 ms median at 100 ms).
    kafka_fetch_max_wait_ms: int = 50
    consumer_commit_interval_ms: int = 500  # offsets committed at most this often (dedup covers the rest)
    outbox_batch_size: int = 1000
    outbox_poll_interval_ms: int = 500
    broker_check_interval_ms: int = 2000  # how often the relay checks the broker still has what it acked
    # /readyz fails while the event at the head of the outbox has waited longer than this.
    outbox_stuck_after_s: float = 120.0
    # The settled timeline count of /metrics (timeline_count.py): how often (0: never; each count
    # reads the whole timeline), and how old an event must be to be counted.
    timeline_count_interval_s: float = 60.0
    timeline_settled_after_s: float = 300.0

    # Origins allowed to call this service from a browser (the agent console on another port).
    cors_allow_origins: str = ",".join(
        f"http://{host}:{port}" for host in ("127.0.0.1", "localhost") for port in (8001, 8002, 8003, 8004)
    )

    # Authentication (docs/product.md §9): every route but health, readiness, metrics and docs needs a key.
    auth_required: bool = True
    auth_bootstrap_admin_key: str | None = None  # an admin key known to every service, to make the first keys
    rate_limit_per_key_rps: float = 200.0
    rate_limit_per_key_burst: float = 400.0
    # Invalid keys per client address (uvicorn's proxy headers decide what the address is behind a
    # proxy): past the burst, 429 too_many_failed_logins until the bucket refills.
    auth_failures_per_address_rps: float = 1 / 6
    auth_failures_per_address_burst: float = 20.0
    # Live timeline tickets (streamtickets.py): a secret shared by the replicas of one service
    # (not set: random per process, enough for one process per service) and their lifetime.
    stream_ticket_secret: str | None = None
    stream_ticket_seconds: int = 60

    # Data keys (docs/product.md §9): intake holds the vault; the others ask it with a key of scope `keys`
    # (the bootstrap admin key when KEY_SERVICE_API_KEY is not set) and cache what they get.
    key_service_url: str = "http://127.0.0.1:8001"
    key_service_api_key: str | None = None
    key_cache_seconds: float = 60.0

    # Trusted public keys of the signers of events that grant access (crm.auth.*; docs/product.md §14), as
    # JSON: {"<key id>": "<raw Ed25519 public key, base64>"}. Events signed otherwise are refused.
    auth_event_public_keys: dict[str, str] = {}

    log_level: str = "INFO"
    otel_exporter_otlp_endpoint: str | None = None

    @classmethod
    def for_service(cls, name: str) -> Self:
        # SERVICE_NAME in the environment must not turn one service into another.
        settings = cls()
        settings.service_name = name
        if not settings.http_port:
            settings.http_port = DEFAULT_PORTS.get(name, 8000)
        if not settings.database_url:
            settings.database_url = f"postgresql://postgres@127.0.0.1:5432/crm_{name}"
        if not settings.kafka_consumer_group:
            settings.kafka_consumer_group = f"crm-{name}"
        return settings

    def startup_problems(self) -> list[str]:
        """Why this service must not start as configured; [] if it may. Services add their own."""
        problems: list[str] = []
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            problems.append(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs KAFKA_SASL_USERNAME "
                            "and KAFKA_SASL_PASSWORD")  # fmt: skip
        for key_id, public_key in self.auth_event_public_keys.items():
            try:
                load_public_key(public_key)
            except ValueError as exc:
                problems.append(f"AUTH_EVENT_PUBLIC_KEYS[{key_id!r}]: {exc}")
        if self.crm_env != "production":
            return problems
        if not self.auth_required:
            problems.append("AUTH_REQUIRED=false is for development only")
        if self.database_url == f"postgresql://postgres@127.0.0.1:5432/crm_{self.service_name}":
            problems.append("DATABASE_URL is not set (the development default has no password)")
        if not self.auth_event_public_keys:
            problems.append("AUTH_EVENT_PUBLIC_KEYS is not set: no API key made at intake could be trusted")
        problems += secret_problems("AUTH_BOOTSTRAP_ADMIN_KEY", self.auth_bootstrap_admin_key, required=False)
        problems += secret_problems("KEY_SERVICE_API_KEY", self.key_service_api_key, required=False)
        if self.service_name != "intake" and not (self.key_service_api_key or self.auth_bootstrap_admin_key):
            problems.append("KEY_SERVICE_API_KEY (or AUTH_BOOTSTRAP_ADMIN_KEY) is not set: no data key could be read")
        problems += secret_problems("KAFKA_SASL_PASSWORD", self.kafka_sasl_password, required=False)
        # Without it each process signs with a random secret of its own: a ticket from one replica
        # fails on another, and a weak one can be found from a ticket seen in a log.
        problems += secret_problems("STREAM_TICKET_SECRET", self.stream_ticket_secret)
        return problems

    def topics_path(self) -> Path:
        return Path(self.topics_file) if self.topics_file else DEFAULT_TOPICS_FILE

    @property
    def source(self) -> str:
        """The CloudEvents `source` of everything this service produces."""
        return f"/crm/{self.service_name}"


def secret_problems(name: str, value: str | None, required: bool = True) -> list[str]:
    """What is wrong with a production secret: missing (if required), a development default, short."""
    if not value:
        return [f"{name} is not set"] if required else []
    if value in DEVELOPMENT_SECRETS:
        return [f"{name} is a development default"]
    if len(value) < MIN_SECRET_CHARS:
        return [f"{name} is shorter than {MIN_SECRET_CHARS} characters"]
    return []
