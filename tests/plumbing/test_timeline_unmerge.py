"""The timeline's alias tree against PostgreSQL: merges keep each alias's direct parent, so an
unmerge gives the merged id back its own rows and the ids merged into it, and nothing else."""

import asyncpg
from eventkit.envelope import Envelope
from servicekit.timeline import TimelineProjection, apply_bulk, digest, resolve

from tests.plumbing.test_timeline import ev, expected_digest, merged


def unmerged(i: int, survivor: str, merged_id: str, seconds: int) -> Envelope:
    data = {"survivor_id": survivor, "merged_id": merged_id, "identifiers": [], "unmerged_by": "k1"}
    return ev(i, survivor, seconds, "crm.customer.unmerged.v1", data)


async def aliases(conn: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    rows = await conn.fetch("SELECT merged_id, survivor_id, parent_id FROM customer_aliases")
    return {r["merged_id"]: (r["survivor_id"], r["parent_id"]) for r in rows}


async def test_a_chain_keeps_direct_parents_and_flattens_survivors(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        # c into b, then b into a: c's survivor is a, its parent b.
        await TimelineProjection().apply(conn, [merged(1, "b", "c", 1), merged(2, "a", "b", 2)])
        assert await aliases(conn) == {"c": ("a", "b"), "b": ("a", "a")}


async def test_unmerging_a_middle_node_takes_its_subtree_with_it(pool: asyncpg.Pool) -> None:
    rows = {c: [ev(n * 10 + k, c, n * 10 + k) for k in range(3)] for n, c in enumerate(["a", "b", "c", "d"], 1)}
    async with pool.acquire() as conn:
        p = TimelineProjection()
        await p.apply(conn, [e for es in rows.values() for e in es])
        # c into b, b into a, d into a: then b is unmerged from a.
        await p.apply(conn, [merged(101, "b", "c", 101), merged(102, "a", "b", 102), merged(103, "a", "d", 103)])
        assert (await resolve(conn, "c"))[0] == "a"
        await p.apply(conn, [unmerged(104, "a", "b", 104)])
        assert await aliases(conn) == {"c": ("b", "b"), "d": ("a", "a")}
        assert await resolve(conn, "b") == (None, ["b", "c"])
        assert (await resolve(conn, "c"))[0] == "b"
        _, a_members = await resolve(conn, "a")
        assert sorted(a_members) == ["a", "d"]
        # Each keeps the rows made under its own ids (a's merge and unmerge events are a's).
        n, d = await digest(conn, "b")
        assert (n, d) == (7, expected_digest(rows["b"] + rows["c"] + [merged(101, "b", "c", 101)]))
        merges_on_a = [merged(102, "a", "b", 102), merged(103, "a", "d", 103), unmerged(104, "a", "b", 104)]
        assert await digest(conn, "a") == (9, expected_digest(rows["a"] + rows["d"] + merges_on_a))


async def test_unmerging_twice_or_an_unmerged_id_changes_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        p = TimelineProjection()
        await p.apply(conn, [merged(1, "a", "b", 1), merged(2, "b", "c", 2)])  # c into b after b into a
        assert await aliases(conn) == {"b": ("a", "a"), "c": ("a", "b")}
        await p.apply(conn, [unmerged(3, "a", "b", 3)])
        await p.apply(conn, [unmerged(4, "a", "b", 4), unmerged(5, "a", "x", 5)])
        assert await aliases(conn) == {"c": ("b", "b")}


async def test_a_merge_after_an_unmerge_merges_again(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        p = TimelineProjection()
        await p.apply(conn, [merged(1, "a", "b", 1), unmerged(2, "a", "b", 2)])
        assert await resolve(conn, "b") == (None, ["b"])
        # Merged again, the other way round this time: a (and nothing else) into b.
        await p.apply(conn, [merged(3, "b", "a", 3)])
        assert await aliases(conn) == {"a": ("b", "b")}
        await p.apply(conn, [merged(4, "a", "b", 4)])  # a cycle: the first decision stands
        assert await aliases(conn) == {"a": ("b", "b")}


async def test_the_bulk_replay_applies_merges_and_unmerges_in_order(pool: asyncpg.Pool) -> None:
    events = [merged(1, "b", "c", 1), merged(2, "a", "b", 2), unmerged(3, "a", "b", 3), merged(4, "a", "c", 4)]
    async with pool.acquire() as conn:
        await TimelineProjection().apply(conn, events)
        one_by_one = await aliases(conn)
        await conn.execute("TRUNCATE timeline, customer_aliases")
        async with conn.transaction():
            await apply_bulk(conn, events)
        assert await aliases(conn) == one_by_one == {"c": ("a", "a")}
