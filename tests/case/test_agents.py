"""Automatic assignment against a real PostgreSQL: several instances' rounds at once over hundreds
of cases assign each case once and fill no agent past capacity; offline hands cases back."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from case import agent_handlers, agent_store, domain, handlers, rules, sla
from case.agents import Waiting
from case.calendar import BusinessCalendar
from case.context import CaseContext
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.envelope import new_event
from eventkit.eventstore import EventStore
from servicekit.keyring import KeyRing, MemoryKeySource
from servicekit.timeline import TimelineProjection

from contracts import case as c
from tests.conftest import fresh_database

MIGRATIONS = [Path(domain.__file__).parent / "migrations"]
TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def context() -> CaseContext:
    return CaseContext(
        source="/crm/case",
        events=EventStore("case-test"),
        policy=sla.DEFAULT_POLICY,
        calendar=BusinessCalendar.always_open(),
        rules=rules.CaseRules(),
        keys=KeyRing(MemoryKeySource()),
    )


@pytest.fixture
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fresh_database(postgres, MIGRATIONS)


@pytest.fixture
async def case_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(dsn, 10)
    try:
        yield pool
    finally:
        await pool.close()


async def open_cases(pool: asyncpg.Pool, ctx: CaseContext, team: str, n: int) -> list[str]:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    data = {"customer_id": customer, "channel": "web", "direction": "inbound", "kind": "message",
            "occurred_at": "2026-01-01T00:00:00Z", "content": "hi", "metadata": {}}  # fmt: skip
    async with pool.acquire() as conn:  # the customer is known (on case's timeline)
        await TimelineProjection().apply(conn, [new_event("crm.interaction.recorded.v1", customer, data, "/t", TP)])
    ids = [f"{team}-{i:04d}" for i in range(n)]
    for case_id in ids:
        await handlers.open_case(pool, ctx, customer, "repair", "normal", team, None, case_id)
    return ids


async def agents_online(pool: asyncpg.Pool, ctx: CaseContext, team: str, n: int, capacity: int) -> list[str]:
    ids = [f"{team}-agent-{i}" for i in range(n)]
    for agent_id in ids:
        await agent_handlers.put_agent(pool, ctx, agent_id, agent_id, [team], capacity, ["repair"])
        await agent_handlers.set_status(pool, ctx, agent_id, "online")
    return ids


async def assigned_events(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE type = $1 GROUP BY stream_id", c.CASE_ASSIGNED
    )
    return {r["stream_id"]: r["n"] for r in rows}


async def test_two_instances_rounds_at_once_assign_hundreds_of_cases_each_once(
    dsn: str, case_pool: asyncpg.Pool
) -> None:
    ctx = context()
    teams = ["t0", "t1", "t2"]
    for team in teams:
        await open_cases(case_pool, ctx, team, 100)
        await agents_online(case_pool, ctx, team, 6, 15)  # 90 places for 100 cases
    await agent_handlers.put_agent(case_pool, ctx, "all-teams", "Sam", teams, 15, ["repair"])  # rounds share Sam
    await agent_handlers.set_status(case_pool, ctx, "all-teams", "online")
    other = await db.create_pool(dsn, 10)  # a second instance: its own connections
    try:
        for _ in range(5):  # rounds until nothing is left to do, two instances each time
            done = await asyncio.gather(*(agent_handlers.assign_round(p, ctx) for p in (case_pool, other, case_pool)))
            if not any(done):
                break
    finally:
        await other.close()
    counts = await assigned_events(case_pool)
    assert len(counts) >= 270 and set(counts.values()) == {1}
    async with case_pool.acquire() as conn:
        agents = await agent_store.agents(conn, None, None)
        waiting = {r["team"] for r in await conn.fetch("SELECT team FROM cases WHERE owner IS NULL")}
    assert all(a["load"] <= a["capacity"] for a in agents)
    assert sum(a["load"] for a in agents) == len(counts)
    for team in waiting:  # a case waits only while every agent of its team is full
        assert all(a["load"] == a["capacity"] for a in agents if team in a["teams"]), team


async def test_a_round_deciding_on_a_stale_read_assigns_nothing_twice(
    case_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The team lock only saves work: a round that read the queue before another round's (or a
    crashed round's retry's) assignments committed still assigns no case twice, because each
    assignment is appended under the case's row lock at the version it was decided on."""
    ctx = context()
    cases = await open_cases(case_pool, ctx, "stale", 60)
    await agents_online(case_pool, ctx, "stale", 3, 10)
    stale = [Waiting(case_id, "repair") for case_id in cases]  # the queue as first read: all waiting

    async def stale_read(conn: asyncpg.Connection, team: str, limit: int) -> list[Waiting]:
        return stale

    assert await agent_handlers.assign_round(case_pool, ctx) == 30
    await agent_handlers.put_agent(case_pool, ctx, "stale-agent-0", "Zoe", ["stale"], 40, ["repair"])
    monkeypatch.setattr(agent_store, "waiting_cases", stale_read)
    # The stale plan gives the first 30 (owned already) to Zoe: each is refused, none reassigned.
    assert await agent_handlers.assign_round(case_pool, ctx) == 0
    counts = await assigned_events(case_pool)
    assert len(counts) == 30 and set(counts.values()) == {1}
    monkeypatch.undo()
    assert await agent_handlers.assign_round(case_pool, ctx) == 30  # a fresh read: the 30 still waiting
    counts = await assigned_events(case_pool)
    assert len(counts) == 60 and set(counts.values()) == {1}


async def test_offline_hands_back_and_the_next_round_gives_the_cases_to_the_others(case_pool: asyncpg.Pool) -> None:
    ctx = context()
    cases = await open_cases(case_pool, ctx, "back", 4)
    ana, ben = await agents_online(case_pool, ctx, "back", 2, 2)
    assert await agent_handlers.assign_round(case_pool, ctx) == 4
    await agent_handlers.set_status(case_pool, ctx, ben, "away")
    outcome = await agent_handlers.set_status(case_pool, ctx, ana, "offline")
    assert len(outcome.handed_back) == 2
    assert await agent_handlers.assign_round(case_pool, ctx) == 0  # ben is away, ana offline: they wait
    await agent_handlers.set_status(case_pool, ctx, ben, "online")  # back, but full
    await agent_handlers.put_agent(case_pool, ctx, ben, "Ben", ["back"], 4, ["repair"])
    assert await agent_handlers.assign_round(case_pool, ctx) == 2
    owners = {r["owner"] for r in await case_pool.fetch("SELECT owner FROM cases WHERE case_id = ANY($1)", cases)}
    assert owners == {ben}
    state, _ = await handlers.get_case(case_pool, ctx, outcome.handed_back[0])
    assert [h["owner"] for h in state.handovers] == [ana, ben]
