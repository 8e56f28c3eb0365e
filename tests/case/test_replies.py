"""A customer's answers reach their case, against a real PostgreSQL: a message opens a pending case
again, a merged customer's answer finds the survivor's case, a resolved case reopens within the
window, and the timer loop closes resolved cases nobody answered, once, whoever runs it."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from case import domain, handlers, store, timers
from case.context import CaseContext
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.envelope import Envelope, new_event

from contracts import case as c
from tests.case.test_handlers import (
    MIGRATIONS,
    TP,
    Consumer,
    case_pool,
    cases_of,
    context,
    events_of,
    interaction,
    new_case,
)
from tests.clock import Clock
from tests.conftest import fresh_database

__all__ = ["case_pool"]  # the fixture, shared with test_handlers


@pytest.fixture
async def two_instances(postgres: EmbeddedPostgres) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Two pools on one database: what two case instances share."""
    dsn = await fresh_database(postgres, MIGRATIONS)
    first, second = await db.create_pool(dsn, 4), await db.create_pool(dsn, 4)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def status_changes(pool: asyncpg.Pool, ctx: CaseContext, case_id: str) -> list[tuple[str, str, str | None]]:
    _, history = await handlers.get_case(pool, ctx, case_id)
    return [
        (data["from_status"], data["to_status"], data["reason"])
        for stored, data in history
        if stored.event.type == c.CASE_STATUS_CHANGED
    ]


def merged_into(survivor: str, merged: str) -> Envelope:
    linked_by = {"kind": "email", "value": "a@b.c"}
    data = {"survivor_id": survivor, "merged_id": merged, "linked_by": linked_by, "reason": "x"}
    return new_event("crm.customer.merged.v1", survivor, data, "/crm/intake", TP)


def answer(customer: str, kind: str = "message", at: datetime | None = None, **metadata: Any) -> Envelope:
    e = interaction(customer, kind, metadata=metadata)
    return e if at is None else replace(e, time=at)


