"""PartitionEnds against the real broker: each partition's end, and its new end after more arrive."""

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from eventkit.watermarks import PartitionEnds

from tests.conftest import make_topic, produce_batch, unique_topic


async def test_ends_of_each_partition_and_after_more_arrive(bootstrap: str, producer: AIOKafkaProducer) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in range(3)]
    await produce_batch(producer, topic, 0, 5)
    await produce_batch(producer, topic, 2, 2)
    ends = PartitionEnds(bootstrap)
    try:
        assert await ends.read(tps) == {tps[0]: 5, tps[1]: 0, tps[2]: 2}
        await produce_batch(producer, topic, 0, 3)
        await produce_batch(producer, topic, 1, 4)
        # The same reader again: what it saw before must not stand in for the new ends.
        assert await ends.read(tps) == {tps[0]: 8, tps[1]: 4, tps[2]: 2}
        assert await ends.read(tps[:1]) == {tps[0]: 8}  # a smaller set: just those
    finally:
        await ends.stop()
