"""intake's group commit against a real PostgreSQL: requests that arrive together share one
transaction, yet each keeps its own answer, error, idempotency and trace."""

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from eventkit.telemetry import context_from_traceparent
from intake import domain, group_commit, recording
from intake import store as intake_store
from opentelemetry import context as otel_context

from contracts.events import INTERACTION_RECORDED
from tests.intake.conftest import item, store, vault


@pytest.fixture
def committer(pool: asyncpg.Pool) -> group_commit.GroupCommit:
    """One write in flight at a time, so which requests share a transaction is certain."""
    return group_commit.GroupCommit(pool, store, vault, "/test", in_flight=1)


async def transactions_of(pool: asyncpg.Pool, event_ids: list[str]) -> int:
    """How many transactions wrote these events (rows one transaction inserted share its xmin)."""
    async with pool.acquire() as conn:
        n = await conn.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM events WHERE event_id = ANY($1::uuid[])", event_ids
        )
        assert await conn.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1::uuid[])", event_ids) == len(
            set(event_ids)
        )
        return int(n)


async def test_requests_waiting_for_a_write_share_the_next_transaction(
    pool: asyncpg.Pool, committer: group_commit.GroupCommit
) -> None:
    run = uuid.uuid4().hex[:8]
    answers = await asyncio.gather(*(committer.record([item(f"{run}-{n}@example.com", f"m{n}")]) for n in range(10)))
    ids = [a[0]["event_id"] for a in answers]
    assert len(set(ids)) == 10
    assert len({a[0]["customer_id"] for a in answers}) == 10
    # The first is written at once and alone; the nine that arrived meanwhile in one more.
    assert await transactions_of(pool, ids) == 2
    # Each answer is its own request's: the customer it names owns that request's email.
    async with pool.acquire() as conn:
        for n, a in enumerate(answers):
            snap = await intake_store.load_snapshot(conn, vault, [domain.normalise_email(f"{run}-{n}@example.com")], [])
            assert set(snap.owner.values()) == {a[0]["customer_id"]}


async def test_a_bad_request_in_a_group_fails_alone(pool: asyncpg.Pool, committer: group_commit.GroupCommit) -> None:
    """One request with an unknown customer id, one reusing a key for another body: they get
    their own errors; the others in the same group are recorded."""
    run = uuid.uuid4().hex[:8]
    await committer.record([item(f"{run}-k@example.com", "first", client_id=f"{run}-k")])
    requests: list[Any] = [
        committer.record([item(f"{run}-blocker@example.com", "occupies the only slot")]),
        committer.record([item(f"{run}-a@example.com", "a")]),
        committer.record([item("", "who?", customer_id=str(uuid.uuid4()))]),
        committer.record([item(f"{run}-k@example.com", "another body", client_id=f"{run}-k")]),
        committer.record([item(f"{run}-b@example.com", "b")]),
    ]
    outcomes = await asyncio.gather(*requests, return_exceptions=True)
    assert isinstance(outcomes[2], recording.ItemErrors)
    assert outcomes[2].errors[0][1].field == "customer.id"
    assert isinstance(outcomes[3], recording.IdempotencyConflict)
    assert outcomes[3].index == 0
    good = [outcomes[i] for i in (0, 1, 4)]
    assert all(isinstance(o, list) for o in good)
    ids = [o[0]["event_id"] for o in good if isinstance(o, list)]
    assert len(set(ids)) == 3
    await transactions_of(pool, ids)  # all three stored


async def test_the_same_key_twice_at_once_is_one_event_and_one_answer(
    pool: asyncpg.Pool, committer: group_commit.GroupCommit
) -> None:
    """Two requests with one client_event_id never share a group: the second sees the first's answer."""
    run = uuid.uuid4().hex[:8]
    same = item(f"{run}@example.com", "hello", client_id=run)
    first, second, third = await asyncio.gather(
        committer.record([item(f"{run}-x@example.com", "occupies the slot")]),
        committer.record([same]),
        committer.record([same]),
    )
    assert second == third
    assert first[0]["event_id"] != second[0]["event_id"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE event_id = $1", second[0]["event_id"]) == 1
        n = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = $1 AND subject = $2",
            INTERACTION_RECORDED,
            second[0]["customer_id"],
        )
    assert n == 1


async def test_every_event_carries_the_trace_of_its_own_request(
    pool: asyncpg.Pool, committer: group_commit.GroupCommit
) -> None:
    run = uuid.uuid4().hex[:8]

    async def traced(n: int) -> tuple[str, list[dict[str, Any]]]:
        tp = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        token = otel_context.attach(context_from_traceparent(tp))
        try:
            return tp, await committer.record([item(f"{run}-{n}@example.com", "traced")])
        finally:
            otel_context.detach(token)

    results = await asyncio.gather(*(traced(n) for n in range(6)))
    async with pool.acquire() as conn:
        for tp, answers in results:
            stored = await conn.fetch(
                "SELECT traceparent FROM events WHERE event_id = ANY($1::uuid[])", answers[0]["event_ids"]
            )
            assert [r["traceparent"] for r in stored] == [tp] * len(answers[0]["event_ids"])
    ids = [answers[0]["event_id"] for _, answers in results]
    assert await transactions_of(pool, ids) == 2
