"""SQL for agents and queues: the agents read model, loads counted from `cases`, the waiting cases.

Lock order: a team's advisory lock (the assignment round only), then agent rows (in agent id
order), then case rows. An agent command locks its agent row before it looks at the agent's cases;
a round holds its team's online agents while it assigns, so an agent going offline waits for the
round and then sees (and hands back) what the round gave them.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from case import domain
from case.agents import AgentState, Candidate, Waiting

_TEAM_LOCK = 7_300_102  # advisory lock namespace: one assignment round per team at a time
_OPEN = list(domain.OPEN_STATUSES)
# When a case is due: its earliest SLA breach, fired or not (a breached case is the most overdue).
# Spelled as the partial index cases_unassigned says it (004_agents.sql), so that the planner uses
# it: the rounds look for waiting cases every second among all the cases ever opened.
_WAITING = "c.owner IS NULL AND c.status IN ('new', 'open', 'pending')"
_DUE_AT = "(SELECT min(t.due_at) FROM case_timers t WHERE t.case_id = c.case_id AND t.level = 'breach')"


async def lock_agent(conn: asyncpg.Connection, agent_id: str) -> None:
    await conn.execute("SELECT 1 FROM agents WHERE agent_id = $1 FOR UPDATE", agent_id)


async def try_lock_team(conn: asyncpg.Connection, team: str) -> bool:
    """This transaction's round over the team, or False: another instance is doing it now."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _TEAM_LOCK, team))


async def save_agent(conn: asyncpg.Connection, s: AgentState) -> None:
    await conn.execute(
        """
        INSERT INTO agents (agent_id, version, name, teams, capacity, skills, status, updated_at, idle_since)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (agent_id) DO UPDATE SET
            version = EXCLUDED.version, name = EXCLUDED.name, teams = EXCLUDED.teams,
            capacity = EXCLUDED.capacity, skills = EXCLUDED.skills, status = EXCLUDED.status,
            updated_at = EXCLUDED.updated_at,
            idle_since = GREATEST(agents.idle_since, EXCLUDED.idle_since)
        """,
        s.agent_id,
        s.version,
        s.name,
        s.teams,
        s.capacity,
        s.skills,
        s.status,
        s.updated_at,
        s.online_since,
    )


async def mark_assigned(conn: asyncpg.Connection, agent_id: str, at: datetime) -> None:
    await conn.execute("UPDATE agents SET idle_since = $2 WHERE agent_id = $1", agent_id, at)


_AGENT_COLUMNS = "a.agent_id, a.version, a.name, a.teams, a.capacity, a.skills, a.status, a.updated_at, a.idle_since"
_LOAD = "(SELECT count(*) FROM cases c WHERE c.owner = a.agent_id AND c.status = ANY($1))::int AS load"


async def agents(conn: asyncpg.Connection, team: str | None, status: str | None) -> list[dict[str, Any]]:
    """Agents (of a team, in a status) with their load, by agent id."""
    rows = await conn.fetch(
        f"SELECT {_AGENT_COLUMNS}, {_LOAD} FROM agents a"
        " WHERE ($2::text IS NULL OR $2 = ANY(a.teams)) AND ($3::text IS NULL OR a.status = $3)"
        " ORDER BY a.agent_id",
        _OPEN,
        team,
        status,
    )
    return [dict(r) for r in rows]


async def agent_row(conn: asyncpg.Connection, agent_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_AGENT_COLUMNS}, {_LOAD} FROM agents a WHERE a.agent_id = $2", _OPEN, agent_id)
    return dict(row) if row else None


async def owned_open_cases(conn: asyncpg.Connection, agent_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT case_id FROM cases WHERE owner = $1 AND status = ANY($2) ORDER BY case_id", agent_id, _OPEN
    )
    return [r["case_id"] for r in rows]


# --- the assignment round ----------------------------------------------------------------------


async def teams_to_serve(conn: asyncpg.Connection) -> list[str]:
    """Teams with a waiting (unowned, open) case and an online agent of theirs."""
    rows = await conn.fetch(
        f"SELECT DISTINCT c.team FROM cases c WHERE {_WAITING}"
        " AND EXISTS (SELECT 1 FROM agents a WHERE a.status = 'online' AND c.team = ANY(a.teams))"
        " ORDER BY c.team"
    )
    return [r["team"] for r in rows]


async def candidates(conn: asyncpg.Connection, team: str) -> list[Candidate]:
    """The team's online agents, their rows locked until the round commits: in agent id order, so
    that rounds of two teams sharing agents take turns instead of deadlocking."""
    await conn.execute(
        "SELECT 1 FROM agents WHERE $1 = ANY(teams) AND status = 'online' ORDER BY agent_id FOR UPDATE", team
    )
    # Counted by a statement of its own, after the locks: a statement that waited for a lock still
    # reads as of its start, and would miss the cases the round before it just assigned.
    rows = await conn.fetch(
        f"SELECT a.agent_id, a.status, a.capacity, a.skills, a.idle_since, {_LOAD} FROM agents a"
        " WHERE $2 = ANY(a.teams) AND a.status = 'online' ORDER BY a.agent_id",
        _OPEN,
        team,
    )
    return [
        Candidate(r["agent_id"], r["status"], r["capacity"], r["load"], frozenset(r["skills"]), r["idle_since"])
        for r in rows
    ]


async def waiting_cases(conn: asyncpg.Connection, team: str, limit: int) -> list[Waiting]:
    """The team's unowned open cases, oldest due_at first (no SLA due: after those, oldest first)."""
    rows = await conn.fetch(
        f"SELECT c.case_id, c.type FROM cases c WHERE c.team = $1 AND {_WAITING}"
        f" ORDER BY {_DUE_AT} NULLS LAST, c.opened_at, c.case_id LIMIT $2",
        team,
        limit,
    )
    return [Waiting(r["case_id"], r["type"]) for r in rows]


# --- queues ------------------------------------------------------------------------------------

QUEUE_COLUMNS = (
    "c.case_id, c.customer_id, c.version, c.type, c.priority, c.status, c.team, c.queue, c.owner, c.title,"
    f" c.opened_at, c.updated_at, c.breached, c.escalated, c.title_sealed_by, {_DUE_AT} AS due_at"
)


async def queue(conn: asyncpg.Connection, team: str, limit: int) -> list[dict[str, Any]]:
    """The team's open cases, oldest due_at first."""
    rows = await conn.fetch(
        f"SELECT {QUEUE_COLUMNS} FROM cases c WHERE c.team = $2 AND c.status = ANY($1)"
        " ORDER BY due_at NULLS LAST, c.opened_at, c.case_id LIMIT $3",
        _OPEN,
        team,
        limit,
    )
    return [dict(r) for r in rows]


async def agents_named(conn: asyncpg.Connection, agent_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_AGENT_COLUMNS}, {_LOAD} FROM agents a WHERE a.agent_id = ANY($2)", _OPEN, list(agent_ids)
    )
    return {r["agent_id"]: dict(r) for r in rows}
