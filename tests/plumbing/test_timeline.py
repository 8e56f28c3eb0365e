"""The timeline projection against PostgreSQL: keyset pages, digest, merges as aliases."""

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from eventkit.envelope import Envelope
from servicekit.timeline import (
    PAGE_BEFORE_SQL,
    PAGE_SQL,
    Cursor,
    TimelineProjection,
    digest,
    page,
    resolve,
    survivor_of,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TP = "00-" + "e" * 32 + "-" + "f" * 16 + "-01"


def ev(i: int, customer: str, seconds: int, type_: str = "crm.interaction.recorded.v1", data=None) -> Envelope:
    return Envelope(
        id=f"00000000-0000-4000-8000-{i:012d}",
        type=type_,
        source="/crm/test",
        subject=customer,
        time=T0 + timedelta(seconds=seconds),
        data=data or {"i": i},
        traceparent=TP,
    )


def merged(i: int, survivor: str, merged_id: str, seconds: int) -> Envelope:
    data = {
        "survivor_id": survivor,
        "merged_id": merged_id,
        "linked_by": {"kind": "email", "value": "x@y.z"},
        "reason": "same email",
    }
    return ev(i, survivor, seconds, "crm.customer.merged.v1", data)


def expected_digest(events: list[Envelope]) -> str:
    ordered = sorted(events, key=lambda e: (e.time, e.id))
    return hashlib.sha256("".join(f"{e.id}\n" for e in ordered).encode()).hexdigest()


async def test_pages_are_newest_first_and_complete(pool: asyncpg.Pool) -> None:
    # Several events share a time: the id breaks the tie, and paging must neither skip nor repeat.
    events = [ev(i, "c1", seconds=i // 3) for i in range(25)]
    async with pool.acquire() as conn:
        await TimelineProjection().apply(conn, events)
        seen: list[str] = []
        cursor: Cursor | None = None
        while True:
            items, cursor = await page(conn, "c1", 4, cursor)
            seen.extend(i["event_id"] for i in items)
            if cursor is None:
                break
            cursor = Cursor.decode(cursor.encode())  # as it travels through the API
    newest_first = [e.id for e in sorted(events, key=lambda e: (e.time, e.id), reverse=True)]
    assert seen == newest_first


async def test_pages_of_a_merged_customer_interleave_every_member(pool: asyncpg.Pool) -> None:
    """Three members' rows, interleaved in time, ties included: small pages walk all of them
    newest first, each exactly once, as one timeline."""
    members = ["p1", "p2", "p3"]
    events = [ev(100 + i, members[i % 3], seconds=i // 2) for i in range(31)]
    async with pool.acquire() as conn:
        await TimelineProjection().apply(conn, events)
        await TimelineProjection().apply(conn, [merged(140, "p1", "p2", 50), merged(141, "p1", "p3", 51)])
        survivor, ids = await resolve(conn, "p1")
        assert survivor is None
        seen: list[str] = []
        cursor: Cursor | None = None
        while True:
            items, cursor = await page(conn, "p1", 4, cursor, ids)
            seen.extend(i["event_id"] for i in items)
            if cursor is None:
                break
    everything = [*events, merged(140, "p1", "p2", 50), merged(141, "p1", "p3", 51)]
    assert seen == [e.id for e in sorted(everything, key=lambda e: (e.time, e.id), reverse=True)]


async def test_digest_is_sha256_over_canonical_order(pool: asyncpg.Pool) -> None:
    events = [ev(i, "c2", seconds=(i * 7) % 5) for i in range(12)]
    async with pool.acquire() as conn:
        await TimelineProjection().apply(conn, list(reversed(events)))  # arrival order must not matter
        assert await digest(conn, "c2") == (12, expected_digest(events))
        assert await digest(conn, "nobody") == (0, hashlib.sha256(b"").hexdigest())


async def test_merge_moves_timeline_under_survivor_including_late_events(pool: asyncpg.Pool) -> None:
    survivor = [ev(1, "s", 1), ev(2, "s", 5)]
    merged = [ev(3, "m", 2), ev(4, "m", 3)]
    merge = ev(
        5,
        "s",
        6,
        "crm.customer.merged.v1",
        {
            "survivor_id": "s",
            "merged_id": "m",
            "linked_by": {"kind": "email", "value": "x@y.z"},
            "reason": "r",
        },
    )
    late = ev(6, "m", 7)  # still keyed by the merged id, arrives after the merge
    projection = TimelineProjection()
    async with pool.acquire() as conn:
        await projection.apply(conn, survivor + merged)
        await projection.apply(conn, [merge])
        await projection.apply(conn, [late])
        assert await survivor_of(conn, "m") == "s"
        assert await survivor_of(conn, "s") is None
        items, _ = await page(conn, "s", 50, None)
        all_events = [*survivor, *merged, merge, late]
        assert [i["event_id"] for i in items] == [
            e.id for e in sorted(all_events, key=lambda e: (e.time, e.id), reverse=True)
        ]
        assert await digest(conn, "s") == (6, expected_digest(all_events))
        # the read paths' one-query lookup says the same: m redirects, s gathers both
        assert await resolve(conn, "m") == ("s", [])
        survivor_id, members = await resolve(conn, "s")
        assert (survivor_id, sorted(members)) == (None, ["m", "s"])
        assert (await page(conn, "s", 50, None, members))[0] == items
        assert await digest(conn, "s", members) == (6, expected_digest(all_events))
        assert await resolve(conn, "nobody") == (None, ["nobody"])


async def test_chained_merges_point_at_the_final_survivor(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await TimelineProjection().apply(conn, [ev(1, "a", 1), ev(2, "b", 1), ev(3, "c", 1)])
        await TimelineProjection().apply(conn, [merged(10, "b", "a", 10), merged(11, "c", "b", 11)])
        assert await survivor_of(conn, "a") == "c"
        assert await survivor_of(conn, "b") == "c"
        assert (await digest(conn, "c"))[0] == 5


def scanned_rows(plan: dict[str, Any], table: str) -> int:
    """Rows the plan's scans of `table` returned, over all their loops."""
    own = plan["Actual Rows"] * plan["Actual Loops"] if plan.get("Relation Name") == table else 0
    return int(own + sum(scanned_rows(child, table) for child in plan.get("Plans", [])))


async def test_a_page_of_a_big_customer_reads_a_page_not_the_whole_timeline(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        # Skewed like a real timeline: one customer with 5,000 events among 3,000 with 10 each,
        # so the table's average is under a page.
        await conn.execute(
            "INSERT INTO timeline (customer_id, time, event_id, type, source, data)"
            " SELECT 'big', $1::timestamptz + i * interval '1 second', gen_random_uuid(), 't', 's', '{}'::json"
            " FROM generate_series(1, 5000) i"
            " UNION ALL SELECT 'small-' || i % 3000, $1::timestamptz + i * interval '1 second', gen_random_uuid(),"
            " 't', 's', '{}'::json FROM generate_series(1, 30000) i",
            T0,
        )
        await conn.execute("ANALYZE timeline")
        for sql, args in ((PAGE_SQL, ()), (PAGE_BEFORE_SQL, (T0 + timedelta(seconds=4000), uuid.UUID(int=0)))):
            # Bound parameters, as the service sends them: the first executions get custom plans.
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", ["big"], 51, *args)
            plan = explained[0]["Plan"]  # json, decoded by the pool's codec
            assert scanned_rows(plan, "timeline") == 51, json.dumps(plan, indent=1)
