"""The topics as infra/topics.yaml defines them (TOPICS_FILE), as eventkit TopicSpecs.

One file says how every topic is made: the services create the missing ones from it at start,
the relay recreates them from it when the broker forgot them, and `crm topics apply` reconciles
a cluster with it. The names themselves live in contracts/topics.py; a test holds the two equal.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from eventkit.topics import TopicSpec

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER
from servicekit.settings import Settings

MIN_INSYNC = "min.insync.replicas"


class TopicsFileError(ValueError):
    """TOPICS_FILE is missing, unreadable or not what this module expects."""


def _config_value(value: Any) -> str:
    # Kafka takes every config value as a string; YAML reads true/false and numbers as such.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load(path: Path) -> list[TopicSpec]:
    """Every topic the file defines, in its order; TopicsFileError naming the first thing wrong."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopicsFileError(f"{path}: {exc}") from exc
    entries = document.get("topics") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TopicsFileError(f"{path}: no list under `topics`")
    specs: list[TopicSpec] = []
    for i, entry in enumerate(entries):
        where = f"{path}: topics[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TopicsFileError(f"{where}: needs a name")
        where = f"{path}: {entry['name']}"
        numbers = {key: entry.get(key) for key in ("partitions", "replication_factor")}
        for key, number in numbers.items():
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise TopicsFileError(f"{where}: {key} must be a whole number of at least 1")
        config = entry.get("config") or {}
        if not isinstance(config, dict):
            raise TopicsFileError(f"{where}: config must be a mapping")
        specs.append(
            TopicSpec(
                name=entry["name"],
                partitions=entry["partitions"],
                replication_factor=entry["replication_factor"],
                config={str(k): _config_value(v) for k, v in config.items()},
            )
        )
    if len({s.name for s in specs}) != len(specs):
        raise TopicsFileError(f"{path}: a topic is defined twice")
    return specs


def with_overrides(specs: list[TopicSpec], partitions: int | None, replication_factor: int | None) -> list[TopicSpec]:
    """KAFKA_TOPIC_PARTITIONS and KAFKA_REPLICATION_FACTOR in place of every topic's own. A
    replication factor below min.insync.replicas lowers that too: Apache Kafka would refuse every
    acks=all write (NOT_ENOUGH_REPLICAS) to a topic with fewer replicas than it demands in sync."""
    out: list[TopicSpec] = []
    for spec in specs:
        config: Mapping[str, str] = spec.config
        rf = replication_factor or spec.replication_factor
        if MIN_INSYNC in config and int(config[MIN_INSYNC]) > rf:
            config = {**config, MIN_INSYNC: str(rf)}
        out.append(TopicSpec(spec.name, partitions or spec.partitions, rf, config))
    return out


def planned_topics(settings: Settings) -> list[TopicSpec]:
    """TOPICS_FILE's topics with the settings' overrides: what `crm topics apply` makes."""
    specs = load(settings.topics_path())
    return with_overrides(specs, settings.kafka_topic_partitions, settings.kafka_replication_factor)


def service_topics(settings: Settings) -> list[TopicSpec]:
    """The topics a service produces to and reads (contracts' event topics and dead letters), as
    planned_topics defines them; TopicsFileError if the file lacks one."""
    by_name = {s.name: s for s in planned_topics(settings)}
    wanted = [*ALL_EVENT_TOPICS, DEADLETTER]
    if missing := [name for name in wanted if name not in by_name]:
        raise TopicsFileError(f"{settings.topics_path()} does not define {', '.join(missing)}")
    return [by_name[name] for name in wanted]


def problems(settings: Settings) -> list[str]:
    """Why the service's topics cannot be read from TOPICS_FILE ([] if they can): a service with
    a missing or wrong file must not start (servicekit.app.refuse_bad_settings)."""
    try:
        service_topics(settings)
    except TopicsFileError as exc:
        return [f"TOPICS_FILE {exc}"]
    return []
