"""The KPI stream's consumer against the real broker and PostgreSQL: its group, its dedup
record, and a lag gauge on every partition it reads, from the moment it is assigned."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from analytics.settings import AnalyticsSettings
from analytics.stream import kpi_consumer
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.consumer import IdempotentConsumer
from eventkit.eventstore import EventStore
from prometheus_client import REGISTRY
from servicekit.runtime import Runtime, ServiceSpec

from tests.conftest import eventually, fresh_database, make_topic, produce_batch, unique_topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "analytics" / "migrations"


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await member.start()
    try:
        member.assign(list(offsets))
        await member.commit(offsets)
    finally:
        await member.stop()


@contextlib.asynccontextmanager
async def running(consumer: IdempotentConsumer) -> AsyncIterator[None]:
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()


async def test_a_caught_up_kpi_stream_reports_lag_0_on_every_partition_it_reads(
    postgres: EmbeddedPostgres, bootstrap: str, producer: Any
) -> None:
    # A restart with nothing new to read: partition 0 was read to its end before (the group's
    # committed offset), partition 1 never had anything. Neither has anything applied in this
    # process, and both are to read 0 (the faust stream did; eventkit's consumer reported no
    # gauge until it applied something, so a caught-up partition never showed).
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=2)
    await produce_batch(producer, topic, 0, 5)
    settings = AnalyticsSettings.for_service("analytics")
    settings.service_name = f"t-{uuid.uuid4().hex[:8]}"
    settings.kafka_bootstrap_servers = bootstrap
    await commit(bootstrap, f"crm-{settings.service_name}-kpi", {TopicPartition(topic, 0): 5})

    dsn = await fresh_database(postgres, [MIGRATIONS])
    pool = await db.create_pool(dsn, 3)
    rt = Runtime(settings=settings, spec=ServiceSpec(name="analytics"), events=EventStore("analytics"), context=None)
    rt.pool, rt.producer = pool, producer
    consumer = kpi_consumer(rt, topics=[topic])

    def lag(partition: int) -> float | None:
        labels = {"service": f"{settings.service_name}-kpi", "topic": topic, "partition": str(partition)}
        return REGISTRY.get_sample_value("crm_consumer_lag", labels)

    async def reported() -> tuple[float, float] | None:
        both = (lag(0), lag(1))
        return (both[0], both[1]) if both[0] is not None and both[1] is not None else None

    try:
        async with running(consumer):
            assert await eventually(reported, 15, "the lag of both partitions") == (0, 0)
        async with pool.acquire() as conn:  # nothing read again: its own dedup record is empty
            assert await conn.fetchval("SELECT count(*) FROM kpi_applied_events") == 0
            assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0
    finally:
        await pool.close()
