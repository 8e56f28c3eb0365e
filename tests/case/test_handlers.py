"""case's handlers, rules policy and SLA timers against a real PostgreSQL (and the broker for
the consumer's producer): cases opened exactly once from interactions, commands with optimistic
concurrency, durable timers under a controllable clock."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from case import domain, handlers, rules, sla, store, timers
from case.calendar import BusinessCalendar
from case.context import CaseContext
from case.policies import CaseRulesPolicy
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.acceptance import Acceptance
from eventkit.consumer import IdempotentConsumer, Waiters
from eventkit.envelope import Envelope, new_event, to_kafka
from eventkit.eventstore import ConcurrencyError, EventStore
from servicekit.keyring import KeyRing, MemoryKeySource
from servicekit.timeline import TimelineProjection

from contracts import case as c
from contracts.topics import DEADLETTER, INTAKE
from tests.clock import Clock
from tests.conftest import SCHEMAS, fresh_database

MIGRATIONS = [Path(domain.__file__).parent / "migrations"]
TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
H = 3600.0
POLICY = sla.SlaPolicy(
    {p: sla.Targets(first_response=1 * H, resolution=4 * H) for p in c.PRIORITIES}, warning_share=0.5
)


def context(clock: Clock | None = None) -> CaseContext:
    return CaseContext(
        source="/crm/case",
        events=EventStore("case-test"),
        policy=POLICY,
        calendar=BusinessCalendar.always_open(),
        rules=rules.CaseRules(),
        keys=KeyRing(MemoryKeySource()),
        clock=clock or domain.system_clock,
    )


@pytest.fixture
async def case_pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    dsn = await fresh_database(postgres, MIGRATIONS)
    pool = await db.create_pool(dsn, 10)
    try:
        yield pool
    finally:
        await pool.close()


def interaction(customer: str, kind: str, direction: str = "inbound", **extra: Any) -> Envelope:
    data = {
        "customer_id": customer,
        "channel": "web",
        "direction": direction,
        "kind": kind,
        "occurred_at": "2026-01-01T00:00:00Z",
        "content": extra.pop("content", "my router is broken"),
        "metadata": extra.pop("metadata", {}),
    }
    return new_event("crm.interaction.recorded.v1", customer, data, "/crm/intake", TP)


def preferences(customer: str, vip: bool) -> Envelope:
    data = {"customer_id": customer, "preferences": {"vip": vip}, "changed": ["vip"]}
    return new_event("crm.customer.preferences_changed.v1", customer, data, "/crm/intake", TP)


class Consumer:
    """The real idempotent consumer with the real projections, fed records by hand."""

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, ctx: CaseContext) -> None:
        self.offset = 0
        self.consumer = IdempotentConsumer(
            service="case-test",
            bootstrap_servers="unused:9",
            group_id="unused",
            topics=[INTAKE],
            pool=pool,
            producer=producer,
            subscribers=[TimelineProjection(), CaseRulesPolicy(ctx)],
            waiters=Waiters(),
            acceptance=Acceptance(SCHEMAS),
            deadletter_topic=DEADLETTER,
            client_options={},
        )

    async def deliver(self, *events: Envelope) -> None:
        records = []
        for e in events:
            key, value, headers = to_kafka(e)
            self.offset += 1
            records.append(
                ConsumerRecord(INTAKE, 0, self.offset, 0, 0, key, value, None, len(key), len(value), headers)
            )
        await self.consumer.handle(records)


async def cases_of(pool: asyncpg.Pool, customer: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM cases WHERE customer_id = $1 ORDER BY opened_at", customer)


async def events_of(pool: asyncpg.Pool, case_id: str) -> list[str]:
    rows = await pool.fetch("SELECT type FROM events WHERE stream_id = $1 ORDER BY version", store.stream_of(case_id))
    return [r["type"] for r in rows]


# --- rules -----------------------------------------------------------------------------------


async def new_case(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer, kind: str = "complaint", clock: Clock | None = None
) -> tuple[CaseContext, Consumer, str, str]:
    """A new customer's complaint (or `kind`), delivered: the context, the consumer, the customer
    and the case it opened."""
    ctx = context(clock)
    consumer = Consumer(case_pool, producer, ctx)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    await consumer.deliver(interaction(customer, kind))
    [row] = await cases_of(case_pool, customer)
    return ctx, consumer, customer, row["case_id"]


async def test_a_complaint_opens_a_case_once_and_the_next_one_and_a_message_join_it(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    consumer = Consumer(case_pool, producer, context())
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    first, second = interaction(customer, "complaint"), interaction(customer, "complaint")
    message = interaction(customer, "message")
    await consumer.deliver(first)
    await consumer.deliver(first)  # redelivered: applied once
    await consumer.deliver(second, message)
    await consumer.deliver(message)  # redelivered: linked once
    [row] = await cases_of(case_pool, customer)
    assert row["case_id"] == rules.case_id_for(first.id)
    assert (row["type"], row["status"], row["priority"], row["version"]) == ("complaint", "new", "normal", 3)
    linked = [c.CASE_INTERACTION_LINKED] * 2
    assert await events_of(case_pool, row["case_id"]) == [c.CASE_OPENED, *linked]
    stored = await case_pool.fetch(
        "SELECT subject, topic, data FROM events WHERE stream_id = $1 ORDER BY version", f"case-{row[0]}"
    )
    assert all(r["subject"] == customer and r["topic"] == "crm.case.v1" for r in stored)
    assert stored[0]["data"]["opened_by"] == first.id
    assert [r["data"]["interaction_event_id"] for r in stored[1:]] == [second.id, message.id]


async def test_other_types_open_their_own_case_and_outbound_or_plain_messages_none(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    consumer = Consumer(case_pool, producer, context())
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    await consumer.deliver(
        interaction(customer, "complaint"),
        interaction(customer, "request"),
        interaction(customer, "request", metadata={"case_type": "repair"}),
        interaction(customer, "complaint", direction="outbound"),
        interaction(customer, "purchase"),
    )
    assert sorted(r["type"] for r in await cases_of(case_pool, customer)) == ["complaint", "repair", "request"]


async def test_a_case_resolved_longer_ago_than_the_reopen_window_takes_no_new_complaints(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ctx, consumer, customer, case_id = await new_case(case_pool, producer)
    await handlers.change_status(case_pool, ctx, case_id, 1, "open", None)
    await handlers.change_status(case_pool, ctx, case_id, 2, "resolved", "replaced the router")
    later = replace(interaction(customer, "complaint"), time=datetime.now(UTC) + timedelta(days=8))
    await consumer.deliver(later)  # a week after the resolution: the rules open a new case
    assert [r["status"] for r in await cases_of(case_pool, customer)] == ["resolved", "new"]


async def test_vip_customers_cases_are_at_least_high(case_pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
    ctx = context()
    consumer = Consumer(case_pool, producer, ctx)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    await consumer.deliver(interaction(customer, "complaint"))
    await consumer.deliver(preferences(customer, vip=True))  # the open case is raised
    await consumer.deliver(interaction(customer, "request"))  # a new one opens high
    rows = await cases_of(case_pool, customer)
    assert [(r["type"], r["priority"]) for r in rows] == [("complaint", "high"), ("request", "high")]
    assert await events_of(case_pool, rows[0]["case_id"]) == [c.CASE_OPENED, c.CASE_PRIORITY_CHANGED]
    with pytest.raises(domain.CommandRejected) as err:
        await handlers.set_priority(case_pool, ctx, rows[1]["case_id"], 1, "low", None)
    assert err.value.error == "priority_below_vip_minimum"


async def test_a_survey_answer_links_to_the_resolved_case_with_its_score(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ctx, consumer, customer, case_id = await new_case(case_pool, producer)
    await handlers.change_status(case_pool, ctx, case_id, 1, "open", None)
    resolved = await handlers.change_status(case_pool, ctx, case_id, 2, "resolved", None)
    assert len(resolved.event_ids) == 2  # status changed + follow-up requested
    answer = interaction(customer, "survey_response", content="9")
    await consumer.deliver(answer)
    state, _ = await handlers.get_case(case_pool, ctx, case_id)
    assert state.survey_score == 9 and answer.id in state.interactions and not state.awaiting_survey
    assert (await events_of(case_pool, case_id))[-2:] == [c.CASE_INTERACTION_LINKED, c.CASE_SURVEY_RECORDED]


# --- commands --------------------------------------------------------------------------------


async def open_by_hand(pool: asyncpg.Pool, ctx: CaseContext, producer: AIOKafkaProducer) -> str:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    await Consumer(pool, producer, ctx).deliver(interaction(customer, "message"))  # the customer is known
    outcome = await handlers.open_case(pool, ctx, customer, "billing", "normal", "support", "wrong invoice", "c-1")
    return outcome.state.case_id


async def test_two_agents_at_once_one_wins_the_other_gets_a_conflict(
    case_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    ctx = context()
    case_id = await open_by_hand(case_pool, ctx, producer)
    agents = ["ana", "ben", "cem", "dora", "eli", "fay"]
    results = await asyncio.gather(
        *(handlers.assign(case_pool, ctx, case_id, 1, agent, None) for agent in agents), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, handlers.Outcome)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if r is not winners[0])
    state, _ = await handlers.get_case(case_pool, ctx, case_id)
    assert state.version == 2 and state.owner == winners[0].state.owner
    assert await events_of(case_pool, case_id) == [c.CASE_OPENED, c.CASE_ASSIGNED]  # no lost update

    # With the version they now read, the next command goes through.
    after = await handlers.add_note(case_pool, ctx, case_id, 2, "ben", "called the customer")
    assert after.state.version == 3


async def test_commands_refuse_what_breaks_a_rule(case_pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
    ctx = context()
    case_id = await open_by_hand(case_pool, ctx, producer)
    with pytest.raises(domain.IllegalTransition) as illegal:
        await handlers.change_status(case_pool, ctx, case_id, 1, "resolved", None)
    assert illegal.value.extra["allowed"] == ["open"]
    with pytest.raises(ConcurrencyError):
        await handlers.change_status(case_pool, ctx, case_id, 7, "open", None)
    with pytest.raises(handlers.CaseNotFound):
        await handlers.assign(case_pool, ctx, "no-such-case", 1, "ana", None)
    with pytest.raises(domain.NotFound) as unknown:
        await handlers.link_interaction(case_pool, ctx, case_id, 1, str(uuid.uuid4()))
    assert unknown.value.error == "interaction_not_found"
    stranger = interaction(f"cust-{uuid.uuid4().hex[:8]}", "message")
    await Consumer(case_pool, producer, ctx).deliver(stranger)
    with pytest.raises(domain.Invalid) as foreign:
        await handlers.link_interaction(case_pool, ctx, case_id, 1, stranger.id)
    assert foreign.value.error == "interaction_of_another_customer"
    assert await events_of(case_pool, case_id) == [c.CASE_OPENED]  # nothing refused was stored
    with pytest.raises(handlers.CustomerNotFound):
        await handlers.open_case(case_pool, ctx, "nobody", "billing", "normal", "support", None, "c-2")


async def test_the_case_list_filters_and_pages(case_pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
    ctx = context()
    consumer = Consumer(case_pool, producer, ctx)
    customers = [f"cust-{n}-{uuid.uuid4().hex[:6]}" for n in range(5)]
    for customer in customers:
        await consumer.deliver(interaction(customer, "complaint"))
    rows = await cases_of(case_pool, customers[0])
    await handlers.assign(case_pool, ctx, rows[0]["case_id"], 1, "ana", None)
    async with case_pool.acquire() as conn:
        mine, _ = await store.list_cases(conn, {"owner": "ana"}, 10, None)
        assert [r["case_id"] for r in mine] == [rows[0]["case_id"]]
        page1, cursor = await store.list_cases(conn, {"status": ["new"], "type": ["complaint"]}, 3, None)
        assert cursor is not None and len(page1) == 3
        page2, end = await store.list_cases(conn, {"status": ["new"], "type": ["complaint"]}, 3, cursor)
        assert end is None and len(page2) == 2
        assert {r["case_id"] for r in page1}.isdisjoint(r["case_id"] for r in page2)
        none, _ = await store.list_cases(conn, {"breached": True}, 10, None)
        assert none == []


# --- durable SLA timers ------------------------------------------------------------------------


async def test_sla_timers_fire_each_alert_once_when_due(case_pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
    clock = Clock(datetime.now(UTC))
    ctx, _consumer, customer, case_id = await new_case(case_pool, producer, "complaint", clock)

    assert await timers.fire_due(case_pool, ctx) == 0
    clock.advance(minutes=31)  # first-response warning at 30 min
    assert await timers.fire_due(case_pool, ctx) == 1
    assert await timers.fire_due(case_pool, ctx) == 0
    clock.advance(hours=5)  # everything else is due now, as after a long outage
    assert await timers.fire_due(case_pool, ctx) == 3
    assert await timers.fire_due(case_pool, ctx) == 0
    clock.advance(days=3)
    assert await timers.fire_due(case_pool, ctx) == 0

    types = await events_of(case_pool, case_id)
    assert types.count(c.CASE_SLA_WARNING) == 2 and types.count(c.CASE_SLA_BREACHED) == 2
    assert types.count(c.CASE_ESCALATED) == 1
    async with case_pool.acquire() as conn:
        rows = await store.timers(conn, case_id)
        assert len(rows) == 4 and all(r["fired_at"] is not None for r in rows)
        breached, _ = await store.list_cases(conn, {"breached": True, "customer_id": customer}, 10, None)
        assert [r["queue"] for r in breached] == ["support-escalations"]


async def test_pending_pauses_the_timers(case_pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
    clock = Clock(datetime.now(UTC))
    ctx = context(clock)
    await Consumer(case_pool, producer, ctx).deliver(interaction(customer := f"c-{uuid.uuid4().hex[:8]}", "request"))
    [row] = await cases_of(case_pool, customer)
    case_id = row["case_id"]
    await handlers.change_status(case_pool, ctx, case_id, 1, "open", None)  # first response in time
    clock.advance(minutes=10)
    await handlers.change_status(case_pool, ctx, case_id, 2, "pending", "waiting for the customer")
    async with case_pool.acquire() as conn:
        assert await store.timers(conn, case_id) == []  # paused: nothing to wait for
    clock.advance(days=10)
    assert await timers.fire_due(case_pool, ctx) == 0
    await handlers.change_status(case_pool, ctx, case_id, 3, "open", "customer answered")
    async with case_pool.acquire() as conn:
        due = {r["level"]: r["due_at"] for r in await store.timers(conn, case_id)}
    # 10 minutes used before the pause: 3 h 50 min of the 4 h resolution target are left.
    assert due["breach"] == clock() + timedelta(hours=3, minutes=50)
    assert await timers.fire_due(case_pool, ctx) == 0
