"""eventkit.topics and auto_created_topics on the real broker: missing topics are created, a topic some client's
metadata request created first (with the broker's default partition count) is reported, and
BrokerWatch notices offsets acknowledged past such a topic's partitions. Also the two embedded
broker differences behind that: it acknowledges writes past a topic's partitions, which no
reader sees, and a group keeps its assignment when a topic gets more partitions."""

import asyncio
import contextlib
import logging
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from eventkit.forgetful_broker import BrokerWatch
from eventkit.partition_ends import PartitionEnds
from eventkit.topics import TopicSpec, ensure_topics
from servicekit.settings import kafka_options

from tests.conftest import make_topic, produce_batch, read_from_start, unique_topic


async def counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """Partitions per topic, read from the metadata of all topics (asking for named ones would
    create them)."""
    reader = PartitionEnds(bootstrap, client_options=kafka_options())
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

    with caplog.at_level(logging.WARNING, logger="eventkit.auto_created_topics"):
        await ensure_topics(
            bootstrap, [TopicSpec(early, wanted, 1), TopicSpec(missing, wanted, 1)], client_options=kafka_options()
        )

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


async def test_broker_watch_notices_writes_past_the_partitions_of_a_topic(
    bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic = unique_topic()
    default = await made_by_a_subscriber(bootstrap, topic)
    p0, past = TopicPartition(topic, 0), TopicPartition(topic, default + 1)
    await produce_batch(producer, topic, 0, 3)  # offsets 0-2, acknowledged: the relay's watermark is 2
    watch = BrokerWatch(bootstrap, [TopicSpec(topic, default + 2, 1)], "t-past", client_options=kafka_options())
    try:
        assert await watch.forgot({p0: 2}) is None  # the count alone is no loss: reported by ensure_topics
        # The ends alone would not tell: partition 0 still holds what was acknowledged.
        assert await watch.forgot({p0: 2, past: 0}) == (
            f"{topic}[{default + 1}] was acknowledged, but {topic} has {default} partitions"
        )
    finally:
        await watch.stop()


async def test_the_embedded_broker_keeps_a_groups_assignment_when_partitions_are_added(bootstrap: str) -> None:
    # Why a topic with too few partitions is not deleted and made again with the configured count:
    # the group's members see the new count and rejoin, and the broker hands back the assignment
    # of before (an unchanged member rejoining a formed group keeps its generation), so the new
    # partitions go unread. Apache Kafka rebalances and assigns them.
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=2)
    assignments: list[set[int]] = []

    class Recorder(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            pass

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            assignments.append({tp.partition for tp in assigned})

    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{topic}")
    member.subscribe([topic], listener=Recorder())
    await member.start()
    try:
        for _ in range(100):
            await member.getmany(timeout_ms=100)
            if len(member.assignment()) == 2:
                break
        assert {tp.partition for tp in member.assignment()} == {0, 1}
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
        finally:
            await admin.close()
        await member._client.force_metadata_update()  # aiokafka has no public call for a refresh
        for _ in range(50):  # five seconds of polling: the rejoin takes well under one
            await member.getmany(timeout_ms=100)
        assert member.partitions_for_topic(topic) == {0, 1, 2, 3}  # the member knows of four

        assert assignments == [{0, 1}, {0, 1}]  # it rejoined, and got what it had
        assert {tp.partition for tp in member.assignment()} == {0, 1}
    finally:
        await member.stop()


async def test_the_embedded_broker_hides_writes_acknowledged_beside_those_to_a_topic_it_did_not_have(
    bootstrap: str,
) -> None:
    # Why the relay reads its topics back after a republish (forgetful_broker.py). After the embedded
    # broker restarted empty, a producer's batches go out before any client made the topics anew:
    # it acknowledges them (Apache Kafka answers UNKNOWN_TOPIC_OR_PARTITION) and keeps them; making
    # the topic then starts its offsets at 0 again beside them, and later writes are acknowledged
    # at offsets inside those batches, which a reader, going by offsets, skips.
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=1)
    stale = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await stale.start()
    try:
        await stale.send_and_wait(topic, b"before", partition=0)  # the producer knows the topic
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])  # as after a restart: the broker has no such topic
            early = [await stale.send(topic, f"early-{i}".encode(), partition=0) for i in range(5)]
            assert [m.offset for m in await asyncio.gather(*early)] == [0, 1, 2, 3, 4]  # one batch, acknowledged
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        acknowledged: dict[bytes, int] = {}
        for i in range(8):
            value = f"late-{i}".encode()
            # A write whose offset is where one of those batches starts fails outright.
            with contextlib.suppress(KafkaError):
                acknowledged[value] = (await stale.send_and_wait(topic, value, partition=0)).offset
        assert min(acknowledged.values()) < 5  # the offsets began again at 0
        hidden = set(acknowledged) - {r.value for r in await read_from_start(bootstrap, topic, 3)}
        assert hidden, acknowledged  # acknowledged, and no reader gets them
        assert all(acknowledged[v] < 5 for v in hidden)  # all inside the batch from before
    finally:
        await stale.stop()
