"""`crm topics apply [--dry-run]`: make a Kafka cluster's topics what TOPICS_FILE says.

Creates missing topics (with their configuration), adds partitions where the file has more, and
sets configurations that differ; never deletes a topic or takes partitions away (a topic with
more partitions than the file, or one of ours the file does not know, is reported and left as it
is). It prints the plan, one line per topic and action, then carries it out (not with --dry-run).

Configurations are set with AlterConfigs (aiokafka has no IncrementalAlterConfigs), which makes
the listed keys a topic's whole set of overrides: the file is the one source of them. A broker
that answers DescribeConfigs with nothing (the embedded one) gets no blind alteration every run:
the plan says the configuration is unknown.
"""

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code
from eventkit.topics import TOPIC_ALREADY_EXISTS, TopicSpec
from servicekit.settings import Settings
from servicekit.topic_plan import TopicsFileError, planned_topics

OURS = "crm."  # a topic named so that the file does not define is reported as extra
CHANGES = ("create", "add-partitions", "alter-config")


@dataclass(frozen=True)
class Observed:
    """A topic as the cluster has it; configs None when the broker described none."""

    partitions: int
    replicas: int
    configs: Mapping[str, str] | None


@dataclass(frozen=True)
class Action:
    kind: str  # create, add-partitions, alter-config (CHANGES), or ok, cannot-shrink, configs-unknown, ...
    topic: str
    detail: str = ""
    spec: TopicSpec | None = None

    @property
    def line(self) -> str:
        return f"{self.kind} {self.topic} {self.detail}".rstrip()


def _configs(config: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def plan(wanted: Sequence[TopicSpec], observed: Mapping[str, Observed]) -> list[Action]:
    """What to do to make the cluster (`observed`) what `wanted` says, without deleting or shrinking."""
    actions: list[Action] = []
    for spec in wanted:
        got = observed.get(spec.name)
        if got is None:
            detail = f"partitions={spec.partitions} rf={spec.replication_factor} {_configs(spec.config)}"
            actions.append(Action("create", spec.name, detail, spec))
            continue
        before = len(actions)
        if got.partitions < spec.partitions:
            actions.append(Action("add-partitions", spec.name, f"{got.partitions} -> {spec.partitions}", spec))
        elif got.partitions > spec.partitions:
            detail = f"has {got.partitions} partitions, the file {spec.partitions} (left as it is)"
            actions.append(Action("cannot-shrink", spec.name, detail))
        if got.replicas != spec.replication_factor:
            detail = (f"has {got.replicas} replicas, the file {spec.replication_factor} "
                      "(not changed: reassign partitions with Kafka's own tools)")  # fmt: skip
            actions.append(Action("replication-differs", spec.name, detail))
        if got.configs is None:
            actions.append(Action("configs-unknown", spec.name, "(broker returned no configs)"))
        elif differ := {k: v for k, v in spec.config.items() if got.configs.get(k) != v}:
            detail = " ".join(f"{k}={got.configs.get(k, '(unset)')}->{v}" for k, v in differ.items())
            actions.append(Action("alter-config", spec.name, detail, spec))
        if len(actions) == before:
            detail = f"partitions={spec.partitions} rf={spec.replication_factor} {_configs(spec.config)}"
            actions.append(Action("ok", spec.name, detail))
    known = {s.name for s in wanted}
    for name in sorted(n for n in observed if n.startswith(OURS) and n not in known):
        actions.append(Action("extra", name, "(not in the topics file; left as it is)"))
    return actions


async def observe(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, Observed]:
    """Every topic of the cluster with its partitions and replicas, and the configs of `names`.
    From the metadata of all topics: naming one would make a broker that auto-creates topics
    create it (eventkit/auto_created_topics.py)."""
    topics = {t["topic"]: t for t in await admin.describe_topics() if t["error_code"] == 0}
    configs: dict[str, dict[str, str]] = {}
    described = [n for n in names if n in topics]
    if described:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in described]
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                if resource["error_code"]:
                    raise for_code(resource["error_code"])(f"describing {resource['resource_name']}")
                entries = resource["config_entries"]
                if entries:  # the embedded broker lists none for a topic made without any
                    configs[resource["resource_name"]] = {e["config_names"]: e["config_value"] for e in entries}
    return {
        name: Observed(
            partitions=len(t["partitions"]),
            replicas=max((len(p["replicas"]) for p in t["partitions"]), default=0),
            configs=configs.get(name),
        )
        for name, t in topics.items()
    }


def _response_errors(response: Any, errors_attr: str) -> list[str]:
    """'<topic>: <error>' for each failed entry of a CreateTopics/AlterConfigs response."""
    out: list[str] = []
    for entry in getattr(response, errors_attr, []):
        if errors_attr == "topic_errors":
            name, code, message = entry[0], entry[1], entry[2] if len(entry) > 2 else None
        else:  # AlterConfigs: (error_code, error_message, resource_type, resource_name)
            code, message, name = entry[0], entry[1], entry[3]
        if code not in (0, TOPIC_ALREADY_EXISTS):
            out.append(f"{name}: {message or for_code(code).__name__}")
    return out


async def carry_out(admin: AIOKafkaAdminClient, actions: Sequence[Action]) -> list[str]:
    """Make the changes of the plan; why each that failed did (empty: all done)."""
    failures: list[str] = []
    creates = [a.spec.new_topic() for a in actions if a.kind == "create" and a.spec]
    if creates:
        try:
            failures += _response_errors(await admin.create_topics(creates), "topic_errors")
        except KafkaError as exc:
            failures.append(f"create: {exc}")
    for action in actions:
        if action.spec is None or action.kind == "create":
            continue
        try:
            if action.kind == "add-partitions":
                await admin.create_partitions({action.topic: NewPartitions(action.spec.partitions)})
            elif action.kind == "alter-config":
                resource = ConfigResource(ConfigResourceType.TOPIC, action.topic, dict(action.spec.config))
                for response in await admin.alter_configs([resource]):
                    failures += _response_errors(response, "resources")
        except KafkaError as exc:
            # the embedded broker advertises neither CreatePartitions nor AlterConfigs
            failures.append(f"{action.kind} {action.topic}: {exc}")
    return failures


async def apply(settings: Settings, dry_run: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`crm topics apply`: 0 when the cluster is as planned (or --dry-run printed the plan), 1 with a
    one-line reason on stderr when it cannot be made so, 2 when the topics file is wrong."""
    try:
        wanted = planned_topics(settings)
    except TopicsFileError as exc:
        print(f"topics apply: {exc}", file=err)
        return 2
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=15_000, **settings.kafka_client_options()
    )
    try:
        await admin.start()
        actions = plan(wanted, await observe(admin, [s.name for s in wanted]))
        for action in actions:
            print(action.line, file=out)
        changes = [a for a in actions if a.kind in CHANGES]
        if dry_run:
            print(f"dry run: {len(changes)} changes planned, none made", file=out)
            return 0
        failures = await carry_out(admin, changes)
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"topics apply: broker {settings.kafka_bootstrap_servers}: {type(exc).__name__}: {exc}", file=err)
        return 1
    finally:
        await admin.close()
    if failures:
        print(f"topics apply: {len(failures)} of {len(changes)} changes failed: {'; '.join(failures)}", file=err)
        return 1
    print(f"applied {len(changes)} changes" if changes else "nothing to do", file=out)
    return 0
