"""Consumers against a broker that takes a commit of the offsets of before it restarted
(eventkit/stale_commits.py): a group offset past a partition's end, or a group the coordinator
forgot, makes the consumer read from the start."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from crmtools.devstack import EmbeddedBroker, free_port
from eventkit.consumer import IdempotentConsumer
from eventkit.stale_commits import GroupGenerations, past_end
from servicekit.timeline import digest

from tests.conftest import eventually, make_topic, unique_topic
from tests.plumbing.test_consumer import interaction, make_consumer, run_until_on_timeline, send


async def test_a_group_offset_past_the_partitions_end_is_read_again_from_the_start(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    # After the embedded broker restarted empty, a member commits the offsets it had (the broker
    # takes them for a group and topic it made anew), and the group rejoins from there: past the
    # end of the partition the relays are filling again. The consumer must read it from the start.
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=1)
    events = [interaction("cust-past", n) for n in range(5)]
    await send(producer, topic, events)
    tp = TopicPartition(topic, 0)
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{topic}", enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([tp])
        await committer.commit({tp: OffsetAndMetadata(40, "")})  # offsets of a log from before
    finally:
        await committer.stop()

    consumer = make_consumer(pool, producer, bootstrap, topic, "t-past-end", session_timeout_ms=6000)
    assert await run_until_on_timeline(consumer, pool, "cust-past", len(events)) == len(events)  # not at 40


async def test_after_a_broker_restart_the_group_reads_every_partition_from_the_start(
    pool: asyncpg.Pool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A broker of its own, restarted empty under a running consumer, the topic then filled again
    # (new events first, then the old ones as the relays republish them). The group's new
    # generation, no later than the last, tells the consumer the coordinator forgot the group, so
    # it reads from the start whatever offsets the group has (none here; a stale commit the
    # embedded broker took, where a member that had not noticed the restart made one).
    broker = EmbeddedBroker(tmp_path / "broker.log", free_port())
    broker.start()
    topic = unique_topic()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    consumer: IdempotentConsumer | None = None
    task: asyncio.Task[None] | None = None
    before = [interaction("cust-restart", n) for n in range(10)]
    during = [interaction("cust-restart", n) for n in range(10, 15)]

    def applied(expected: int) -> Callable[[], Awaitable[int | None]]:
        async def probe() -> int | None:
            async with pool.acquire() as conn:
                held = (await digest(conn, "cust-restart"))[0]
            return held if held == expected else None

        return probe

    try:
        await make_topic(broker.bootstrap, topic, partitions=1)
        await producer.start()
        await send(producer, topic, before)
        consumer = make_consumer(pool, producer, broker.bootstrap, topic, "t-restart", session_timeout_ms=6000)
        await consumer.start()
        task = asyncio.create_task(consumer.run())
        await eventually(applied(len(before)), 20, "the events before the restart")

        with caplog.at_level(logging.WARNING, logger="eventkit.consumer"):
            broker.kill()
            broker.start()  # empty: no topic, no group, no offsets
            await make_topic(broker.bootstrap, topic, partitions=1)
            await send(producer, topic, during + before)
            await eventually(applied(len(before) + len(during)), 30, "the events of the refilled partition")

            async def forgotten() -> bool | None:
                return any("the coordinator forgot the group" in r.getMessage() for r in caplog.records) or None

            assert await eventually(forgotten, 20, "the consumer to tell the group was forgotten")
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if consumer is not None:
            await consumer.stop()
        await producer.stop()
        broker.stop()


def test_a_generation_no_later_than_the_last_means_the_coordinator_forgot_the_group() -> None:
    generations = GroupGenerations()
    assert [generations.forgot(g, True) for g in (0, 1, 2, 5)] == [False, False, False, False]  # rebalances
    assert generations.forgot(0, True)  # a broker that restarted empty starts the group again
    assert not generations.forgot(1, True)
    assert generations.forgot(1, True)  # the only member, rejoining a group made anew: the same generation
    # The first assignment after a restart can be of no partitions (no topics yet): the next tells.
    assert not generations.forgot(0, False)
    assert generations.forgot(1, True)
    assert not generations.forgot(2, True)


def test_past_end_is_the_furthest_known_position_beyond_the_partitions_end() -> None:
    assert past_end(5, 3, 7) == 7  # applied 3, the client fetching at 7 (a stale committed offset)
    assert past_end(5, None, 7) == 7  # nothing applied yet
    assert past_end(7, 3, 7) is None  # caught up
    assert past_end(0, None, None) is None  # nothing known
