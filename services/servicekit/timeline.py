"""The synchronized customer timeline (docs/product.md §5), the same projection in every service.

Each service builds it in its own database from every topic. A merge is an event, so nothing
is moved: the merged id becomes an alias of the survivor, and reads gather the survivor's and
its aliases' rows. Late events still keyed by the merged id therefore land where they belong.

Canonical order is (event time, event id); the digest is SHA-256 over the ids in that order,
each followed by a newline, so equal digests mean the same events in every service.

A service that applies its own events as it stores them (contracts PROJECTED_WHEN_STORED:
intake) does not copy them into its timeline table: its reads take them from its event store,
beside the table's rows (`own_events`), so each of its events is written once, not twice.
"""

import asyncio
import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from eventkit.consumer import Waiters
from eventkit.db import json_text
from eventkit.envelope import Envelope, format_time

from contracts.case import AGENT_EVENT_PREFIX
from contracts.events import CUSTOMER_MERGED, CUSTOMER_UNMERGED
from contracts.fields import FIELD_SUBJECT_PREFIX
from contracts.notification import CAMPAIGN_EVENT_PREFIX, CAMPAIGN_SUBJECT_PREFIX
from contracts.topics import PROJECTED_WHEN_STORED

MERGED = CUSTOMER_MERGED
UNMERGED = CUSTOMER_UNMERGED
# Events about API keys, agents, campaigns and field definitions, not a customer: by type prefix (so consumers that
# filter by type alone skip them too) and, for any type, by subject.
NOT_ON_TIMELINE = ("crm.auth.", AGENT_EVENT_PREFIX, CAMPAIGN_EVENT_PREFIX)
NOT_ON_TIMELINE_SUBJECTS = (CAMPAIGN_SUBJECT_PREFIX, FIELD_SUBJECT_PREFIX)


def on_timeline(e: Envelope) -> bool:
    """Whether the event is about a customer (and so on their timeline)."""
    return not e.type.startswith(NOT_ON_TIMELINE) and not e.subject.startswith(NOT_ON_TIMELINE_SUBJECTS)


# on_timeline over the events table's columns, for reads of a service's own stored events.
ON_TIMELINE_SQL = " AND ".join(
    [f"NOT starts_with(type, '{p}')" for p in NOT_ON_TIMELINE]
    + [f"NOT starts_with(subject, '{p}')" for p in NOT_ON_TIMELINE_SUBJECTS]
)


def own_events(service: str) -> bool:
    """Whether the service's own stored events are on its timeline from its event store, not
    copied into its timeline table (the events it applies as it stores them)."""
    return service in PROJECTED_WHEN_STORED


class TimelineProjection:
    """`rows=False`: the merges and unmerges only, for events whose rows the reads take from the
    service's event store (own_events)."""

    def __init__(self, rows: bool = True) -> None:
        self.rows = rows

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        events = [e for e in events if on_timeline(e)]
        if not events:
            return
        if not self.rows:
            await record_aliases(conn, events)
            return
        await conn.execute(
            "INSERT INTO timeline (customer_id, time, event_id, type, source, data)"
            " SELECT c, t, i, ty, s, d::json FROM unnest($1::text[], $2::timestamptz[], $3::uuid[],"
            " $4::text[], $5::text[], $6::text[]) AS x(c, t, i, ty, s, d)"
            " ON CONFLICT DO NOTHING",
            [e.subject for e in events],
            [e.time for e in events],
            [e.id for e in events],
            [e.type for e in events],
            [e.source for e in events],
            [json_text(e.data) for e in events],
        )
        await record_aliases(conn, events)


