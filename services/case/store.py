"""SQL for case's own database: the case list read model, SLA timers, customer flags.

Lock order, everywhere: the customer's advisory lock (rules only), then the case row. Commands,
rules and timers on one case therefore take turns and never deadlock one another.
"""

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from eventkit.envelope import format_time

from case import domain
from contracts.events import INTERACTION_RECORDED

_CUSTOMER_LOCK = 7_300_101  # advisory lock namespace: one customer's rules at a time


def stream_of(case_id: str) -> str:
    return f"case-{case_id}"


# --- locks -----------------------------------------------------------------------------------


async def lock_customer(conn: asyncpg.Connection, customer_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _CUSTOMER_LOCK, customer_id)


async def lock_case(conn: asyncpg.Connection, case_id: str, skip_locked: bool = False) -> bool:
    """Lock the case's row for this transaction; False if there is no such case (or, with
    skip_locked, someone else holds it)."""
    sql = "SELECT 1 FROM cases WHERE case_id = $1 FOR UPDATE" + (" SKIP LOCKED" if skip_locked else "")
    return await conn.fetchval(sql, case_id) is not None


# --- customers -------------------------------------------------------------------------------


async def customer_ids(conn: asyncpg.Connection, customer_id: str) -> list[str]:
    """The customer's live id first, then every id merged into it (the timeline keeps the aliases)."""
    survivor = await conn.fetchval("SELECT survivor_id FROM customer_aliases WHERE merged_id = $1", customer_id)
    root = survivor or customer_id
    rows = await conn.fetch("SELECT merged_id FROM customer_aliases WHERE survivor_id = $1", root)
    return [root, *(r["merged_id"] for r in rows)]


async def is_vip(conn: asyncpg.Connection, ids: Sequence[str]) -> bool:
    return bool(await conn.fetchval("SELECT bool_or(vip) FROM customer_flags WHERE customer_id = ANY($1)", list(ids)))


async def set_vip(conn: asyncpg.Connection, customer_id: str, vip: bool, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO customer_flags (customer_id, vip, updated_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (customer_id) DO UPDATE SET vip = EXCLUDED.vip, updated_at = EXCLUDED.updated_at"
        " WHERE customer_flags.updated_at <= EXCLUDED.updated_at",
        customer_id,
        vip,
        at,
    )


async def customer_known(conn: asyncpg.Connection, ids: Sequence[str]) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM timeline WHERE customer_id = ANY($1))", list(ids)))


@dataclass(frozen=True)
class Interaction:
    event_id: str
    customer_id: str
    kind: str
    channel: str
    direction: str


async def interaction(conn: asyncpg.Connection, ids: Sequence[str], event_id: str) -> Interaction | None:
    """An interaction of this customer, as the timeline projection recorded it."""
    row = await conn.fetchrow(
        "SELECT customer_id, data FROM timeline WHERE customer_id = ANY($1) AND event_id = $2 AND type = $3",
        list(ids),
        event_id,
        INTERACTION_RECORDED,
    )
    if row is None:
        return None
    data = row["data"]
    return Interaction(event_id, row["customer_id"], data["kind"], data["channel"], data["direction"])


async def interaction_owner(conn: asyncpg.Connection, event_id: str) -> str | None:
    """Whose interaction it is, whoever that is (to tell 'not found' from 'someone else's')."""
    result: str | None = await conn.fetchval(
        "SELECT customer_id FROM timeline WHERE event_id = $1 AND type = $2", event_id, INTERACTION_RECORDED
    )
    return result


# --- the case list read model -----------------------------------------------------------------


