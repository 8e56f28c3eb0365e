"""timeline.apply_bulk (what `crm replay` writes with) leaves exactly the rows and aliases that
TimelineProjection.apply leaves for the same batches: data, first-wins on a repeated key,
merges (a chain, a cycle refused), crm.auth.* left out."""

from typing import Any

import asyncpg
from eventkit.envelope import Envelope
from servicekit.timeline import TimelineProjection, apply_bulk

from tests.plumbing.test_timeline import ev, merged


def batches() -> list[list[Envelope]]:
    repeated = ev(7, "c1", 9, data={"version": "first"})
    same_key_other_data = ev(7, "c1", 9, data={"version": "second"})
    first = [
        ev(1, "c1", 5, data={"nested": {"list": [1, 2.5, None, True], "text": 'é\n"quoted"'}}),
        ev(2, "c2", 1),
        repeated,
        ev(3, "c1", 5),  # the same time as event 1: the id orders them
        same_key_other_data,  # a second row with the key of event 7 within the batch: the first stays
        ev(4, "k", 2, "crm.auth.key.created.v1", {"key_id": "k1"}),  # not about a customer
        merged(5, "c1", "c2", 10),
        ev(6, "c3", 3),
    ]
    second = [
        ev(2, "c2", 1, data={"version": "again"}),  # already there from the first batch
        merged(8, "c4", "c1", 11),  # c2 -> c1 -> c4: both alias the final survivor
        merged(9, "c1", "c4", 12),  # a cycle: the first decision stays
        ev(10, "c2", 4),  # late, still keyed by the merged id
    ]
    return [first, second]


async def snapshot(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = await conn.fetch("SELECT * FROM timeline ORDER BY customer_id, time, event_id")
    aliases = await conn.fetch("SELECT * FROM customer_aliases ORDER BY merged_id")
    return [dict(r) for r in rows], [dict(r) for r in aliases]


async def test_bulk_apply_leaves_what_the_projection_leaves(pool: asyncpg.Pool, dsn: str) -> None:
    async with pool.acquire() as conn:
        for batch in batches():
            async with conn.transaction():
                await TimelineProjection().apply(conn, batch)
        expected = await snapshot(conn)
        await conn.execute("TRUNCATE timeline, customer_aliases")

    conn = await asyncpg.connect(dsn)  # a connection of its own, as replay uses
    try:
        for batch in batches():
            async with conn.transaction():
                await apply_bulk(conn, batch)
        # the staging table is emptied by each commit, so a batch never sees the one before
        assert await conn.fetchval("SELECT count(*) FROM timeline_staging") == 0
    finally:
        await conn.close()
    async with pool.acquire() as conn:
        got = await snapshot(conn)

    assert got == expected
    rows, aliases = got
    assert len(rows) == 9  # 10 events, auth left out, one repeated key and one repeat dropped
    assert next(r["data"] for r in rows if str(r["event_id"]).endswith("-000000000007")) == {"version": "first"}
    assert {(a["merged_id"], a["survivor_id"]) for a in aliases} == {("c1", "c4"), ("c2", "c4")}


async def test_bulk_apply_of_nothing_on_the_timeline_writes_nothing(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await apply_bulk(conn, [ev(1, "k", 1, "crm.auth.key.revoked.v1", {"key_id": "k1"})])
            await apply_bulk(conn, [])
        assert await conn.fetchval("SELECT count(*) FROM timeline") == 0
    finally:
        await conn.close()
