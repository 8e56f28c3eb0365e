"""Create the topics if they are missing (development and first deploys; idempotent), and make
anew those a broker created with another partition count."""

import asyncio
import logging
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(
    bootstrap_servers: str,
    partitions: int,
    replication_factor: int,
    names: Sequence[str] = (*ALL_EVENT_TOPICS, DEADLETTER),
) -> None:
    """Create the missing ones; warn about existing ones with another partition count."""
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                _raise_errors(
                    await admin.create_topics(
                        [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing]
                    )
                )
                log.info("created topics %s", ", ".join(missing))
            for name, count in (await partition_counts(admin, list(names))).items():
                if count != partitions:
                    # Any client asking for the metadata of a missing topic makes the embedded
                    # broker (and Kafka with auto.create.topics.enable) create it with its default
                    # count: after the embedded broker restarts empty, a consumer rejoining its
                    # group can do that before the services recreate the topics. The owner's
                    # BrokerWatch remakes such a topic (remake_topics) when it finds its events
                    # forgotten; here nothing is deleted (no CreatePartitions on that broker).
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


async def remake_topics(
    bootstrap_servers: str, names: Sequence[str], partitions: int, replication_factor: int, attempts: int = 5
) -> dict[str, int]:
    """Delete those of these topics that have another partition count and create them again with
    `partitions`; return the counts they have at the end.

    For a topic the broker made anew on its own (see ensure_topics) after forgetting it: its
    owner publishes its events again afterwards, so deleting loses nothing. The embedded broker
    acknowledges writes to partitions past the count it gave such a topic, and no reader ever
    sees them. A consumer's metadata request between the delete and the create can have the
    topic made with the default count again, hence the attempts.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        for attempt in range(attempts):
            counts = await partition_counts(admin, names)
            wrong = [n for n in names if counts.get(n) != partitions]
            if not wrong:
                return counts
            if present := [n for n in wrong if n in counts]:
                await admin.delete_topics(present)
                log.warning("deleted topics %s (partition counts %s), creating them with %d", ", ".join(present),
                            ", ".join(str(counts[n]) for n in present), partitions)  # fmt: skip
            _raise_errors(
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in wrong]
                )
            )
            await asyncio.sleep(0.1 * attempt)
        return await partition_counts(admin, names)
    finally:
        await admin.close()


def _raise_errors(response: object) -> None:
    for topic_error in getattr(response, "topic_errors", []):
        name, code = topic_error[0], topic_error[1]
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise RuntimeError(f"creating topic {name} failed with error code {code}")