async def save_case(conn: asyncpg.Connection, s: domain.CaseState) -> None:
    await conn.execute(
        """
        INSERT INTO cases (case_id, customer_id, version, type, priority, status, team, queue, owner, title,
                           opened_at, updated_at, first_response_at, resolved_at, closed_at, breached, escalated,
                           awaiting_survey, title_sealed_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
        ON CONFLICT (case_id) DO UPDATE SET
            version = EXCLUDED.version, type = EXCLUDED.type, priority = EXCLUDED.priority,
            status = EXCLUDED.status, team = EXCLUDED.team, queue = EXCLUDED.queue, owner = EXCLUDED.owner,
            title = EXCLUDED.title, title_sealed_by = EXCLUDED.title_sealed_by, updated_at = EXCLUDED.updated_at,
            first_response_at = EXCLUDED.first_response_at, resolved_at = EXCLUDED.resolved_at,
            closed_at = EXCLUDED.closed_at, breached = EXCLUDED.breached, escalated = EXCLUDED.escalated,
            awaiting_survey = EXCLUDED.awaiting_survey
        """,
        s.case_id,
        s.customer_id,
        s.version,
        s.type,
        s.priority,
        s.status,
        s.team,
        s.queue,
        s.owner,
        s.title_sealed[1] if s.title_sealed else s.title,  # the token, never the text
        s.opened_at,
        s.updated_at,
        s.first_response_at,
        s.resolved_at,
        s.closed_at,
        s.breached,
        s.escalated,
        s.awaiting_survey,
        s.title_sealed[0] if s.title_sealed else None,
    )


@dataclass(frozen=True)
class Reach:
    """What one customer id's answers may reach, as the batch found it: the id its cases live
    under (the survivor of any merge) and whether any case of the customer could take an answer."""

    root: str
    any_case: bool


# The statuses are literals so that the partial indexes (cases_customer_open, _resolved) apply.
_OPEN = ", ".join(f"'{s}'" for s in domain.OPEN_STATUSES)


async def reach(conn: asyncpg.Connection, customer_ids: Sequence[str], resolved_since: datetime) -> dict[str, Reach]:
    """For a whole batch in one query: each customer id's root and whether the root or an id
    merged into it has an open case or one resolved since `resolved_since`. A customer without
    one (most answers on a busy channel) needs no lock and no further query."""
    rows = await conn.fetch(
        "WITH asked AS (SELECT a.id, coalesce(al.survivor_id, a.id) AS root FROM unnest($1::text[]) AS a(id)"
        " LEFT JOIN customer_aliases al ON al.merged_id = a.id),"
        " ids AS (SELECT DISTINCT root, root AS customer_id FROM asked"
        " UNION SELECT m.survivor_id, m.merged_id FROM customer_aliases m"
        " WHERE m.survivor_id IN (SELECT root FROM asked))"
        " SELECT asked.id, asked.root, EXISTS (SELECT 1 FROM ids JOIN cases c ON c.customer_id = ids.customer_id"
        f"  WHERE ids.root = asked.root AND (c.status IN ({_OPEN})"
        "  OR (c.status = 'resolved' AND c.resolved_at >= $2))) AS any_case"
        " FROM asked",
        list(set(customer_ids)),
        resolved_since,
    )
    return {r["id"]: Reach(r["root"], r["any_case"]) for r in rows}


async def reply_candidates(
    conn: asyncpg.Connection, ids: Sequence[str], resolved_since: datetime
) -> list[domain.ReplyCandidate]:
    """The customer's open cases and those resolved since `resolved_since`: what an answer may reach."""
    rows = await conn.fetch(
        "SELECT case_id, type, status, updated_at, resolved_at FROM cases"
        " WHERE customer_id = ANY($1) AND status = ANY($2)"
        " UNION ALL SELECT case_id, type, status, updated_at, resolved_at FROM cases"
        " WHERE customer_id = ANY($1) AND status = 'resolved' AND resolved_at >= $3",
        list(ids),
        list(domain.OPEN_STATUSES),
        resolved_since,
    )
    return [
        domain.ReplyCandidate(r["case_id"], r["type"], r["status"], r["updated_at"], r["resolved_at"]) for r in rows
    ]


