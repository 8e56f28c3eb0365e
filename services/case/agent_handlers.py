"""Agents' use cases and the automatic assignment round: lock, load from events, decide, append.

The round (run by a background loop, every CASE_TIMER_POLL_INTERVAL_MS) serves one team at a time
under the team's advisory lock (try-lock: another instance serving the team now is left to it).
Each assignment is an event appended at the version the case was loaded at, under the case's row
lock (SKIP LOCKED: a case in someone's hands waits for the next round), in a savepoint: a case
that moved meanwhile (ConcurrencyError) is skipped, never assigned twice. A round that dies
midway commits nothing, so a restart assigns afresh from what the events say.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from eventkit.db import TRANSIENT_ERRORS
from eventkit.eventstore import Append, ConcurrencyError
from eventkit.telemetry import current_traceparent
from servicekit.keyring import KeyRing

from case import agent_store, agents, handlers, store
from case.agents import AgentState
from case.context import CaseContext
from case.domain import CommandRejected, Draft
from contracts.topics import CASE

log = logging.getLogger(__name__)
ROUND_LIMIT = 500  # waiting cases looked at per team and round


class AgentNotFound(Exception):
    pass


@dataclass(frozen=True)
class AgentOutcome:
    state: AgentState
    event_ids: list[str]
    handed_back: list[str]  # cases the agent going offline gave back to the queue


async def _load(conn: asyncpg.Connection, ctx: CaseContext, agent_id: str) -> AgentState:
    stored = await ctx.events.load(conn, agents.stream_of(agent_id))
    return AgentState.from_events(agent_id, ((s.event.type, s.event.data, s.event.time) for s in stored))


async def _commit(conn: asyncpg.Connection, ctx: CaseContext, state: AgentState, drafts: Sequence[Draft]) -> list[str]:
    if not drafts:
        return []
    subject = agents.subject_of(state.agent_id)
    types, datas = [d.type for d in drafts], [dict(d.data) for d in drafts]
    envelopes = handlers.stamped(ctx, subject, types, datas, current_traceparent(), ctx.clock())
    await ctx.events.append(conn, [Append(agents.stream_of(state.agent_id), state.version, envelopes, CASE)])
    for e in envelopes:
        state.apply(e.type, e.data, e.time)
    await agent_store.save_agent(conn, state)
    return [e.id for e in envelopes]


async def put_agent(
    pool: asyncpg.Pool, ctx: CaseContext, agent_id: str, name: str, teams: list[str], capacity: int, skills: list[str]
) -> AgentOutcome:
    async with pool.acquire() as conn, conn.transaction():
        await agent_store.lock_agent(conn, agent_id)
        state = await _load(conn, ctx, agent_id)
        ids = await _commit(conn, ctx, state, agents.update(state, name, teams, capacity, skills))
        return AgentOutcome(state, ids, [])


async def set_status(pool: asyncpg.Pool, ctx: CaseContext, agent_id: str, status: str) -> AgentOutcome:
    """Online, away or offline; offline also hands the agent's open cases back to the queue."""
    async with pool.acquire() as conn, conn.transaction():
        await agent_store.lock_agent(conn, agent_id)
        state = await _load(conn, ctx, agent_id)
        if not state.exists:
            raise AgentNotFound(agent_id)
        ids = await _commit(conn, ctx, state, agents.set_status(state, status))
        handed_back = []
        if status == "offline":
            for case_id in await agent_store.owned_open_cases(conn, agent_id):
                if not await store.lock_case(conn, case_id):
                    continue
                case, _ = await handlers.load(conn, ctx, case_id)
                if case.owner != agent_id:
                    continue
                drafts = agents.hand_back(case, agents.AGENT_OFFLINE)
                ids += [e.id for e in await handlers.commit(conn, ctx, case, drafts, current_traceparent())]
                handed_back.append(case_id)
        return AgentOutcome(state, ids, handed_back)


# --- the assignment round ------------------------------------------------------------------------


async def assign_round(pool: asyncpg.Pool, ctx: CaseContext) -> int:
    """Assign what can be assigned now, team by team; return how many cases were assigned."""
    async with pool.acquire() as conn:
        teams = await agent_store.teams_to_serve(conn)
        assigned = 0
        for team in teams:
            try:
                async with conn.transaction():
                    assigned += await _serve_team(conn, ctx, team)
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                # One team's trouble must not hold up the other teams' queues.
                log.exception("automatic assignment of a team failed; trying again next round")
        return assigned


async def _serve_team(conn: asyncpg.Connection, ctx: CaseContext, team: str) -> int:
    if not await agent_store.try_lock_team(conn, team):
        return 0
    candidates = await agent_store.candidates(conn, team)
    free = sum(a.free for a in candidates)
    if not free:
        return 0
    waiting = await agent_store.waiting_cases(conn, team, ROUND_LIMIT)
    now = ctx.clock()
    assigned = 0
    for case_id, agent_id in agents.plan(waiting, candidates, now):
        try:
            async with conn.transaction():  # a savepoint: one case's conflict undoes only that case
                if not await store.lock_case(conn, case_id, skip_locked=True):
                    continue
                case, _ = await handlers.load(conn, ctx, case_id)
                if case.team != team:
                    continue
                await handlers.commit(conn, ctx, case, agents.auto_assign(case, agent_id), current_traceparent())
                await agent_store.mark_assigned(conn, agent_id, now)
                assigned += 1
        except (ConcurrencyError, CommandRejected):
            continue  # the case moved on since it was read: the next round sees it as it is
    return assigned


async def run(ctx: CaseContext, pool: asyncpg.Pool, poll_interval_s: float) -> None:
    """Forever: a round, then a pause (none while rounds keep finding work)."""
    while True:
        if not await assign_round(pool, ctx):
            await asyncio.sleep(poll_interval_s)


# --- reads ---------------------------------------------------------------------------------------


async def list_agents(pool: asyncpg.Pool, team: str | None, status: str | None) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await agent_store.agents(conn, team, status)


async def get_agent(pool: asyncpg.Pool, agent_id: str) -> dict[str, Any]:
    async with pool.acquire() as conn:
        row = await agent_store.agent_row(conn, agent_id)
    if row is None:
        raise AgentNotFound(agent_id)
    return row


async def queue(pool: asyncpg.Pool, keys: KeyRing, team: str, limit: int) -> dict[str, Any]:
    """The team's open cases by due_at: unassigned, per owner (with the agent's status and load
    when the owner is an agent), and the escalated ones (also listed where they wait)."""
    async with pool.acquire() as conn:
        rows = await agent_store.queue(conn, team, limit)
        owners = sorted({r["owner"] for r in rows if r["owner"]})
        known = await agent_store.agents_named(conn, owners)
    await handlers.open_titles(keys, rows)
    by_owner: dict[str, list[dict[str, Any]]] = {o: [] for o in owners}
    for r in rows:
        if r["owner"]:
            by_owner[r["owner"]].append(r)
    return {
        "team": team,
        "unassigned": [r for r in rows if not r["owner"]],
        "owners": [
            {
                "owner": owner,
                "agent": _agent_summary(known.get(owner)),
                "cases": cases,
            }
            for owner, cases in by_owner.items()
        ],
        "escalations": [r for r in rows if r["escalated"]],
    }


def _agent_summary(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: row[k] for k in ("agent_id", "name", "status", "capacity", "load")}
