"""`crm topics apply` against the real embedded broker, a fresh one per test (the session's has
topics other tests made): it creates every topic of the file from nothing, a second run plans
nothing, --dry-run changes nothing, it never shrinks. Also what the embedded broker ignores:
it describes no configs for a topic made without any, and has neither CreatePartitions nor
AlterConfigs (docs/broker.md), so `add-partitions` fails there with the reason."""

import asyncio
import io
import os
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IncompatibleBrokerVersion
from crmtools import topics as topics_command
from crmtools.processes import free_port
from crmtools.topics import apply, observe
from eventkit.topics import ensure_topics
from servicekit.settings import DEFAULT_TOPICS_FILE, Settings
from servicekit.topic_plan import service_topics

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER
from tests.conftest import make_topic
from tests.plumbing.test_secure_settings import Captures, _Stop, assert_sasl

ROOT = Path(__file__).resolve().parents[2]


def settings(bootstrap: str, topics_file: Path = DEFAULT_TOPICS_FILE) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, topics_file=str(topics_file), kafka_replication_factor=1)


async def run(s: Settings, dry_run: bool = False) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    code = await apply(s, dry_run, out, err)
    return code, out.getvalue().splitlines(), err.getvalue()


async def cluster(bootstrap: str) -> dict[str, tuple[int, dict[str, str] | None]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await observe(admin, await admin.list_topics())
    finally:
        await admin.close()
    return {name: (o.partitions, None if o.configs is None else dict(o.configs)) for name, o in found.items()}


def one_topic_file(tmp_path: Path, name: str, partitions: int) -> Path:
    path = tmp_path / "topics.yaml"
    topic = {"name": name, "partitions": partitions, "replication_factor": 1, "config": {"retention.ms": -1}}
    path.write_text(yaml.safe_dump({"topics": [topic]}))
    return path


async def test_apply_creates_every_topic_then_a_second_run_plans_nothing(broker: str) -> None:
    code, lines, err = await run(settings(broker))
    assert (code, err) == (0, "")
    kept = "cleanup.policy=delete retention.ms=-1 min.insync.replicas=1"
    assert lines == [
        *(f"create {t} partitions=6 rf=1 {kept}" for t in ALL_EVENT_TOPICS),
        f"create {DEADLETTER} partitions=6 rf=1 cleanup.policy=delete retention.ms=2592000000 min.insync.replicas=1",
        "applied 5 changes",
    ]
    made = await cluster(broker)
    assert made[ALL_EVENT_TOPICS[0]] == (
        6,
        {"cleanup.policy": "delete", "retention.ms": "-1", "min.insync.replicas": "1"},
    )
    assert sorted(made) == sorted([*ALL_EVENT_TOPICS, DEADLETTER])

    code, lines, err = await run(settings(broker))
    assert (code, err) == (0, "")
    assert lines[-1] == "nothing to do"
    assert [line.split()[:2] for line in lines[:-1]] == [["ok", t] for t in (*ALL_EVENT_TOPICS, DEADLETTER)]


async def test_topics_a_service_made_at_start_are_as_the_command_plans(broker: str) -> None:
    # the services' start (servicekit.app) and `crm topics apply` read the same definitions
    s = settings(broker)
    await ensure_topics(broker, service_topics(s), client_options=s.kafka_client_options())
    code, lines, err = await run(s, dry_run=True)
    assert (code, err) == (0, "")
    assert [line.split()[:2] for line in lines[:-1]] == [["ok", t] for t in (*ALL_EVENT_TOPICS, DEADLETTER)]
    assert (await cluster(broker))[DEADLETTER][1] == {
        "cleanup.policy": "delete", "retention.ms": "2592000000", "min.insync.replicas": "1"
    }  # fmt: skip


async def test_dry_run_prints_the_plan_and_changes_nothing(broker: str) -> None:
    # as the Kubernetes Job calls it, with the services' settings from the environment
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker, "KAFKA_REPLICATION_FACTOR": "1",
           "PYTHONPATH": f"{ROOT / 'services'}{os.pathsep}{ROOT}"}  # fmt: skip
    env.pop("TOPICS_FILE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crmtools.cli", "topics", "apply", "--dry-run",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    plan = stdout.decode().splitlines()
    assert plan[0].startswith(f"create {ALL_EVENT_TOPICS[0]} partitions=6 rf=1 ")
    assert plan[-1] == "dry run: 5 changes planned, none made"
    assert await cluster(broker) == {}


async def test_it_never_shrinks_a_topic_nor_touches_one_it_does_not_know(broker: str, tmp_path: Path) -> None:
    name, stranger = f"crm.t{uuid.uuid4().hex[:8]}.v1", f"crm.t{uuid.uuid4().hex[:8]}.v1"
    await make_topic(broker, name, partitions=4)
    await make_topic(broker, stranger, partitions=1)
    code, lines, err = await run(settings(broker, one_topic_file(tmp_path, name, 2)))
    assert (code, err) == (0, "")
    assert lines == [
        f"cannot-shrink {name} has 4 partitions, the file 2 (left as it is)",
        f"configs-unknown {name} (broker returned no configs)",
        f"extra {stranger} (not in the topics file; left as it is)",
        "nothing to do",
    ]
    assert await cluster(broker) == {name: (4, None), stranger: (1, None)}


async def test_adding_partitions_is_planned_and_the_embedded_broker_refuses_it(broker: str, tmp_path: Path) -> None:
    name = f"crm.t{uuid.uuid4().hex[:8]}.v1"
    await make_topic(broker, name, partitions=2)
    path = one_topic_file(tmp_path, name, 4)

    code, lines, _ = await run(settings(broker, path), dry_run=True)
    assert (code, lines[0]) == (0, f"add-partitions {name} 2 -> 4")

    code, lines, err = await run(settings(broker, path))
    assert code == 1
    assert err.count("\n") == 1  # one line
    assert err.startswith(f"topics apply: 1 of 1 changes failed: add-partitions {name}: ")
    assert "CreatePartitionsRequest" in err
    assert (await cluster(broker))[name][0] == 2


async def test_what_the_embedded_broker_ignores_of_a_topics_definition(broker: str) -> None:
    # Pinned (docs/broker.md): DescribeConfigs lists nothing, not even the defaults Apache Kafka
    # lists, for a topic made without configs; the ones given at creation it lists as set.
    # CreatePartitions and AlterConfigs it does not offer at all. A replication factor above its
    # one broker is accepted, the broker listed as each replica.
    await make_topic(broker, "plain", partitions=1)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("replicated", 1, 3)])
        (replicated,) = [t for t in await admin.describe_topics() if t["topic"] == "replicated"]
        replicas = replicated["partitions"][0]["replicas"]
        assert len(replicas) == 3 and len(set(replicas)) == 1
        await admin.create_topics([NewTopic("configured", 1, 1, topic_configs={"retention.ms": "-1"})])
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "plain"), ConfigResource(ConfigResourceType.TOPIC, "configured")]
        )
        entries = {r["resource_name"]: r["config_entries"] for d in described for r in d.to_object()["resources"]}
        assert entries["plain"] == []
        assert {e["config_names"]: e["config_value"] for e in entries["configured"]} == {"retention.ms": "-1"}
        with pytest.raises(IncompatibleBrokerVersion):
            await admin.create_partitions({"plain": NewPartitions(2)})
        with pytest.raises(IncompatibleBrokerVersion):
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "plain", {"retention.ms": "-1"})])
    finally:
        await admin.close()


async def test_a_broker_out_of_reach_ends_with_one_line(tmp_path: Path) -> None:
    s = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", kafka_replication_factor=1)
    code, lines, err = await run(s)
    assert (code, lines) == (1, [])
    assert err.startswith(f"topics apply: broker {s.kafka_bootstrap_servers}: ")
    assert err.count("\n") == 1


async def test_the_services_kafka_settings_reach_its_admin_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                        "KAFKA_SASL_USERNAME": "crm-case", "KAFKA_SASL_PASSWORD": "p" * 40}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    admin = Captures()
    monkeypatch.setattr(topics_command, "AIOKafkaAdminClient", admin)
    with pytest.raises(_Stop):
        await apply(Settings(), dry_run=True)
    assert_sasl(admin.made[0])
