"""Topics: create them if they are missing (development and first deploys; idempotent), and the key partitioner."""

import asyncio
import functools
import logging
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from servicekit.settings import kafka_options

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36

# aiokafka's murmur2 is pure Python (~2-6 µs for a customer id), and the relay hashes the key of
# every event it sends (~3 % of intake's CPU under batch). Keys are customer ids, which repeat.
_key_hash = functools.lru_cache(maxsize=65_536)(murmur2)
_by_random = DefaultPartitioner()


def partition_for_key(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's (and the Java client's) default partitioner, with the key hashes remembered."""
    if key is None:
        return int(_by_random(key, all_partitions, available))
    return all_partitions[(_key_hash(key) & 0x7FFFFFFF) % len(all_partitions)]


async def ensure_topics(
    bootstrap_servers: str,
    partitions: int,
    replication_factor: int,
    names: Sequence[str] = (*ALL_EVENT_TOPICS, DEADLETTER),
) -> None:
    """Create the missing ones; warn about existing ones with another partition count."""
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **kafka_options())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                response = await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing]
                )
                for topic_error in getattr(response, "topic_errors", []):
                    name, code = topic_error[0], topic_error[1]
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        raise RuntimeError(f"creating topic {name} failed with error code {code}")
                log.info("created topics %s", ", ".join(missing))
            for name, count in (await partition_counts(admin, list(names))).items():
                if count != partitions:
                    # Any client asking for the metadata of a missing topic makes the embedded
                    # broker (and Kafka with auto.create.topics.enable) create it with its default
                    # count: after the embedded broker restarts empty, a consumer rejoining its
                    # group can do that before the services recreate the topics. Events still
                    # flow. Not deleted and made again: the embedded broker's groups then keep
                    # their old assignment, and the new partitions go unread (see docs/broker.md); nor
                    # can partitions be added there (no CreatePartitions).
                    log.warning("topic %s has %d partitions, not the %d configured", name, count, partitions)
            return
        except (OSError, TimeoutError, KafkaConnectionError) as exc:
            log.warning("broker not reachable for topic creation: %s", exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """Partitions of each of these topics that exists, from the metadata of all topics: asking
    for a topic by name makes a broker that auto-creates topics create it."""
    wanted = set(names)
    return {
        t["topic"]: len(t["partitions"])
        for t in await admin.describe_topics()
        if t["error_code"] == 0 and t["topic"] in wanted
    }
