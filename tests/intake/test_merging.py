"""Manual merge and unmerge in intake's handlers on a real PostgreSQL (docs/merge-and-unmerge.md):
merge chains keep each customer's direct parent, an unmerge of a middle node takes the customers
merged into it along, a merge after an unmerge merges again, and consent is worked out again."""

import uuid

import asyncpg
import pytest
from intake import domain, handlers, merging, store

from contracts.events import CONSENT_CHANGED, CUSTOMER_MERGED, CUSTOMER_UNMERGED
from tests.intake.conftest import store as events
from tests.intake.conftest import vault
from tests.intake.test_identity_trust import claim, email, record


async def customer(pool: asyncpg.Pool, name: str) -> tuple[str, domain.Ident]:
    ident = email(f"{name}-{uuid.uuid4().hex[:8]}")
    return (await record(pool, claim(ident)))[0]["customer_id"], ident


async def merge(pool: asyncpg.Pool, survivor: str, merged: str) -> merging.Outcome:
    return await merging.merge_customers(pool, events, vault, "/test", survivor, merged, "agent-key")


async def unmerge(pool: asyncpg.Pool, survivor: str, merged: str, *idents: domain.Ident) -> merging.Outcome:
    return await merging.unmerge_customer(pool, events, vault, "/test", survivor, merged, idents, "agent-key")


async def tree(pool: asyncpg.Pool, *ids: str) -> dict[str, tuple[str | None, str | None]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT customer_id, merged_into, merged_parent FROM customers WHERE customer_id = ANY($1::text[])",
            list(ids),
        )
    return {r["customer_id"]: (r["merged_into"], r["merged_parent"]) for r in rows}


async def owner(pool: asyncpg.Pool, ident: domain.Ident) -> str | None:
    async with pool.acquire() as conn:
        found = await store.identifier_trust(conn, vault, ident)
    return found[0] if found else None


async def test_unmerging_a_middle_node_takes_its_subtree_and_identifiers(pool: asyncpg.Pool) -> None:
    (a, a_mail), (b, b_mail), (c, c_mail) = [await customer(pool, n) for n in ("a", "b", "c")]
    await merge(pool, b, c)
    out = await merge(pool, a, b)
    async with pool.acquire() as conn:
        merged = [e.event for e in await events.load(conn, f"customer-{a}") if e.event.type == CUSTOMER_MERGED]
    assert out.event_ids[0] == merged[-1].id
    assert (merged[-1].data["reason"], merged[-1].data["merged_by"]) == ("manual", "agent-key")
    assert merged[-1].data["linked_by"]["value"] == "[sealed]"  # one of b's identifiers, sealed
    assert await tree(pool, a, b, c) == {a: (None, None), b: (a, a), c: (a, b)}
    assert {await owner(pool, i) for i in (a_mail, b_mail, c_mail)} == {a}

    out = await unmerge(pool, a, b, b_mail, c_mail)
    assert out.moved_ids == [c]
    assert await tree(pool, a, b, c) == {a: (None, None), b: (None, None), c: (b, b)}
    assert [await owner(pool, i) for i in (a_mail, b_mail, c_mail)] == [a, b, b]
    async with pool.acquire() as conn:
        assert await store.survivor_of(conn, c) == b
        last = (await events.load(conn, f"customer-{a}"))[-1].event
    assert (last.type, last.data["merged_id"], last.data["sealed"]["key"]) == (CUSTOMER_UNMERGED, b, b)


async def test_refusals(pool: asyncpg.Pool) -> None:
    (a, _), (b, _), (c, _) = [await customer(pool, n) for n in ("a", "b", "c")]
    with pytest.raises(merging.MergeRefused) as same:
        await merge(pool, a, a)
    assert same.value.error == "same_customer"
    with pytest.raises(merging.MergedNotFound):
        await merge(pool, a, "nobody")
    with pytest.raises(handlers.CustomerNotFound):
        await merge(pool, "nobody", a)
    await merge(pool, a, b)
    with pytest.raises(merging.MergeRefused) as again:
        await merge(pool, c, b)  # b is a's already
    assert again.value.error == "already_merged"
    with pytest.raises(handlers.CustomerMoved):
        await merge(pool, b, c)  # b answers for a now: 308
    with pytest.raises(merging.MergeRefused) as not_merged:
        await unmerge(pool, c, b)
    assert not_merged.value.error == "not_merged"
    with pytest.raises(merging.NotTheSurvivors) as foreign:
        await unmerge(pool, a, b, email("stranger"))
    assert foreign.value.index == 0


async def test_a_merge_after_an_unmerge_merges_again(pool: asyncpg.Pool) -> None:
    (a, _), (b, b_mail) = [await customer(pool, n) for n in ("a", "b")]
    await merge(pool, a, b)
    await unmerge(pool, a, b, b_mail)
    await merge(pool, b, a)  # the other way round this time
    assert await tree(pool, a, b) == {a: (b, b), b: (None, None)}


async def test_consent_is_worked_out_again_from_each_ones_own_answers(pool: asyncpg.Pool) -> None:
    (a, _), (b, b_mail) = [await customer(pool, n) for n in ("a", "b")]
    await handlers.change_consent(pool, events, "/test", a, {("marketing", None): True})
    await handlers.change_consent(pool, events, "/test", b, {("marketing", None): False, ("service", "sms"): True})
    await merge(pool, a, b)
    async with pool.acquire() as conn:
        assert await store.consent(conn, a) == {("marketing", "*"): False, ("service", "sms"): True}
    await handlers.change_consent(pool, events, "/test", a, {("service", "email"): False})  # a's own, after
    out = await unmerge(pool, a, b, b_mail)
    async with pool.acquire() as conn:
        assert await store.consent(conn, a) == {("marketing", "*"): True, ("service", "email"): False}
        assert await store.consent(conn, b) == {("marketing", "*"): False, ("service", "sms"): True}
        stored = {e.event.id: e.event for e in await events.load(conn, f"customer-{a}")}
    unmerged, *changes = (stored[i] for i in out.event_ids)
    assert unmerged.data["consent_cleared"] == [{"purpose": "service", "channel": "sms"}]
    assert [(e.type, e.data["purpose"], e.data["granted"]) for e in changes] == [(CONSENT_CHANGED, "marketing", True)]
