"""eventkit.topics on the real broker: missing topics are created, a topic some client's
metadata request created first (with the broker's default partition count) is reported, and the
owner's BrokerWatch makes such a topic anew with the configured count. Also the embedded
broker's difference that makes this matter: it acknowledges writes past such a topic's
partitions, and no reader sees them."""

import asyncio
import logging
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from eventkit.amnesia import BrokerWatch
from eventkit.topics import ensure_topics
from eventkit.watermarks import PartitionEnds

from tests.conftest import make_topic, produce_batch, unique_topic


async def counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """Partitions per topic, read from the metadata of all topics (asking for named ones would
    create them)."""
    reader = PartitionEnds(bootstrap)
    try:
        found = await reader.partitions(names)
    finally:
        await reader.stop()
    return dict(Counter(tp.topic for tp in found))


async def made_by_a_subscriber(bootstrap: str, topic: str) -> int:
    """Have the broker create the topic the way it does when a group member subscribes to a
    topic it does not know (aiokafka's metadata requests always ask for it to be created): with
    the broker's default count, which is returned. This is what happens when the embedded broker
    restarts empty and a consumer rejoins before the services recreate the topics."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}")
    await consumer.start()
    try:
        for _ in range(50):
            if found := (await counts(bootstrap, [topic])).get(topic):
                return found
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
    raise AssertionError(f"{topic} was not created by its subscriber")


async def test_a_topic_a_subscriber_created_first_is_reported(bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    early, missing = unique_topic(), unique_topic()
    default = await made_by_a_subscriber(bootstrap, early)
    assert missing not in await counts(bootstrap, [missing])  # reading the metadata created nothing
    wanted = default + 2

    with caplog.at_level(logging.WARNING, logger="eventkit.topics"):
        await ensure_topics(bootstrap, wanted, 1, names=[early, missing])

    assert await counts(bootstrap, [early, missing]) == {early: default, missing: wanted}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"topic {early} has {default} partitions, not the {wanted} configured"]


async def test_the_embedded_broker_acknowledges_writes_past_the_partitions_it_made(bootstrap: str) -> None:
    # A producer whose metadata is from before the topic was made anew with fewer partitions
    # (after the embedded broker restarted empty: batches queued for the old partitions go out).
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=6)
    stale = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await stale.start()
    try:
        await stale.send_and_wait(topic, b"before", partition=5)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
        default = await made_by_a_subscriber(bootstrap, topic)
        assert default < 6

        sent = await stale.send_and_wait(topic, b"gone", partition=5)

        # Acknowledged (Apache Kafka answers UNKNOWN_TOPIC_OR_PARTITION) in a partition that no
        # reader learns of: the message is lost although the producer was told it was stored.
        assert (sent.topic, sent.partition) == (topic, 5)
        assert await counts(bootstrap, [topic]) == {topic: default}
    finally:
        await stale.stop()


async def test_broker_watch_makes_anew_a_topic_with_another_count(bootstrap: str, producer: AIOKafkaProducer) -> None:
    topic = unique_topic()
    default = await made_by_a_subscriber(bootstrap, topic)
    wanted = default + 2
    p0 = TopicPartition(topic, 0)
    await produce_batch(producer, topic, 0, 3)  # offsets 0-2, acknowledged: the relay's watermark is 2
    watch = BrokerWatch(bootstrap, [topic], wanted, 1, "t-remake")
    try:
        # The ends alone would not tell: partition 0 still holds what was acknowledged.
        assert await watch.forgot({p0: 2}) == f"{topic} has {default} partitions, not {wanted}"

        await watch.recover()

        assert await counts(bootstrap, [topic]) == {topic: wanted}
        # made anew, so empty: the relay now publishes its whole store again
        assert await watch.forgot({p0: 2}) == f"{topic}[0] ends at 0, at or below acknowledged offset 2"
        await produce_batch(producer, topic, 0, 3)
        assert await watch.forgot({p0: 2}) is None
    finally:
        await watch.stop()
