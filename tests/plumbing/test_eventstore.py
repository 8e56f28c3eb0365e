"""Event store against PostgreSQL: optimistic concurrency, ordering, outbox enqueue, and the
service's own projections applied as events are stored."""

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest
from eventkit.consumer import StoredEventsApplier
from eventkit.db import json_text
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, ConcurrencyError, EventStore, EventTooLarge, encoded_size
from servicekit.timeline import TimelineProjection

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


class Recording:
    """A projection that records what it is given, and fails on request."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.fail = False

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        self.seen.extend(e.id for e in events)
        if self.fail:
            raise RuntimeError("projection failed")


async def test_events_applied_as_stored_are_in_the_projections_and_recorded_when_the_write_commits(
    pool: asyncpg.Pool,
) -> None:
    """contracts PROJECTED_WHEN_STORED: the service's own events go to its projections in the
    transaction that stores them, and are recorded as applied there (a replay skips them)."""
    recording = Recording()
    applying = EventStore("test", on_stored=StoredEventsApplier("test", [TimelineProjection(), recording]).apply)
    first, second = ev("c-own", 1), ev("c-own", 2)
    async with pool.acquire() as conn, conn.transaction():
        await applying.append(conn, [Append("s-7", 0, [first, second], "t")])
    assert recording.seen == [first.id, second.id]
    async with pool.acquire() as conn:
        on_timeline = await conn.fetch("SELECT event_id FROM timeline WHERE customer_id = 'c-own' ORDER BY time")
        assert [str(r["event_id"]) for r in on_timeline] == [first.id, second.id]
        applied = await conn.fetch(
            "SELECT event_id FROM applied_events WHERE event_id = ANY($1::uuid[])", [first.id, second.id]
        )
        assert {str(r["event_id"]) for r in applied} == {first.id, second.id}
        # and a store without it records nothing as applied
        await store.append(conn, [Append("s-8", 0, [third := ev("c-other")], "t")])
        assert await conn.fetchval("SELECT count(*) FROM applied_events WHERE event_id = $1", third.id) == 0


async def test_a_failing_projection_of_stored_events_rolls_the_write_back(pool: asyncpg.Pool) -> None:
    recording = Recording()
    recording.fail = True
    applying = EventStore("test", on_stored=StoredEventsApplier("test", [TimelineProjection(), recording]).apply)
    event = ev("c-failing")
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await applying.append(conn, [Append("s-9", 0, [event], "t")])
    async with pool.acquire() as conn:
        assert await store.load(conn, "s-9") == []
        assert await conn.fetchval("SELECT count(*) FROM timeline WHERE event_id = $1", event.id) == 0
        assert await conn.fetchval("SELECT count(*) FROM applied_events WHERE event_id = $1", event.id) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_event_over_the_size_limit_is_refused_before_anything_is_written(pool: asyncpg.Pool) -> None:
    limited = EventStore("test", max_event_bytes=4096)
    small, multibyte = ev("c-big", 1), ev("c-big", 2)
    # 1,500 characters of 3 bytes each: under the limit counted in characters, over it in bytes
    multibyte.data["text"] = "€" * 1500
    with pytest.raises(EventTooLarge) as info:
        async with pool.acquire() as conn, conn.transaction():
            await limited.append(conn, [Append("s-big", None, [small, multibyte], "t")])
    assert info.value.event_id == multibyte.id
    assert info.value.size > 4096 and info.value.limit == 4096
    assert info.value.size == encoded_size(multibyte, json_text(multibyte.data))
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = 's-big'") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    async with pool.acquire() as conn, conn.transaction():  # at the limit's side of it: stored
        assert await limited.append(conn, [Append("s-big", None, [small], "t")]) == {"s-big": 1}


def test_the_encoded_size_counts_data_key_and_headers_in_bytes() -> None:
    e = ev("ü" * 10)
    data = json_text(e.data)
    base = encoded_size(ev("u" * 10), data)
    assert encoded_size(e, data) == base + 20  # 2-byte characters, in the key and in ce_subject
    assert encoded_size(e, data + "é") == encoded_size(e, data) + 2
