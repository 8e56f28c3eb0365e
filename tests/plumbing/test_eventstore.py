"""Event store against PostgreSQL: optimistic concurrency, ordering, outbox enqueue."""

import asyncio

import asyncpg
import pytest
from eventkit.envelope import new_event
from eventkit.eventstore import Append, ConcurrencyError, EventStore

store = EventStore("test")


def ev(subject: str, n: int = 0):
    return new_event("crm.test.happened.v1", subject, {"n": n}, "/crm/test", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")


async def test_append_and_load_in_version_order(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        versions = await store.append(conn, [Append("s-1", 0, [ev("c1", 1), ev("c1", 2)], "t")])
        versions2 = await store.append(conn, [Append("s-1", 2, [ev("c1", 3)], "t")])
    assert versions == {"s-1": 2}
    assert versions2 == {"s-1": 3}
    async with pool.acquire() as conn:
        loaded = await store.load(conn, "s-1")
    assert [e.version for e in loaded] == [1, 2, 3]
    assert [e.event.data["n"] for e in loaded] == [1, 2, 3]


async def test_stale_expected_version_is_a_conflict(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [Append("s-2", 0, [ev("c")], "t")])
    with pytest.raises(ConcurrencyError) as info:
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, [Append("s-2", 0, [ev("c")], "t")])
    assert info.value.stream_id == "s-2"
    async with pool.acquire() as conn:
        assert len(await store.load(conn, "s-2")) == 1
        # nothing of the failed append reached the outbox either
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1


async def test_concurrent_writers_one_wins(pool: asyncpg.Pool) -> None:
    """Two transactions append at the same expected version: exactly one commits."""
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [Append("s-3", 0, [ev("c")], "t")])

    async def write(n: int) -> str:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await store.append(conn, [Append("s-3", 1, [ev("c", n)], "t")])
                await asyncio.sleep(0.05)  # hold the transaction open so the two overlap
            return "ok"
        except ConcurrencyError:
            return "conflict"

    results = await asyncio.gather(write(1), write(2))
    assert sorted(results) == ["conflict", "ok"]
    async with pool.acquire() as conn:
        assert [e.version for e in await store.load(conn, "s-3")] == [1, 2]


async def test_append_at_end_without_expectation(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [Append("s-4", None, [ev("c")], "t")])
        await store.append(conn, [Append("s-4", None, [ev("c"), ev("c")], "t"), Append("s-5", None, [ev("d")], "t")])
    async with pool.acquire() as conn:
        assert [e.version for e in await store.load(conn, "s-4")] == [1, 2, 3]
        assert [e.version for e in await store.load(conn, "s-5")] == [1]
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 4


async def test_rolled_back_unit_of_work_stores_nothing(pool: asyncpg.Pool) -> None:
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, [Append("s-6", 0, [ev("c")], "t")])
            raise RuntimeError("handler failed after appending")
    async with pool.acquire() as conn:
        assert await store.load(conn, "s-6") == []
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
