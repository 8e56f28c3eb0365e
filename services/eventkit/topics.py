"""Topics: create them if they are missing (development and first deploys; idempotent), and the key partitioner."""

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from eventkit.auto_created_topics import warn_of_other_counts

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36

# aiokafka's murmur2 is pure Python (~2-6 µs for a customer id), and the relay hashes the key of
# every event it sends (~3 % of intake's CPU under batch). Keys are customer ids, which repeat.
_key_hash = functools.lru_cache(maxsize=65_536)(murmur2)
_by_random = DefaultPartitioner()


@dataclass(frozen=True)
class TopicSpec:
    """One topic as it should be: the caller's names and numbers (eventkit knows none of its own).
    `config`: topic-level configuration (retention.ms, min.insync.replicas...), values as strings."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        return NewTopic(self.name, self.partitions, self.replication_factor, topic_configs=dict(self.config))


def partition_for_key(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's (and the Java client's) default partitioner, with the key hashes remembered."""
    if key is None:
        return int(_by_random(key, all_partitions, available))
    return all_partitions[(_key_hash(key) & 0x7FFFFFFF) % len(all_partitions)]


async def ensure_topics(
    bootstrap_servers: str,
    topics: Sequence[TopicSpec],
    *,
    client_options: Mapping[str, Any],
) -> None:
    """Create the missing ones of these topics, with their configuration; warn about existing ones
    with another partition count (auto_created_topics.py). Existing topics are not altered (that is
    an operator's act: `crm topics apply`). `client_options`: keyword arguments for the Kafka client."""
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **client_options)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            if missing:
                response = await admin.create_topics([t.new_topic() for t in missing])
                for topic_error in getattr(response, "topic_errors", []):
                    name, code = topic_error[0], topic_error[1]
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        raise RuntimeError(f"creating topic {name} failed with error code {code}")
                log.info("created topics %s", ", ".join(t.name for t in missing))
            await warn_of_other_counts(admin, {t.name: t.partitions for t in topics})
            return
        except (OSError, TimeoutError, KafkaConnectionError) as exc:
            log.warning("broker not reachable for topic creation: %s", exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
