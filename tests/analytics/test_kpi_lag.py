"""The KPI stream's lag gauge against the real broker, with faust's consumer as a stand-in.

faust stops fetching a partition while the stream's buffer of it is full, and then the high
watermark it knows is old; and its fetch position runs ahead of what the stream has applied.
The stand-in's are so, and the gauge must use neither.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from analytics.stream import report_lag
from eventkit.partition_ends import PartitionEnds
from faust.types import TP
from prometheus_client import REGISTRY
from servicekit.settings import kafka_options

from tests.conftest import eventually, make_topic, produce_batch, unique_topic


class StaleConsumer:
    """faust's consumer as report_lag sees it, during a catch-up with fetching paused."""

    def __init__(self, topic: str, positions: dict[int, int], highwater: int) -> None:
        self._positions = {TP(topic, p): n for p, n in positions.items()}
        self._highwater = highwater
        self.seeks: list[tuple[TP, int]] = []

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self._positions[tp] = offset

    def assignment(self) -> set[TP]:
        return set(self._positions)

    async def position(self, tp: TP) -> int:
        return self._positions[tp]

    def highwater(self, tp: TP) -> int:
        return self._highwater


async def commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await member.start()
    try:
        member.assign([tp])
        await member.commit({tp: offset})
    finally:
        await member.stop()


class App:
    def __init__(self, consumer: StaleConsumer) -> None:
        self.consumer = consumer


@contextlib.asynccontextmanager
async def reporting(
    bootstrap: str,
    consumer: StaleConsumer,
    service: str,
    applied: dict[TP, int],
    group: str,
    forgotten: set[TP] | None = None,
) -> AsyncIterator[None]:
    """report_lag running over the stand-in, with partition ends read from the real broker."""
    ends = PartitionEnds(bootstrap, client_options=kafka_options())
    task = asyncio.create_task(report_lag(App(consumer), ends, service, applied, group, forgotten))  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ends.stop()


async def test_lag_counts_from_the_real_end_to_what_is_applied_or_committed(bootstrap: str, producer: Any) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=2)
    await produce_batch(producer, topic, 0, 10)
    await produce_batch(producer, topic, 1, 4)
    # Partition 0: 3 applied. Partition 1: nothing applied since the start, the group's offset
    # committed at 1, and faust has already fetched all 4 (its position runs ahead of the stream).
    group = f"test-kpi-{topic}"
    await commit(bootstrap, group, TopicPartition(topic, 1), 1)
    consumer = StaleConsumer(topic, {0: 3, 1: 4}, highwater=3)

    def lag(partition: int) -> float | None:
        return REGISTRY.get_sample_value(
            "crm_consumer_lag", {"service": "test-kpi", "topic": topic, "partition": str(partition)}
        )

    async def reported() -> tuple[float, float] | None:
        both = (lag(0), lag(1))
        return both if None not in both else None  # type: ignore[return-value]

    async with reporting(bootstrap, consumer, "test-kpi", {TP(topic, 0): 3}, group):
        assert await eventually(reported, 15, "the lag of both partitions") == (7, 3)


async def two_partitions_of_five(bootstrap: str, producer: Any) -> str:
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=2)
    await produce_batch(producer, topic, 0, 5)
    await produce_batch(producer, topic, 1, 5)
    return topic


async def test_a_partition_ending_before_the_position_is_read_again_from_the_start(
    bootstrap: str, producer: Any
) -> None:
    # After a broker restart that forgot everything, faust's group can rejoin from offsets of
    # the log before (the embedded broker takes a member's commit of them): past the end of the
    # partition being refilled. Partition 0 is so; partition 1 is where it should be.
    topic = await two_partitions_of_five(bootstrap, producer)
    consumer = StaleConsumer(topic, {0: 40, 1: 2}, highwater=5)
    applied = {TP(topic, 1): 2}

    async def sought() -> list[tuple[TP, int]] | None:
        return consumer.seeks or None

    async with reporting(bootstrap, consumer, "test-kpi-past", applied, f"g-{topic}"):
        assert await eventually(sought, 15, "a seek") == [(TP(topic, 0), 0)]
        await asyncio.sleep(2.5)  # two more rounds: nothing else is sought
        assert consumer.seeks == [(TP(topic, 0), 0)]
        assert applied == {TP(topic, 0): 0, TP(topic, 1): 2}


async def test_partitions_of_a_group_the_coordinator_forgot_are_read_again_from_the_start(
    bootstrap: str, producer: Any
) -> None:
    # The KPI stream's assignment handler puts them in `forgotten` (GroupGenerations); the lag
    # loop seeks them once faust has sought its committed offsets, whatever those are.
    topic = await two_partitions_of_five(bootstrap, producer)
    consumer = StaleConsumer(topic, {0: 5, 1: 5}, highwater=5)
    forgotten = {TP(topic, 0), TP(topic, 1)}
    applied = {TP(topic, 0): 5, TP(topic, 1): 5}

    async def sought() -> list[tuple[TP, int]] | None:
        return sorted(consumer.seeks) if len(consumer.seeks) == 2 else None

    async with reporting(bootstrap, consumer, "test-kpi-forgot", applied, f"g-{topic}", forgotten):
        assert await eventually(sought, 15, "two seeks") == [(TP(topic, 0), 0), (TP(topic, 1), 0)]
        assert not forgotten  # taken
        await asyncio.sleep(2.5)
        assert len(consumer.seeks) == 2  # once
