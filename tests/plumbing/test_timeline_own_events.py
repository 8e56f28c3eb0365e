"""A timeline whose service's own events come from its event store (servicekit.timeline
own_events, intake's): stored once, never copied into the timeline table, and read beside the
table's rows with the same order, cursors, digest and merges."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from crmtools.devstack import EmbeddedPostgres
from eventkit import db
from eventkit.consumer import StoredEventsApplier
from eventkit.envelope import Envelope
from eventkit.eventstore import Append, EventStore
from servicekit.timeline import (
    _PAGE_SQL,
    ON_TIMELINE_SQL,
    Cursor,
    TimelineProjection,
    digest,
    page,
    record_stored_aliases,
    resolve,
)
from servicekit.timeline_count import _COUNT_WITH_OWN

from tests.conftest import fresh_database
from tests.plumbing.test_timeline import T0, ev, expected_digest, merged, scanned_rows

INTAKE_MIGRATIONS = Path(__file__).parents[2] / "services" / "intake" / "migrations"


@pytest.fixture
async def intake_pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    """A database with eventkit's and intake's tables (intake's index on its events)."""
    async with await db.create_pool(await fresh_database(postgres, [INTAKE_MIGRATIONS]), 5) as p:
        yield p


def own_store() -> EventStore:
    """A store that applies its events as it stores them, as intake's does (servicekit.app)."""
    return EventStore("test", on_stored=StoredEventsApplier("test", [TimelineProjection(rows=False)]).apply)


async def store(conn: asyncpg.Connection, events: list[Envelope]) -> None:
    async with conn.transaction():
        await own_store().append(conn, [Append(f"s-{e.id}", None, [e], "crm.intake.v1") for e in events])


async def test_own_events_are_read_from_the_store_beside_the_timeline_rows(intake_pool: asyncpg.Pool) -> None:
    """Stored events interleave with consumed rows, ties included: small pages walk all of them
    newest first, once each; none of the stored ones is in the timeline table; the digest is
    over both; events about no customer stay off."""
    stored = [ev(i, "c1", seconds=i // 2) for i in range(0, 30, 2)]
    consumed = [ev(i, "c1", seconds=i // 2) for i in range(1, 30, 2)]
    off = [
        ev(50, "c1", 3, "crm.auth.api_key_created.v1"),
        ev(51, "field:c1", 3, "crm.field.defined.v1"),
    ]
    async with intake_pool.acquire() as conn:
        await store(conn, stored + off)
        await TimelineProjection().apply(conn, consumed)
        assert await conn.fetchval("SELECT count(*) FROM timeline WHERE customer_id = 'c1'") == len(consumed)
        seen: list[str] = []
        cursor: Cursor | None = None
        while True:
            items, cursor = await page(conn, "c1", 4, cursor, own=True)
            seen.extend(i["event_id"] for i in items)
            if cursor is None:
                break
            cursor = Cursor.decode(cursor.encode())
        both = stored + consumed
        assert seen == [e.id for e in sorted(both, key=lambda e: (e.time, e.id), reverse=True)]
        assert await digest(conn, "c1", own=True) == (len(both), expected_digest(both))
        # Without own_events (the other services' reads) only the table's rows.
        assert await digest(conn, "c1") == (len(consumed), expected_digest(consumed))
        first, _ = await page(conn, "c1", 1, None, own=True)
        assert first[0]["data"] == {"i": 29} and first[0]["subject"] == "c1"
        assert first[0]["type"] == "crm.interaction.recorded.v1" and first[0]["source"] == "/crm/test"
        counted = await conn.fetchval(_COUNT_WITH_OWN, T0 + timedelta(days=1))
        assert counted == len(both)  # the auth and field events are on no timeline


async def test_merges_of_stored_events_are_aliases_and_replay_records_them_from_the_store(
    intake_pool: asyncpg.Pool,
) -> None:
    """A stored merge is an alias (the merged id's stored events read under the survivor), and
    record_stored_aliases (what `crm replay` does) makes the same aliases from the store again."""
    before = [ev(1, "a", 1), ev(2, "b", 2)]
    async with intake_pool.acquire() as conn:
        await store(conn, before)
        await store(conn, [merged(3, "a", "b", 3)])
        late = ev(4, "b", 4)  # still keyed by the merged id
        await store(conn, [late])
        assert await resolve(conn, "b") == ("a", [])
        _, members = await resolve(conn, "a")
        all_of_a = [*before, merged(3, "a", "b", 3), late]
        assert await digest(conn, "a", members, own=True) == (4, expected_digest(all_of_a))
        aliases = await conn.fetch("SELECT * FROM customer_aliases ORDER BY merged_id")
        async with conn.transaction():
            await conn.execute("TRUNCATE timeline, customer_aliases")
            assert await record_stored_aliases(conn) == 1
        assert await conn.fetch("SELECT * FROM customer_aliases ORDER BY merged_id") == aliases
        assert await conn.fetchval("SELECT count(*) FROM timeline") == 0


async def test_a_page_of_a_big_customer_reads_a_page_of_its_stored_events(intake_pool: asyncpg.Pool) -> None:
    """The store's (subject, time, event_id) index is walked backwards for a page, as the
    timeline's key is: 51 rows read for a page of 50, not all 5,000 of the customer."""
    async with intake_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO events (stream_id, version, event_id, type, source, subject, time, traceparent, topic, data)"
            " SELECT 's-' || i, 1, gen_random_uuid(), 't', 's',"
            " CASE WHEN i <= 5000 THEN 'big' ELSE 'small-' || i % 3000 END,"
            " $1::timestamptz + i * interval '1 second', 'tp', 'crm.intake.v1', '{}'::json"
            " FROM generate_series(1, 35000) i",
            T0,
        )
        await conn.execute("ANALYZE events")
        for cut, args in ((False, ()), (True, (T0 + timedelta(seconds=4000), uuid.UUID(int=0)))):
            for one, members in ((False, ["big"]), (True, "big")):
                sql = _PAGE_SQL[True, cut, one]
                explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", members, 51, *args)
                plan = explained[0]["Plan"]
                assert scanned_rows(plan, "events") == 51, json.dumps(plan, indent=1)


@pytest.mark.parametrize("own", [False, True])
async def test_a_customer_without_aliases_is_read_by_a_plan_made_once(intake_pool: asyncpg.Pool, own: bool) -> None:
    """One member goes as a text parameter, not an array: the prepared statement's plan does not
    depend on it, so PostgreSQL settles on one generic plan instead of planning each page (which
    cost more than running it). Each customer's page is still its own."""
    async with intake_pool.acquire() as conn:
        consumed = [ev(i, f"g{i % 3}", seconds=i) for i in range(30)]
        await TimelineProjection().apply(conn, consumed)
        await store(conn, [ev(100 + i, f"g{i % 3}", seconds=100 + i) for i in range(30)])
        for n in range(8):
            items, _ = await page(conn, f"g{n % 3}", 5, None, [f"g{n % 3}"], own)
            assert {i["subject"] for i in items} == {f"g{n % 3}"}
        sql = _PAGE_SQL[own, False, True]
        plans = await conn.fetchval("SELECT generic_plans FROM pg_prepared_statements WHERE statement = $1", sql)
        assert plans is not None and plans >= 1


def test_the_store_index_is_over_what_the_reads_ask_for() -> None:
    """The partial index's predicate is the reads' on_timeline condition word for word: the
    planner uses a partial index only where it can prove the query implies its predicate. A
    change to what is on no timeline needs a migration that makes the index again."""
    migration = (INTAKE_MIGRATIONS / "007_timeline_from_event_store.sql").read_text()
    assert f"WHERE {ON_TIMELINE_SQL};" in " ".join(migration.split())