async def test_a_message_on_a_pending_case_opens_it_and_its_sla_timers_run_again(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    clock = Clock(datetime.now(UTC))
    ctx, consumer, customer, case_id = await new_case(case_pool, producer, "request", clock)
    await handlers.change_status(case_pool, ctx, case_id, 1, "open", None)
    await handlers.change_status(case_pool, ctx, case_id, 2, "pending", "waiting for the customer")
    async with case_pool.acquire() as conn:
        assert await store.timers(conn, case_id) == []  # paused
    clock.advance(hours=2)
    message = answer(customer)
    await consumer.deliver(message)
    state, _ = await handlers.get_case(case_pool, ctx, case_id)
    assert state.status == "open" and message.id in state.interactions
    assert (await status_changes(case_pool, ctx, case_id))[-1] == ("pending", "open", "customer_replied")
    async with case_pool.acquire() as conn:
        assert {r["target"] for r in await store.timers(conn, case_id)} == {"resolution"}  # the clock runs


async def test_a_merged_customers_answer_reaches_the_case_opened_under_the_other_id(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ctx = context()
    consumer = Consumer(case_pool, producer, ctx)
    survivor, merged = f"cust-{uuid.uuid4().hex[:8]}", f"cust-{uuid.uuid4().hex[:8]}"
    await consumer.deliver(interaction(survivor, "message"), interaction(merged, "complaint"))
    [row] = await cases_of(case_pool, merged)
    merge = merged_into(survivor, merged)
    message = answer(survivor, kind="call")
    await consumer.deliver(merge, message)
    assert await events_of(case_pool, row["case_id"]) == [c.CASE_OPENED, c.CASE_INTERACTION_LINKED]
    assert await cases_of(case_pool, survivor) == []


async def test_a_resolved_case_reopens_on_an_answer_within_the_window_and_a_later_one_opens_a_new_case(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ctx, consumer, customer, case_id = await new_case(case_pool, producer)
    await handlers.change_status(case_pool, ctx, case_id, 1, "open", None)
    await handlers.change_status(case_pool, ctx, case_id, 2, "resolved", "replaced the router")  # + follow-up
    await consumer.deliver(answer(customer, at=datetime.now(UTC) + timedelta(days=6)))
    assert (await status_changes(case_pool, ctx, case_id))[-1] == ("resolved", "open", "customer_replied")
    state, _ = await handlers.get_case(case_pool, ctx, case_id)
    assert state.status == "open" and state.resolved_at is None

    await handlers.change_status(case_pool, ctx, case_id, state.version, "resolved", None)
    late = datetime.now(UTC) + timedelta(days=8)
    await consumer.deliver(answer(customer, at=late))  # a message: opens nothing, joins nothing
    await consumer.deliver(answer(customer, kind="complaint", at=late))  # the rules open a new case
    rows = await cases_of(case_pool, customer)
    assert [(r["case_id"] == case_id, r["status"]) for r in rows] == [(True, "resolved"), (False, "new")]


async def test_an_answer_naming_its_case_reaches_that_one_of_several(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ctx = context()
    consumer = Consumer(case_pool, producer, ctx)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    await consumer.deliver(interaction(customer, "complaint"))
    await consumer.deliver(interaction(customer, "request"))
    first, second = (r["case_id"] for r in await cases_of(case_pool, customer))
    await consumer.deliver(answer(customer))  # unnamed: the most recently active case
    await consumer.deliver(answer(customer, case_id=first))
    assert await events_of(case_pool, second) == [c.CASE_OPENED, c.CASE_INTERACTION_LINKED]
    assert await events_of(case_pool, first) == [c.CASE_OPENED, c.CASE_INTERACTION_LINKED]


async def test_the_timer_loop_closes_resolved_cases_once_even_with_two_instances(
    two_instances: tuple[asyncpg.Pool, asyncpg.Pool], producer: AIOKafkaProducer
) -> None:
    pool, other = two_instances
    clock = Clock(datetime.now(UTC))
    ctx = context(clock)
    consumer = Consumer(pool, producer, ctx)
    case_ids = []
    for n in range(5):
        customer = f"cust-{n}-{uuid.uuid4().hex[:6]}"
        await consumer.deliver(interaction(customer, "complaint"))
        [row] = await cases_of(pool, customer)
        await handlers.change_status(pool, ctx, row["case_id"], 1, "open", None)
        await handlers.change_status(pool, ctx, row["case_id"], 2, "resolved", None)
        case_ids.append(row["case_id"])
    clock.advance(days=6)
    assert await timers.fire_due(pool, ctx) == 0
    clock.advance(days=1, seconds=1)
    # Both instances' loops at once, then once more each: every case closes exactly once.
    counts = list(await asyncio.gather(timers.fire_due(pool, ctx), timers.fire_due(other, ctx)))
    counts += [await timers.fire_due(other, ctx), await timers.fire_due(pool, ctx)]
    assert sum(counts) == 5
    for case_id in case_ids:
        changes = await status_changes(pool, ctx, case_id)
        assert changes[-1] == ("resolved", "closed", domain.AUTO_CLOSED) and len(changes) == 3
        async with pool.acquire() as conn:
            assert await store.timers(conn, case_id) == []  # nothing left to wake up for


async def test_cases_resolved_before_the_upgrade_get_their_auto_close(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    clock = Clock(datetime.now(UTC))
    ctx, _consumer, _customer, case_id = await new_case(case_pool, producer, "complaint", clock)
    await handlers.change_status(case_pool, ctx, case_id, 1, "open", None)
    await handlers.change_status(case_pool, ctx, case_id, 2, "resolved", None)
    resolved_at = clock()
    migration = (MIGRATIONS[0] / "003_replies.sql").read_text()
    async with case_pool.acquire() as conn:
        await conn.execute("DELETE FROM case_timers WHERE case_id = $1", case_id)  # as before 003
        await conn.execute(migration.split(";", 1)[1])  # 003's backfill (its index exists already)
        assert [(r["level"], r["due_at"]) for r in await store.timers(conn, case_id)] == [("close", resolved_at)]
    clock.advance(days=1)
    assert await timers.fire_due(case_pool, ctx) == 0  # not due yet: the row is re-derived
    async with case_pool.acquire() as conn:
        due = [r["due_at"] for r in await store.timers(conn, case_id)]
        assert due == [resolved_at + timedelta(days=7)]
    clock.advance(days=6, seconds=1)
    assert await timers.fire_due(case_pool, ctx) == 1
    assert (await status_changes(case_pool, ctx, case_id))[-1] == ("resolved", "closed", "auto_closed")


def outbound(customer: str, case_id: str) -> Envelope:
    return interaction(customer, "message", direction="outbound", metadata={"case_id": case_id})


async def test_the_next_reply_target_breaches_once_and_the_agents_answer_naming_the_case_ends_it(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    clock = Clock(datetime.now(UTC))
    base = context(clock)
    ctx = replace(base, policy=replace(base.policy, next_reply={"normal": 600}))
    consumer = Consumer(case_pool, producer, ctx)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    await consumer.deliver(interaction(customer, "request"))
    [row] = await cases_of(case_pool, customer)
    case_id = row["case_id"]
    await consumer.deliver(outbound(customer, case_id))  # the first response
    await consumer.deliver(outbound(f"cust-{uuid.uuid4().hex[:8]}", case_id))  # another customer's: ignored
    first = answer(customer)
    await consumer.deliver(first)
    clock.advance(minutes=11)
    assert await timers.fire_due(case_pool, ctx) == 2  # warning and breach of the next reply
    assert await timers.fire_due(case_pool, ctx) == 0
    clock.advance(minutes=1)
    await consumer.deliver(outbound(customer, case_id))  # the agent answers: the round ends
    second = answer(customer)
    await consumer.deliver(second)
    await consumer.deliver(outbound(customer, case_id))  # answered in time: no alerts for it
    clock.advance(hours=1)
    assert await timers.fire_due(case_pool, ctx) == 0
    rows = await case_pool.fetch(
        "SELECT type, data FROM events WHERE stream_id = $1 ORDER BY version", store.stream_of(case_id)
    )
    assert [(r["type"], r["data"].get("direction") or r["data"].get("reply_to")) for r in rows] == [
        (c.CASE_OPENED, None),
        (c.CASE_INTERACTION_LINKED, "outbound"),
        (c.CASE_INTERACTION_LINKED, "inbound"),
        (c.CASE_REPLY_SLA_WARNING, first.id),
        (c.CASE_REPLY_SLA_BREACHED, first.id),
        (c.CASE_ESCALATED, None),
        (c.CASE_INTERACTION_LINKED, "outbound"),
        (c.CASE_INTERACTION_LINKED, "inbound"),
        (c.CASE_INTERACTION_LINKED, "outbound"),
    ]


async def test_answers_of_customers_without_a_case_cost_the_batch_one_query_and_touch_nothing(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, consumer, customer, case_id = await new_case(case_pool, producer)
    looked_up: list[str] = []
    customer_ids = store.customer_ids

    async def counted(conn: asyncpg.Connection, customer_id: str) -> list[str]:
        looked_up.append(customer_id)
        return await customer_ids(conn, customer_id)

    monkeypatch.setattr(store, "customer_ids", counted)
    strangers = [f"cust-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    await consumer.deliver(*(answer(s) for s in strangers), answer(customer))
    assert looked_up == [customer]  # only the customer with a case went the long way
    assert await events_of(case_pool, case_id) == [c.CASE_OPENED, c.CASE_INTERACTION_LINKED]
    for s in strangers:
        assert await cases_of(case_pool, s) == []


async def test_an_answer_after_a_complaint_in_the_same_batch_joins_the_case_it_opened(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    consumer = Consumer(case_pool, producer, context())
    survivor, merged, fresh = (f"cust-{uuid.uuid4().hex[:8]}" for _ in range(3))
    merge = merged_into(survivor, merged)
    await consumer.deliver(merge)
    # Neither customer had a case when the batch began: the complaints open one, and the answers
    # after them (one under the other id of the same customer) must find it.
    await consumer.deliver(
        interaction(merged, "complaint"), answer(survivor), interaction(fresh, "complaint"), answer(fresh)
    )
    [opened] = await cases_of(case_pool, merged)
    assert await events_of(case_pool, opened["case_id"]) == [c.CASE_OPENED, c.CASE_INTERACTION_LINKED]
    [other] = await cases_of(case_pool, fresh)
    assert await events_of(case_pool, other["case_id"]) == [c.CASE_OPENED, c.CASE_INTERACTION_LINKED]
