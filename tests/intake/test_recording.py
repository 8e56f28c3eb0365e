"""Recording interactions against a real PostgreSQL: idempotency and identity under retries and races."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from eventkit import db
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from intake import domain, recording

from contracts.events import CUSTOMER_MERGED, INTERACTION_RECORDED
from tests.intake.conftest import item, store, vault


async def count(dsn: str, type_: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE type = $1", type_))
    finally:
        await conn.close()


ops = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1), st.sampled_from(["header", "client"])), min_size=1, max_size=12
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_a_retry_never_makes_a_second_event(intake_dsn: str, ops: list[tuple[int, int, str]]) -> None:
    """Any sequence of requests and retries: one event per key; a retry answers what the first did;
    the same key with another body is refused."""
    run = uuid.uuid4().hex[:8]

    async def scenario() -> None:
        pool = await db.create_pool(intake_dsn, 2)
        try:
            before = await count(intake_dsn, INTERACTION_RECORDED)
            first: dict[tuple[str, int], tuple[int, dict]] = {}
            for key_no, body_no, how in ops:
                key = (how, key_no)
                email = f"{run}-{key_no}@example.com"
                if how == "header":
                    it = item(email, f"body {body_no}")
                    request_key = (f"request:{run}-{key_no}", it.request_hash)
                else:
                    it = item(email, f"body {body_no}", client_id=f"{run}-{key_no}")
                    request_key = None
                try:
                    answer = (await recording.record_interactions(pool, store, vault, "/test", [it], request_key))[0]
                except recording.IdempotencyConflict:
                    assert key in first and first[key][0] != body_no
                    continue
                if key in first:
                    assert first[key] == (body_no, answer)  # the first answer, word for word
                else:
                    first[key] = (body_no, answer)
            assert await count(intake_dsn, INTERACTION_RECORDED) - before == len(first)
        finally:
            await pool.close()

    asyncio.run(scenario())


async def test_concurrent_first_contacts_make_one_customer(intake_dsn: str) -> None:
    pool = await db.create_pool(intake_dsn, 10)
    try:
        email = f"rush-{uuid.uuid4().hex[:8]}@example.com"
        answers = await asyncio.gather(
            *(recording.record_interactions(pool, store, vault, "/test", [item(email, f"m{n}")]) for n in range(10))
        )
        assert len({a[0]["customer_id"] for a in answers}) == 1
        created = sum(len(a[0]["event_ids"]) == 2 for a in answers)
        assert created == 1  # exactly one request also stored customer.created
    finally:
        await pool.close()


async def test_concurrent_merges_leave_identifiers_on_live_customers(intake_dsn: str) -> None:
    """Requests that link identifiers of different customers race; every identifier ends on a live
    customer, one survivor remains, and every merge is an event."""
    pool = await db.create_pool(intake_dsn, 10)
    try:
        run = uuid.uuid4().hex[:8]
        emails = [f"{run}-{n}@example.com" for n in range(6)]
        for e in emails:  # verified addresses: a claimed one links no merge (test_identity_trust.py)
            await recording.record_interactions(pool, store, vault, "/test", [item(e, "hello", verified=True)])

        def linking(a: str, b: str) -> recording.Item:
            it = item(a, "link")
            cmd = domain.RecordInteraction(
                **{
                    **it.cmd.__dict__,
                    "identifiers": (domain.normalise_email(a), domain.normalise_email(b)),
                    "verified": True,  # a key allowed to verify identities: claims never merge
                }
            )
            return recording.Item(cmd, it.request_hash)

        pairs = [(emails[i], emails[(i + 1) % 6]) for i in range(6)] + [(emails[0], emails[3]), (emails[2], emails[5])]
        await asyncio.gather(
            *(recording.record_interactions(pool, store, vault, "/test", [linking(a, b)]) for a, b in pairs)
        )
        async with pool.acquire() as conn:
            owners = await conn.fetch(
                "SELECT c.customer_id, c.merged_into FROM customer_identifiers i JOIN customers c USING (customer_id)"
                " WHERE i.value = ANY($1::text[])",
                [vault.index(domain.normalise_email(e)) for e in emails],
            )
            merges = await conn.fetchval(
                "SELECT count(*) FROM events WHERE type = $1 AND data->>'merged_id' IN"
                " (SELECT customer_id FROM customers WHERE merged_into IS NOT NULL)",
                CUSTOMER_MERGED,
            )
        assert {r["merged_into"] for r in owners} == {None}
        assert len({r["customer_id"] for r in owners}) == 1
        assert merges == 5  # six customers became one: five merges, each once
    finally:
        await pool.close()


async def test_old_idempotency_keys_are_forgotten(intake_dsn: str) -> None:
    from intake import store as intake_store

    pool = await db.create_pool(intake_dsn, 2)
    try:
        old, new = f"request:old-{uuid.uuid4().hex}", f"request:new-{uuid.uuid4().hex}"
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO idempotency_keys (key, request_hash, created_at)"
                " VALUES ($1, 'h', now() - interval '4 days'), ($2, 'h', now())",
                old,
                new,
            )
            forgotten = await intake_store.forget_keys_before(conn, datetime.now(UTC) - timedelta(hours=72))
            left = {
                r["key"] for r in await conn.fetch("SELECT key FROM idempotency_keys WHERE key = ANY($1)", [old, new])
            }
        assert forgotten >= 1
        assert left == {new}
    finally:
        await pool.close()


async def test_item_errors_names_unknown_customers_and_records_nothing(intake_dsn: str) -> None:
    """The database's checks for a batch already rejected: by the caller's indexes, nothing stored."""
    pool = await db.create_pool(intake_dsn, 2)
    try:
        first = item(f"k-{uuid.uuid4().hex}@x.org", "hi")
        known = (await recording.record_interactions(pool, store, vault, "/test", [first]))[0]

        def by_id(customer_id: str) -> recording.Item:
            it = item("unused@x.org", "by id")
            return recording.Item(
                domain.RecordInteraction(**{**it.cmd.__dict__, "identifiers": (), "customer_id": customer_id}),
                it.request_hash,
            )

        before = await count(intake_dsn, INTERACTION_RECORDED)
        errors = await recording.item_errors(
            pool,
            vault,
            [(0, by_id(known["customer_id"])), (3, by_id("ghost")), (4, item(f"new-{uuid.uuid4().hex}@x.org", "hi")),
             (7, by_id("ghost-2"))],
        )  # fmt: skip
        assert [(i, e.field, e.reason) for i, e in errors] == [
            (3, "customer.id", "unknown customer"),
            (7, "customer.id", "unknown customer"),
        ]
        assert await count(intake_dsn, INTERACTION_RECORDED) == before
    finally:
        await pool.close()
