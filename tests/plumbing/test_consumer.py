"""Idempotent consumer against PostgreSQL and the broker: a redelivered event changes nothing,
poison messages are dead-lettered and the rest goes on."""

import asyncio
import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from eventkit import deadletter
from eventkit.acceptance import Acceptance
from eventkit.consumer import IdempotentConsumer, Waiters
from eventkit.envelope import Envelope, new_event, to_kafka
from prometheus_client import REGISTRY
from servicekit import timeline
from servicekit.settings import kafka_options
from servicekit.timeline import TimelineProjection, digest

from contracts.topics import DEADLETTER
from tests.conftest import SCHEMAS, make_topic, topic_and_dead_letters, unique_topic

TP = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"


def interaction(customer: str, n: int) -> Envelope:
    data = {
        "customer_id": customer,
        "channel": "chat",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": "2026-01-01T00:00:00Z",
        "content": f"message {n}",
    }
    return new_event("crm.interaction.recorded.v1", customer, data, "/crm/test", TP)


async def send(producer: AIOKafkaProducer, topic: str, events: Sequence[Envelope]) -> None:
    for e in events:
        key, value, headers = to_kafka(e)
        await producer.send_and_wait(topic, value, key=key, headers=headers)


async def fetch(bootstrap: str, topic: str, n: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list = []
    try:
        for _ in range(50):
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(recs)
            if len(records) >= n:
                break
    finally:
        await consumer.stop()
    return records


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_consumer(pool, producer, bootstrap, topic, service, subscribers=None, **options: Any) -> IdempotentConsumer:
    """A consumer of the contracts' event types from any topic, dead-lettering to DEADLETTER."""
    options = {"acceptance": Acceptance(SCHEMAS), "deadletter_topic": DEADLETTER, **options}
    return IdempotentConsumer(
        service=service,
        bootstrap_servers=bootstrap,
        group_id=f"g-{topic}",
        topics=[topic],
        pool=pool,
        producer=producer,
        subscribers=subscribers if subscribers is not None else [TimelineProjection()],
        waiters=Waiters(),
        client_options=kafka_options(),
        **options,
    )


async def run_until_on_timeline(consumer: IdempotentConsumer, pool: asyncpg.Pool, customer: str, count: int) -> int:
    """Run the consumer until the customer's timeline holds `count` events (10 s at most), then
    stop it; how many it holds."""
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(100):
            async with pool.acquire() as conn:
                held = (await digest(conn, customer))[0]
            if held == count:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
    return held


class CountsEvents:
    """A projection that is not idempotent by itself: one row per apply, no key, no ON CONFLICT.
    Only the consumer's dedup keeps it at one row per event."""

    async def create(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE seen_events (event_id uuid NOT NULL)")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        await conn.executemany("INSERT INTO seen_events (event_id) VALUES ($1)", [(e.id,) for e in events])


async def test_redelivered_batch_changes_nothing(pool: asyncpg.Pool, bootstrap: str, producer) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    events = [interaction("cust-a", n) for n in range(10)]
    await send(producer, topic, events)
    records = await fetch(bootstrap, topic, 10)
    counting = CountsEvents()
    await counting.create(pool)
    consumer = make_consumer(pool, producer, bootstrap, topic, "t-redeliver", [TimelineProjection(), counting])

    await consumer.handle(records)
    async with pool.acquire() as conn:
        first = await digest(conn, "cust-a")
    await consumer.handle(records)  # as after a crash before the offset commit
    await consumer.handle(records[3:6] + records[3:6])  # a partial replay, twice within one batch
    async with pool.acquire() as conn:
        second = await digest(conn, "cust-a")
        applied = await conn.fetchval("SELECT count(*) FROM applied_events")
        seen = {
            str(r["event_id"]): r["n"]
            for r in await conn.fetch("SELECT event_id, count(*) AS n FROM seen_events GROUP BY event_id")
        }

    assert seen == {e.id: 1 for e in events}  # each event applied exactly once, redeliveries or not
    assert first[0] == 10
    assert second == first
    assert applied == 10
    assert metric("crm_events_applied_total", service="t-redeliver", type="crm.interaction.recorded.v1") == 10
    assert metric("crm_events_duplicate_total", service="t-redeliver", topic=topic) == 16


async def test_an_event_from_a_topic_not_its_domains_is_dead_lettered(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    # A service whose broker user may write only its own topic publishes another domain's type
    # there (crm.customer.erased.v1 is intake's): refused, as the ACL intends, and the rest applied.
    topic, intakes = unique_topic(), unique_topic()
    await make_topic(bootstrap, topic)
    await make_topic(bootstrap, DEADLETTER)
    forged = new_event("crm.customer.erased.v1", "cust-w", {"customer_id": "cust-w", "erased_ids": ["cust-w"]},
                       "/crm/analytics", TP)  # fmt: skip
    await send(producer, topic, [interaction("cust-w", 0), forged, interaction("cust-w", 1)])
    homes = {"crm.interaction.recorded.v1": topic, "crm.customer.erased.v1": intakes}
    consumer = make_consumer(
        pool, producer, bootstrap, topic, "t-home", acceptance=Acceptance(SCHEMAS, home_topics=homes)
    )
    assert await run_until_on_timeline(consumer, pool, "cust-w", 2) == 2
    async with pool.acquire() as conn:
        parked = await conn.fetch("SELECT reason, event_id FROM dead_letters")
    assert [(r["reason"], r["event_id"]) for r in parked] == [("wrong_topic", forged.id)]


async def test_poison_messages_are_dead_lettered_and_the_rest_applied(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic = await topic_and_dead_letters(bootstrap)
    good = [interaction("cust-b", n) for n in range(3)]
    unknown = new_event("crm.nobody.knows.v9", "cust-b", {"x": 1}, "/crm/test", TP)
    invalid = new_event("crm.interaction.recorded.v1", "cust-b", {"channel": "fax"}, "/crm/test", TP)
    await send(producer, topic, [good[0], unknown, good[1], invalid])
    await producer.send_and_wait(topic, b"\x00not json", key=b"cust-b", headers=[("ce_specversion", b"1.0")])
    await producer.send_and_wait(topic, b"{}", key=b"cust-b")  # no CloudEvents headers at all
    await send(producer, topic, [good[2]])

    consumer = make_consumer(pool, producer, bootstrap, topic, "t-poison")
    await run_until_on_timeline(consumer, pool, "cust-b", 3)

    async with pool.acquire() as conn:
        reasons = sorted(r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters"))
        count, _ = await digest(conn, "cust-b")
    assert count == 3
    assert reasons == ["invalid_data", "missing_attribute", "not_cloudevent", "unknown_type"]
    assert metric("crm_events_deadlettered_total", service="t-poison", topic=topic, reason="unknown_type") == 1

    parked = [
        r for r in await fetch(bootstrap, DEADLETTER, 100) if (dict(r.headers).get("dlq_topic") == topic.encode())
    ]
    assert sorted(dict(r.headers)["dlq_reason"].decode() for r in parked) == reasons
    assert any(r.value == b"\x00not json" for r in parked)  # the original bytes, for inspection and re-drive


async def test_a_nul_in_a_header_is_still_dead_lettered_and_counted(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    """PostgreSQL refuses NUL in text and jsonb: recording such a letter must not fail the batch."""
    topic = await topic_and_dead_letters(bootstrap)
    good = [interaction("cust-n", n) for n in range(2)]
    nul = interaction("cust-n", 99)
    key, value, headers = to_kafka(nul)
    headers = [(k, b"crm.interaction.recorded.v1\x00" if k == "ce_type" else v) for k, v in headers]
    headers.append(("x-note", b"a\x00b \xff"))  # not a ce_ header: kept as it came, NUL and bad UTF-8 too
    await send(producer, topic, [good[0]])
    await producer.send_and_wait(topic, value, key=key, headers=headers)
    await send(producer, topic, [good[1]])

    consumer = make_consumer(pool, producer, bootstrap, topic, "t-nul")
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(100):
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT count(*) FROM timeline") == 2 or task.done():
                    break
            await asyncio.sleep(0.1)
        assert not task.done(), task.exception()  # the consumer goes on
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()

    async with pool.acquire() as conn:
        count, _ = await digest(conn, "cust-n")
        parked = await conn.fetch("SELECT reason, detail, message_headers, message_value FROM dead_letters")
    assert count == 2
    assert [r["reason"] for r in parked] == ["unknown_type"]
    assert "\\x00" in parked[0]["detail"]  # the NUL, written out
    stored_headers = dict(parked[0]["message_headers"])
    assert stored_headers["ce_type"] == "crm.interaction.recorded.v1\\x00"
    assert stored_headers["x-note"].startswith("a\\x00b")
    assert parked[0]["message_value"] == value
    assert metric("crm_events_deadlettered_total", service="t-nul", topic=topic, reason="unknown_type") == 1
    on_topic = [
        r for r in await fetch(bootstrap, DEADLETTER, 100) if dict(r.headers).get("dlq_topic") == topic.encode()
    ]
    assert [dict(r.headers)["ce_type"] for r in on_topic] == [b"crm.interaction.recorded.v1\x00"]  # original bytes


async def test_dead_letter_text_with_nul_or_a_lone_surrogate_is_stored_escaped(pool: asyncpg.Pool) -> None:
    message = SimpleNamespace(topic="t", partition=0, offset=7, key=b"k", value=b"v", headers=[("h\x00", b"\x00")])
    letter = deadletter.DeadLetter(message, "apply_failed", "bad \ud800 and \x00", "id\x00", "type\udcff")
    async with pool.acquire() as conn:
        await deadletter.record(conn, [letter])
        row = await conn.fetchrow("SELECT event_id, event_type, detail, message_headers FROM dead_letters")
    assert dict(row) == {
        "event_id": "id\\x00",
        "event_type": "type\\udcff",
        "detail": "bad \\ud800 and \\x00",
        "message_headers": [["h\\x00", "\\x00"]],
    }


class FailsOn:
    """A projection with a bug that shows on one particular event."""

    def __init__(self, bad_id: str) -> None:
        self.bad_id = bad_id

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        if any(e.id == self.bad_id for e in events):
            raise KeyError("projection bug")


async def test_projection_failure_parks_only_that_event(pool: asyncpg.Pool, bootstrap: str, producer) -> None:
    topic = await topic_and_dead_letters(bootstrap)
    events = [interaction("cust-c", n) for n in range(5)]
    await send(producer, topic, events)
    records = await fetch(bootstrap, topic, 5)
    consumer = make_consumer(pool, producer, bootstrap, topic, "t-apply", [TimelineProjection(), FailsOn(events[2].id)])
    await consumer.handle(records)
    async with pool.acquire() as conn:
        count, _ = await digest(conn, "cust-c")
        parked = await conn.fetch("SELECT event_id, reason FROM dead_letters")
        applied = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM applied_events")}
    assert count == 4
    assert [(r["event_id"], r["reason"]) for r in parked] == [(events[2].id, "apply_failed")]
    assert events[2].id not in applied  # a fixed projection can still apply it on re-drive


def lag_partitions(service: str, topic: str) -> set[int]:
    """The partitions for which this instance reports a lag gauge."""
    return {
        int(sample.labels["partition"])
        for family in REGISTRY.collect()
        if family.name == "crm_consumer_lag"
        for sample in family.samples
        if sample.labels.get("service") == service and sample.labels.get("topic") == topic
    }


async def test_a_rebalance_commits_what_was_applied_and_hands_the_lag_gauges_on(
    pool: asyncpg.Pool, bootstrap: str, producer
) -> None:
    """A second instance joins while events flow. The first commits what it applied before its
    partitions move (its commit interval is ten minutes, and a steady flow never lets it idle),
    so neither instance is redelivered anything; and each reports lag only for what it reads."""
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=4)

    first, second = (
        make_consumer(pool, producer, bootstrap, topic, service, session_timeout_ms=6000, commit_interval_ms=600_000)
        for service in ("t-rebalance-a", "t-rebalance-b")
    )
    sent: list[str] = []
    flowing = asyncio.Event()
    flowing.set()

    async def flow() -> None:
        while flowing.is_set():
            event = interaction(f"cust-r{len(sent) % 16}", len(sent))
            await send(producer, topic, [event])
            sent.append(event.id)
            await asyncio.sleep(0.01)

    async def applied() -> int:
        async with pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM applied_events WHERE event_id = ANY($1::uuid[])", sent)

    await first.start()
    tasks = [asyncio.create_task(flow()), asyncio.create_task(first.run())]
    try:
        for _ in range(100):  # the first has applied (and, once, committed) some of the flow
            await asyncio.sleep(0.1)
            if await applied() >= 50:
                break
        assert first.waiters.sole_reader  # alone, it reads every partition: its waiters need not poll
        await second.start()
        tasks.append(asyncio.create_task(second.run()))
        for _ in range(200):
            await asyncio.sleep(0.1)
            if second.assignment() and first.assignment() and len(first.assignment() | second.assignment()) == 4:
                break
        assert second.assignment() and not first.assignment() & second.assignment()
        assert not first.waiters.sole_reader and not second.waiters.sole_reader
        await asyncio.sleep(1.0)  # both read on for a while
        flowing.clear()
        for _ in range(100):
            if await applied() == len(sent):
                break
            await asyncio.sleep(0.1)
        assert await applied() == len(sent)
        for service in ("t-rebalance-a", "t-rebalance-b"):
            assert metric("crm_events_duplicate_total", service=service, topic=topic) == 0, service
        in_first = {tp.partition for tp in first.assignment()}
        in_second = {tp.partition for tp in second.assignment()}
        assert lag_partitions("t-rebalance-a", topic) <= in_first
        assert lag_partitions("t-rebalance-b", topic) <= in_second
    finally:
        flowing.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await first.stop()
        await second.stop()


async def test_a_waiter_polls_the_database_rarely_while_its_process_reads_everything(
    pool: asyncpg.Pool, monkeypatch
) -> None:
    """wait_until_applied asks the database every 50 ms when another instance may apply the
    event, and only once a second (here: at the start and at the deadline) when none can."""
    calls = 0
    real = timeline.is_applied

    async def counting(conn: asyncpg.Connection, event_id: uuid.UUID) -> bool:
        nonlocal calls
        calls += 1
        return await real(conn, event_id)

    monkeypatch.setattr(timeline, "is_applied", counting)
    waiters = Waiters()
    assert await timeline.wait_until_applied(pool, waiters, uuid.uuid4(), 0.5) is False
    shared = calls
    calls = 0
    waiters.sole_reader = True
    assert await timeline.wait_until_applied(pool, waiters, uuid.uuid4(), 0.5) is False
    assert calls == 2
    assert shared >= 5

    # Woken by its own consumer all the same, long before the deadline.
    event_id = uuid.uuid4()
    task = asyncio.create_task(timeline.wait_until_applied(pool, waiters, event_id, 10))
    await asyncio.sleep(0.1)
    waiters.applied([str(event_id)])
    assert await asyncio.wait_for(task, 1) is True