async def record_aliases(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    """The merges and unmerges among these events, in order."""
    for e in events:
        if e.type == MERGED:
            await record_merge(conn, survivor_id=e.data["survivor_id"], merged_id=e.data["merged_id"])
        elif e.type == UNMERGED:
            await record_unmerge(conn, merged_id=e.data["merged_id"])


# Session-local staging for apply_bulk; emptied by every commit (and by a rollback).
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS timeline_staging (n int, customer_id text, time timestamptz, event_id uuid,"
    " type text, source text, data text) ON COMMIT DELETE ROWS"
)


async def apply_bulk(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    """The same rows and merges as TimelineProjection.apply(conn, events), cheaper per event in
    large batches: for `crm replay`, inside a transaction, on a connection of its own (it keeps
    a temporary table, so not a pooled one).

    The rows go in by binary COPY to a staging table and one INSERT ... SELECT ... ON CONFLICT DO
    NOTHING in key order, which touches fewer index pages at random than log order (the figures
    are in BENCHMARKS.md). The position in the batch breaks ties, so of two rows with one key the
    first wins, as with apply(). Merges are recorded after the rows, in order.
    """
    events = [e for e in events if on_timeline(e)]
    if not events:
        return
    await conn.execute(_STAGING)
    await conn.copy_records_to_table(
        "timeline_staging",
        records=[(n, e.subject, e.time, e.id, e.type, e.source, json_text(e.data)) for n, e in enumerate(events)],
    )
    await conn.execute(
        "INSERT INTO timeline (customer_id, time, event_id, type, source, data)"
        " SELECT customer_id, time, event_id, type, source, data::json FROM timeline_staging"
        " ORDER BY customer_id, time, event_id, n ON CONFLICT DO NOTHING"
    )
    await record_aliases(conn, events)


async def record_stored_aliases(conn: asyncpg.Connection) -> int:
    """The merges and unmerges in the service's own event store, in the order stored: what
    `crm replay` records for a service whose own events it does not read from its topic
    (own_events). Returns how many."""
    rows = await conn.fetch(
        "SELECT type, data FROM events WHERE type = ANY($1::text[]) ORDER BY position", [MERGED, UNMERGED]
    )
    for r in rows:
        if r["type"] == MERGED:
            await record_merge(conn, survivor_id=r["data"]["survivor_id"], merged_id=r["data"]["merged_id"])
        else:
            await record_unmerge(conn, merged_id=r["data"]["merged_id"])
    return len(rows)


ALIAS_LOCK = "SELECT pg_advisory_xact_lock(7300003)"


async def record_merge(conn: asyncpg.Connection, survivor_id: str, merged_id: str) -> None:
    """Alias merged_id (and everything already merged into it) to the survivor's final survivor;
    its parent is survivor_id itself, for an unmerge to undo exactly this merge."""
    # Serialise merges: two concurrent merges must not leave an alias pointing at an alias.
    await conn.execute(ALIAS_LOCK)
    final = await conn.fetchval("SELECT survivor_id FROM customer_aliases WHERE merged_id = $1", survivor_id)
    final = final or survivor_id
    if final == merged_id:
        return  # a merge that would make a cycle: keep the first decision
    await conn.execute("UPDATE customer_aliases SET survivor_id = $1 WHERE survivor_id = $2", final, merged_id)
    await conn.execute(
        "INSERT INTO customer_aliases (merged_id, survivor_id, parent_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (merged_id) DO UPDATE SET survivor_id = EXCLUDED.survivor_id, parent_id = EXCLUDED.parent_id",
        merged_id,
        final,
        survivor_id,
    )


# The aliases below one id: merged into it, or into one of those, and so on (by direct parent).
SUBTREE_SQL = (
    "WITH RECURSIVE sub(id) AS (SELECT merged_id FROM {table} WHERE parent_id = $1"
    " UNION SELECT a.merged_id FROM {table} a JOIN sub ON a.parent_id = sub.id) SELECT id FROM sub"
)


async def record_unmerge(conn: asyncpg.Connection, merged_id: str, table: str = "customer_aliases") -> list[str]:
    """Undo the merge of merged_id: it answers for itself again, and the ids merged into it
    (directly or through each other) become its aliases again. Returns those ids. Unmerging an
    id that is not merged changes nothing (a replay, or a copy of the event)."""
    await conn.execute(ALIAS_LOCK)
    if not await conn.fetchval(f"SELECT 1 FROM {table} WHERE merged_id = $1", merged_id):
        return []
    await conn.execute(f"DELETE FROM {table} WHERE merged_id = $1", merged_id)
    rows = await conn.fetch(SUBTREE_SQL.format(table=table), merged_id)
    below = [r["id"] for r in rows]
    await conn.execute(f"UPDATE {table} SET survivor_id = $1 WHERE merged_id = ANY($2::text[])", merged_id, below)
    return below


# --- reads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Keyset position: the (time, event id) of the last item of the previous page."""

    time: datetime
    event_id: uuid.UUID

    def encode(self) -> str:
        raw = f"{format_time(self.time)}|{self.event_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        """Raise ValueError for anything that is not a cursor this service handed out."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            time_text, id_text = raw.split("|")
            return cls(datetime.fromisoformat(time_text), uuid.UUID(id_text))
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError("not a timeline cursor") from exc


async def survivor_of(conn: asyncpg.Connection, customer_id: str) -> str | None:
    """The id a merged customer now lives under, or None if customer_id was never merged."""
    result: str | None = await conn.fetchval(
        "SELECT survivor_id FROM customer_aliases WHERE merged_id = $1", customer_id
    )
    return result


async def member_ids(conn: asyncpg.Connection, customer_id: str) -> list[str]:
    rows = await conn.fetch("SELECT merged_id FROM customer_aliases WHERE survivor_id = $1", customer_id)
    return [customer_id, *(r["merged_id"] for r in rows)]


async def resolve(conn: asyncpg.Connection, customer_id: str) -> tuple[str | None, list[str]]:
    """(survivor, []) if customer_id was merged into another customer; else (None, the ids whose
    rows make its timeline: itself and everyone merged into it). One query, for the read paths."""
    rows = await conn.fetch(
        "SELECT merged_id, survivor_id FROM customer_aliases WHERE merged_id = $1 OR survivor_id = $1", customer_id
    )
    for r in rows:
        if r["merged_id"] == customer_id:
            return r["survivor_id"], []
    return None, [customer_id, *(r["merged_id"] for r in rows)]


# Newest `$2` of each member ($1) by its own index range, then of those together: with
# `customer_id = ANY(...)` PostgreSQL read and sorted all of a customer's rows (2 ms of its CPU
# per page of a 10,000-event customer) instead of stopping after a page. That each member's range
# is walked backwards from its newest row, not read whole by a bitmap scan and sorted, rests on
# the row estimate per customer (migration 005_timeline_statistics.sql). With own_events, each
# member's newest `$2` of the event store too, by its (subject, time, event_id) index (intake's
# migration 007_timeline_from_event_store.sql).
#
# A customer without aliases (most) has one member, passed as a plain `$1` text instead of an
# array: its plan does not depend on the value, so PostgreSQL plans the prepared statement once
# and reuses it; with the array, each execution got a plan of its own, which cost more than the
# execution itself (PostgreSQL CPU per page of 50: 135 instead of 315 µs, with own_events 175
# instead of 555; BENCHMARKS.md).
_ROWS = (
    "(SELECT customer_id, time, event_id, type, source, data FROM timeline"
    " WHERE customer_id = {member}{cutoff} ORDER BY time DESC, event_id DESC LIMIT $2)"
)
_OWN_ROWS = (
    " UNION ALL (SELECT subject, time, event_id, type, source, data FROM events"
    " WHERE subject = {member} AND " + ON_TIMELINE_SQL + "{cutoff} ORDER BY time DESC, event_id DESC LIMIT $2)"
)
_PAGE = (
    "SELECT t.customer_id, t.time, t.event_id, t.type, t.source, t.data FROM unnest($1::text[]) AS m(id),"
    " LATERAL ({rows}) AS t ORDER BY t.time DESC, t.event_id DESC LIMIT $2"
)
_PAGE_ONE = (
    "SELECT t.customer_id, t.time, t.event_id, t.type, t.source, t.data FROM ({rows}) AS t"
    " ORDER BY t.time DESC, t.event_id DESC LIMIT $2"
)
_CUTOFF = " AND (time, event_id) < ($3, $4)"  # older than ($3, $4)


def _page_sql(own: bool, cutoff: bool, one: bool) -> str:
    rows = (_ROWS + (_OWN_ROWS if own else "")).format(
        member="$1::text" if one else "m.id", cutoff=_CUTOFF if cutoff else ""
    )
    if not one:
        return _PAGE.format(rows=rows)
    return _PAGE_ONE.format(rows=rows)


_PAGE_SQL = {
    (own, cut, one): _page_sql(own, cut, one) for own in (False, True) for cut in (False, True) for one in (False, True)
}
PAGE_SQL = _PAGE_SQL[False, False, False]
PAGE_BEFORE_SQL = _PAGE_SQL[False, True, False]


async def page(
    conn: asyncpg.Connection,
    customer_id: str,
    limit: int,
    before: Cursor | None,
    members: Sequence[str] | None = None,
    own: bool = False,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Newest first, `limit` items older than `before`; and the cursor of the next page, if any.

    `members` (from resolve) saves looking the aliases up again; `own`: own_events(service)."""
    ids = list(members) if members is not None else await member_ids(conn, customer_id)
    one = len(ids) == 1
    key: Any = ids[0] if one else ids
    if before is None:
        rows = await conn.fetch(_PAGE_SQL[own, False, one], key, limit + 1)
    else:
        rows = await conn.fetch(_PAGE_SQL[own, True, one], key, limit + 1, before.time, before.event_id)
    items = [
        {
            "event_id": str(r["event_id"]),
            "type": r["type"],
            "time": format_time(r["time"]),
            "source": r["source"],
            "subject": r["customer_id"],
            "data": r["data"],
        }
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return items, (Cursor(last["time"], last["event_id"]) if last is not None else None)


_DIGEST = (
    "SELECT count(*) AS n, encode(sha256(convert_to(coalesce("
    " string_agg(event_id::text || E'\\n', '' ORDER BY time, event_id), ''), 'UTF8')), 'hex') AS d FROM ({rows}) AS t"
)
_DIGEST_ROWS = "SELECT time, event_id FROM timeline WHERE customer_id = ANY($1::text[])"
_DIGEST_SQL = {
    False: _DIGEST.format(rows=_DIGEST_ROWS),
    True: _DIGEST.format(
        rows=_DIGEST_ROWS
        + " UNION ALL SELECT time, event_id FROM events WHERE subject = ANY($1::text[]) AND "
        + ON_TIMELINE_SQL
    ),
}


async def digest(
    conn: asyncpg.Connection, customer_id: str, members: Sequence[str] | None = None, own: bool = False
) -> tuple[int, str]:
    ids = list(members) if members is not None else await member_ids(conn, customer_id)
    row = await conn.fetchrow(_DIGEST_SQL[own], ids)
    assert row is not None
    return row["n"], row["d"]


SHARED_POLL_S = 0.05
SOLE_READER_POLL_S = 1.0


async def is_applied(conn: asyncpg.Connection, event_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM applied_events WHERE event_id = $1", event_id))


async def wait_until_applied(pool: asyncpg.Pool, waiters: Waiters, event_id: uuid.UUID, timeout_s: float) -> bool:
    """True once event_id is applied here, False after timeout_s.

    Woken at once by this process's consumer; polls the database as well, every 50 ms, because
    another instance of the service in the same consumer group may be the one applying it. While
    this process reads every partition (Waiters.sole_reader) there is no such instance, and it
    asks only once a second, in case that changed meanwhile: a long-poll then costs one query
    instead of one per 50 ms of waiting.
    """
    key = str(event_id)
    future = waiters.register(key)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            async with pool.acquire() as conn:
                if await is_applied(conn, event_id):
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            interval = SOLE_READER_POLL_S if waiters.sole_reader else SHARED_POLL_S
            done, _ = await asyncio.wait({future}, timeout=min(remaining, interval))
            if done:
                return True
    finally:
        waiters.discard(key, future)
