"""analytics' one consumer against the real broker and PostgreSQL: the KPI fold rides on the
service's consumer (its group, its dedup record, its lag gauge), and the retired KPI group's
offsets are taken over at start without folding an event twice or losing one."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from analytics.kpi_upgrade import legacy_group, retire_kpi_group
from analytics.settings import AnalyticsSettings
from analytics.stream import KpiGate, kpi_subscribers
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.consumer import IdempotentConsumer, Waiters
from eventkit.envelope import Envelope, new_event, to_kafka
from eventkit.eventstore import EventStore
from eventkit.partition_ends import PartitionEnds
from prometheus_client import REGISTRY
from servicekit.app import runtime_consumer
from servicekit.runtime import Runtime, ServiceSpec

from contracts.events import PREFERENCES_CHANGED
from contracts.topics import INTAKE
from tests.conftest import eventually, fresh_database, make_topic, produce_batch, unique_topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "analytics" / "migrations"
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


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


def settings_for(bootstrap: str) -> AnalyticsSettings:
    settings = AnalyticsSettings.for_service("analytics")
    settings.service_name = f"t-{uuid.uuid4().hex[:8]}"
    settings.kafka_consumer_group = f"crm-{settings.service_name}"
    settings.kafka_bootstrap_servers = bootstrap
    return settings


def runtime(settings: AnalyticsSettings, pool: asyncpg.Pool, producer: AIOKafkaProducer | None) -> Runtime[Any, None]:
    rt: Runtime[Any, None] = Runtime(
        settings=settings, spec=ServiceSpec(name="analytics"), events=EventStore("analytics"), context=None
    )
    rt.pool, rt.producer = pool, producer
    return rt


def prefs(customer_id: str) -> Envelope:
    data = {"customer_id": customer_id, "preferences": {"region": "DE", "vip": False}, "changed": []}
    return new_event(PREFERENCES_CHANGED, customer_id, data, "test", TP, time=datetime.now(UTC))


async def folded(conn: asyncpg.Connection) -> set[str]:
    """The customers the KPI fold has a profile of."""
    return {r["customer_id"] for r in await conn.fetch("SELECT customer_id FROM analytics_customers")}


async def test_a_caught_up_consumer_reports_lag_0_on_every_partition_it_reads(
    postgres: EmbeddedPostgres, bootstrap: str, producer: Any
) -> None:
    # The service's consumer with the KPI fold as its subscriber, restarted with nothing new to
    # read: partition 0 was read to its end before, partition 1 never had anything. Both read 0.
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=2)
    await produce_batch(producer, topic, 0, 5)
    settings = settings_for(bootstrap)
    await commit(bootstrap, settings.kafka_consumer_group, {TopicPartition(topic, 0): 5})

    dsn = await fresh_database(postgres, [MIGRATIONS])
    pool = await db.create_pool(dsn, 3)
    rt = runtime(settings, pool, producer)
    consumer = runtime_consumer(
        rt,
        service=settings.service_name,
        group_id=settings.kafka_consumer_group,
        topics=[topic],
        subscribers=[KpiGate(kpi_subscribers(rt.events, settings))],
        waiters=Waiters(),
    )

    def lag(partition: int) -> float | None:
        labels = {"service": settings.service_name, "topic": topic, "partition": str(partition)}
        return REGISTRY.get_sample_value("crm_consumer_lag", labels)

    async def reported() -> tuple[float, float] | None:
        both = (lag(0), lag(1))
        return (both[0], both[1]) if both[0] is not None and both[1] is not None else None

    try:
        async with running(consumer):
            assert await eventually(reported, 15, "the lag of both partitions") == (0, 0)
        async with pool.acquire() as conn:  # nothing read again
            assert await conn.fetchval("SELECT count(*) FROM applied_events") == 0
            assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0
    finally:
        await pool.close()


@pytest.fixture
async def intake_topic(bootstrap: str) -> str:
    with contextlib.suppress(Exception):  # there already
        await make_topic(bootstrap, INTAKE, partitions=6)
    return INTAKE


async def test_retiring_the_kpi_group_folds_what_it_missed_and_skips_what_it_had_folded(
    postgres: EmbeddedPostgres, bootstrap: str, producer: AIOKafkaProducer, intake_topic: str
) -> None:
    settings = settings_for(bootstrap)
    ends = PartitionEnds(bootstrap, client_options={})
    try:
        partitions = await ends.partitions([intake_topic])
        before = await ends.read(partitions, timeout_s=15)
    finally:
        await ends.stop()
    # Everything already on the topic was applied by both groups; five new events on partition 0.
    for group in (settings.kafka_consumer_group, legacy_group(settings)):
        await commit(bootstrap, group, before)
    events = [prefs(f"cust-{uuid.uuid4().hex[:8]}") for _ in range(5)]
    offsets = []
    for e in events[:4]:
        key, value, headers = to_kafka(e)
        sent = await producer.send_and_wait(intake_topic, value, key=key, headers=headers, partition=0)
        offsets.append(sent.offset)
    p0 = TopicPartition(intake_topic, 0)
    # The timeline consumer committed past e0 and e1 and applied e2 without committing yet; the
    # KPI group committed past e0 and had folded e3 ahead of the timeline (not committed yet).
    await commit(bootstrap, settings.kafka_consumer_group, {p0: offsets[2]})
    await commit(bootstrap, legacy_group(settings), {p0: offsets[1]})
    dsn = await fresh_database(postgres, [MIGRATIONS])
    pool = await db.create_pool(dsn, 3)
    try:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO applied_events (event_id) SELECT unnest($1::uuid[])",
                               [events[0].id, events[1].id, events[2].id])  # fmt: skip
            await conn.execute("INSERT INTO kpi_applied_events (event_id) SELECT unnest($1::uuid[])",
                               [events[0].id, events[3].id])  # fmt: skip
        rt = runtime(settings, pool, producer)
        await retire_kpi_group(rt, topics=[intake_topic])
        async with pool.acquire() as conn:
            # e1 and e2 folded now (e0 and e3 were, by the old group: not here, as the test faked it)
            assert await folded(conn) == {events[1].subject, events[2].subject}
            skip = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM kpi_pending_skip")}
            assert skip == {events[3].id}
            assert tuple(await conn.fetchrow("SELECT caught_up, skipped FROM kpi_group_retired")) == (2, 1)
            assert await conn.fetchval("SELECT count(*) FROM kpi_applied_events") == 0

        # The one consumer reads e3 again: its fold is skipped, once; e4 is folded.
        gate = KpiGate(kpi_subscribers(rt.events, settings))
        async with pool.acquire() as conn:
            async with conn.transaction():
                await gate.apply(conn, [events[3], events[4]])
            assert await folded(conn) == {e.subject for e in (events[1], events[2], events[4])}
            assert await conn.fetchval("SELECT count(*) FROM kpi_pending_skip") == 0

        # Done once: a restart does not look again (the group's offsets would say e1 is missing).
        await retire_kpi_group(rt, topics=[intake_topic])
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM kpi_group_retired") == 1
            assert await folded(conn) == {e.subject for e in (events[1], events[2], events[4])}
    finally:
        await pool.close()


async def test_a_fresh_database_retires_the_kpi_group_without_reading(postgres: EmbeddedPostgres) -> None:
    settings = AnalyticsSettings.for_service("analytics")
    settings.kafka_bootstrap_servers = "127.0.0.1:1"  # nothing listens: nothing is to be read
    dsn = await fresh_database(postgres, [MIGRATIONS])
    pool = await db.create_pool(dsn, 2)
    try:
        rt = runtime(settings, pool, None)
        await retire_kpi_group(rt)
        async with pool.acquire() as conn:
            assert tuple(await conn.fetchrow("SELECT caught_up, skipped FROM kpi_group_retired")) == (0, 0)
    finally:
        await pool.close()