async def open_cases(conn: asyncpg.Connection, ids: Sequence[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT case_id FROM cases WHERE customer_id = ANY($1) AND status = ANY($2) ORDER BY case_id",
        list(ids),
        list(domain.OPEN_STATUSES),
    )
    return [r["case_id"] for r in rows]


async def case_awaiting_survey(conn: asyncpg.Connection, ids: Sequence[str]) -> str | None:
    """The most recently resolved case of the customer whose survey is unanswered."""
    result: str | None = await conn.fetchval(
        "SELECT case_id FROM cases WHERE customer_id = ANY($1) AND awaiting_survey"
        " ORDER BY resolved_at DESC NULLS LAST, updated_at DESC LIMIT 1",
        list(ids),
    )
    return result


async def case_exists(conn: asyncpg.Connection, case_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM cases WHERE case_id = $1)", case_id))


@dataclass(frozen=True)
class ListCursor:
    opened_at: datetime
    case_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{format_time(self.opened_at)}|{self.case_id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "ListCursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            at, case_id = raw.split("|")
            return cls(datetime.fromisoformat(at), case_id)
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError("not a case list cursor") from exc


_LIST_COLUMNS = (
    "case_id, customer_id, version, type, priority, status, team, queue, owner, title, opened_at, updated_at,"
    " first_response_at, resolved_at, closed_at, breached, escalated, awaiting_survey, title_sealed_by"
)


def _field_filters(fields: Sequence[tuple[str, Any]], tags: Sequence[str], args: list[Any]) -> list[str]:
    """WHERE conditions on `cases` for field.<name>=<value> and tag= (all must hold); appends to args."""
    where = []
    for name, value in fields:
        args.extend([name, value])
        where.append(
            "EXISTS (SELECT 1 FROM case_field_values v WHERE v.case_id = cases.case_id"
            f" AND v.name = ${len(args) - 1} AND v.value = ${len(args)}::jsonb)"
        )
    for tag in tags:
        args.append(tag)
        where.append(f"EXISTS (SELECT 1 FROM case_tags t WHERE t.case_id = cases.case_id AND t.tag = ${len(args)})")
    return where


async def list_cases(
    conn: asyncpg.Connection, filters: dict[str, Any], limit: int, cursor: ListCursor | None
) -> tuple[list[dict[str, Any]], ListCursor | None]:
    """Newest first, keyset paged. Filters: lists match any value, scalars match exactly; `fields`
    ((name, value) pairs) and `tags` must all hold."""
    where: list[str] = []
    args: list[Any] = []
    for column in ("status", "priority", "type"):
        if filters.get(column):
            args.append(list(filters[column]))
            where.append(f"{column} = ANY(${len(args)})")
    for column in ("owner", "team", "queue", "customer_id", "breached", "escalated"):
        if filters.get(column) is not None:
            args.append(filters[column])
            where.append(f"{column} = ${len(args)}")
    where += _field_filters(filters.get("fields") or (), filters.get("tags") or (), args)
    if cursor is not None:
        args.extend([cursor.opened_at, cursor.case_id])
        where.append(f"(opened_at, case_id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    sql = (
        f"SELECT {_LIST_COLUMNS} FROM cases {'WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY opened_at DESC, case_id DESC LIMIT ${len(args)}"
    )
    rows = [dict(r) for r in await conn.fetch(sql, *args)]
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, ListCursor(rows[-1]["opened_at"], rows[-1]["case_id"])


# --- durable SLA timers ------------------------------------------------------------------------


class Timer(Protocol):
    """A row of case_timers: an SLA alert (sla.Alert) or the auto close (level "close")."""

    @property
    def level(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def at(self) -> datetime: ...


async def sync_timers(
    conn: asyncpg.Connection,
    case_id: str,
    scheduled: Sequence[Timer],
    fired: Sequence[Timer],
    now: datetime,
) -> None:
    """Unfired timers become exactly the scheduled ones; fired ones are marked fired."""
    await conn.execute("DELETE FROM case_timers WHERE case_id = $1 AND fired_at IS NULL", case_id)
    for alerts, fired_at in ((scheduled, None), (fired, now)):
        if not alerts:
            continue
        await conn.execute(
            "INSERT INTO case_timers (case_id, level, target, due_at, fired_at)"
            " SELECT $1, l, t, d, $5 FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS x(l, t, d)"
            " ON CONFLICT (case_id, level, target) DO UPDATE"
            " SET fired_at = COALESCE(case_timers.fired_at, EXCLUDED.fired_at)",
            case_id,
            [a.level for a in alerts],
            [a.target for a in alerts],
            [a.at for a in alerts],
            fired_at,
        )


async def due_timer_cases(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT case_id FROM case_timers WHERE fired_at IS NULL AND due_at <= $1 ORDER BY due_at LIMIT $2",
        now,
        limit,
    )
    return list(dict.fromkeys(r["case_id"] for r in rows))


async def timers(conn: asyncpg.Connection, case_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT level, target, due_at, fired_at FROM case_timers WHERE case_id = $1 ORDER BY due_at", case_id
    )
    return [dict(r) for r in rows]
