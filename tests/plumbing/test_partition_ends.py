"""PartitionEnds against the real broker: each partition's end, and its new end after more arrive;
and BrokerWatch, which reads the ends through it to notice a broker that forgot."""

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from eventkit.forgetful_broker import BrokerWatch
from eventkit.partition_ends import PartitionEnds
from eventkit.topics import TopicSpec
from servicekit.settings import kafka_options

from tests.conftest import make_topic, produce_batch, unique_topic


async def test_ends_of_each_partition_and_after_more_arrive(bootstrap: str, producer: AIOKafkaProducer) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in range(3)]
    await produce_batch(producer, topic, 0, 5)
    await produce_batch(producer, topic, 2, 2)
    ends = PartitionEnds(bootstrap, client_options=kafka_options())
    try:
        assert await ends.read(tps) == {tps[0]: 5, tps[1]: 0, tps[2]: 2}
        await produce_batch(producer, topic, 0, 3)
        await produce_batch(producer, topic, 1, 4)
        # The same reader again: what it saw before must not stand in for the new ends.
        assert await ends.read(tps) == {tps[0]: 8, tps[1]: 4, tps[2]: 2}
        assert await ends.read(tps[:1]) == {tps[0]: 8}  # a smaller set: just those
    finally:
        await ends.stop()


async def test_broker_watch_tells_a_forgotten_end_from_a_grown_one(bootstrap: str, producer: AIOKafkaProducer) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=2)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await produce_batch(producer, topic, 0, 5)  # offsets 0-4
    await produce_batch(producer, topic, 1, 3)  # offsets 0-2
    watch = BrokerWatch(bootstrap, [TopicSpec(topic, 2, 1)], "t-watch", client_options=kafka_options())
    try:
        assert await watch.forgot({p0: 4, p1: 2}) is None  # both still hold what was acknowledged
        # acknowledged up to 7 where the partition ends at 3: the broker forgot
        assert await watch.forgot({p0: 4, p1: 7}) == f"{topic}[1] ends at 3, at or below acknowledged offset 7"
        await produce_batch(producer, topic, 0, 5)  # offsets 5-9
        # the same watch again: the end it saw before (5) must not stand in for the new one (10)
        assert await watch.forgot({p0: 9, p1: 2}) is None
        missing = TopicPartition(unique_topic(), 0)
        assert await watch.forgot({p0: 9, missing: 0}) == f"topics missing: {missing.topic}"
    finally:
        await watch.stop()


async def test_the_embedded_broker_answers_list_offsets_too_low(bootstrap: str, producer: AIOKafkaProducer) -> None:
    # Why the ends are read from fetch responses (partition_ends.py): once batches hold several
    # records, the embedded broker's ListOffsets (aiokafka's end_offsets) answers an end below
    # the partition's, while a fetch response carries the right high watermark. Apache Kafka
    # answers both alike.
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=1)
    tp = TopicPartition(topic, 0)
    for _ in range(8):
        await produce_batch(producer, topic, 0, 11)  # 88 records in batches of 11
    ends = PartitionEnds(bootstrap, client_options=kafka_options())
    try:
        assert await ends.read([tp]) == {tp: 88}
    finally:
        await ends.stop()
    asker = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await asker.start()
    try:
        listed = (await asker.end_offsets([tp]))[tp]
    finally:
        await asker.stop()
    assert listed < 88
