"""Identity trust in intake's handlers on a real PostgreSQL (docs/product.md §14, docs/identity-trust.md):
claims never merge nor add verified identifiers, suggestions are stored once per pair (also under
concurrency), agents accept, reject and verify."""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from intake import domain, handlers, recording, suggestions

from contracts.events import CUSTOMER_MERGED, IDENTIFIERS_VERIFIED, MERGE_SUGGESTED, MERGE_SUGGESTION_DECIDED, Direction
from tests.intake.conftest import store, vault


def email(name: str) -> domain.Ident:
    return domain.normalise_email(f"{name}@example.com")


def claim(
    *idents: domain.Ident, customer_id: str | None = None, verified: bool = False, direction: Direction = "inbound"
) -> recording.Item:
    cmd = domain.RecordInteraction(
        channel="web", direction=direction, kind="message", occurred_at=datetime.now(UTC),
        customer_id=customer_id, identifiers=idents, content="hi", verified=verified,
    )  # fmt: skip
    return recording.Item(cmd, "")


async def record(pool: asyncpg.Pool, *items: recording.Item) -> list[dict[str, Any]]:
    return await recording.record_interactions(pool, store, vault, "/test", list(items))


async def types_of(pool: asyncpg.Pool, customer_id: str) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT type FROM events WHERE subject = $1 ORDER BY time, event_id", customer_id)
    return [r["type"] for r in rows]


async def trust_of(pool: asyncpg.Pool, ident: domain.Ident) -> tuple[str, str] | None:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT customer_id, trust FROM customer_identifiers WHERE value = $1", vault.index(ident)
        )
    return (rows[0]["customer_id"], rows[0]["trust"]) if rows else None


async def merged_into(pool: asyncpg.Pool, customer_id: str) -> str | None:
    async with pool.acquire() as conn:
        result: str | None = await conn.fetchval(
            "SELECT merged_into FROM customers WHERE customer_id = $1", customer_id
        )
    return result


async def two_customers(pool: asyncpg.Pool) -> tuple[str, str, domain.Ident, domain.Ident]:
    run = uuid.uuid4().hex[:8]
    a, b = email(f"a-{run}"), email(f"b-{run}")
    [first] = await record(pool, claim(a, verified=True))
    [second] = await record(pool, claim(b, verified=True))
    return first["customer_id"], second["customer_id"], a, b


async def test_a_claimed_address_on_a_customer_id_stays_claimed(pool: asyncpg.Pool) -> None:
    victim, _, victim_mail, _ = await two_customers(pool)
    attacker = email(f"mallory-{uuid.uuid4().hex[:8]}")
    [answer] = await record(pool, claim(attacker, customer_id=victim))
    assert answer["customer_id"] == victim
    assert await trust_of(pool, attacker) == (victim, "claimed")
    assert await trust_of(pool, victim_mail) == (victim, "verified")
    profile = await handlers.get_customer(pool, vault, victim)
    assert {(i["value"], i["trust"]) for i in profile["identifiers"]} == {
        (victim_mail.value, "verified"),
        (attacker.value, "claimed"),
    }


async def test_a_claim_naming_two_customers_suggests_once_and_merges_nothing(pool: asyncpg.Pool) -> None:
    older, younger, a, b = await two_customers(pool)
    for _ in range(3):  # asked again and again: one suggestion
        [answer] = await record(pool, claim(a, b))
        assert answer["customer_id"] == older
    assert await merged_into(pool, younger) is None
    [suggestion] = await suggestions.list_suggestions(pool, vault, "pending", younger, 10)
    assert (suggestion["survivor_id"], suggestion["merged_id"]) == (older, younger)
    assert suggestion["linked_by"] == {"kind": "email", "value": b.value, "channel": None}
    assert (await types_of(pool, older)).count(MERGE_SUGGESTED) == 1
    assert (await types_of(pool, younger)).count(MERGE_SUGGESTED) == 1
    assert CUSTOMER_MERGED not in await types_of(pool, older)


async def test_concurrent_claims_never_merge_and_suggest_each_pair_once(pool: asyncpg.Pool) -> None:
    run = uuid.uuid4().hex[:8]
    mails = [email(f"c{n}-{run}") for n in range(4)]
    ids = [(await record(pool, claim(m, verified=True)))[0]["customer_id"] for m in mails]
    pairs = [(mails[i], mails[(i + 1) % 4]) for i in range(4)] * 3  # every pair three times, all at once
    await asyncio.gather(*(record(pool, claim(x, y)) for x, y in pairs))
    assert [await merged_into(pool, c) for c in ids] == [None] * 4
    found = await suggestions.list_suggestions(pool, vault, "pending", None, 200)
    ours = {frozenset((s["survivor_id"], s["merged_id"])) for s in found if s["survivor_id"] in ids}
    assert len(ours) == 4 and len([s for s in found if s["survivor_id"] in ids]) == 4


async def test_a_batch_of_claims_suggests_and_links_as_claimed(pool: asyncpg.Pool) -> None:
    older, younger, a, b = await two_customers(pool)
    new = email(f"new-{uuid.uuid4().hex[:8]}")
    answers = await record(pool, claim(a, b), claim(b, a), claim(new, customer_id=younger))
    assert [x["customer_id"] for x in answers] == [older, older, younger]
    assert await trust_of(pool, new) == (younger, "claimed")
    assert len(await suggestions.list_suggestions(pool, vault, "pending", older, 10)) == 1
    assert await merged_into(pool, younger) is None


async def test_a_verifying_request_still_merges_and_verifies(pool: asyncpg.Pool) -> None:
    older, younger, a, b = await two_customers(pool)
    extra = email(f"x-{uuid.uuid4().hex[:8]}")
    await record(pool, claim(extra, customer_id=older))
    [answer] = await record(pool, claim(a, b, extra, verified=True))
    assert answer["customer_id"] == older and await merged_into(pool, younger) == older
    assert await trust_of(pool, extra) == (older, "verified")
    assert IDENTIFIERS_VERIFIED in await types_of(pool, older)


async def test_accepting_a_suggestion_merges_with_the_agents_reason(pool: asyncpg.Pool) -> None:
    older, younger, a, b = await two_customers(pool)
    await record(pool, claim(a, b))
    [suggestion] = await suggestions.list_suggestions(pool, vault, "pending", older, 10)
    sid = suggestion["suggestion_id"]
    out = await suggestions.decide_suggestion(pool, store, vault, "/test", sid, True, "agent-key")
    assert (out["status"], out["survivor_id"], out["merged_id"]) == ("accepted", older, younger)
    assert await merged_into(pool, younger) == older
    async with pool.acquire() as conn:
        merged = await conn.fetchrow("SELECT data FROM events WHERE type = $1 AND subject = $2",
                                     CUSTOMER_MERGED, older)  # fmt: skip
    assert merged is not None
    assert f"accepted merge suggestion {sid}" in str(merged["data"])
    types = await types_of(pool, older)
    assert types.index(MERGE_SUGGESTION_DECIDED) < types.index(CUSTOMER_MERGED)
    [listed] = await suggestions.list_suggestions(pool, vault, "accepted", older, 10)
    assert (listed["status"], listed["decided_by"]) == ("accepted", "agent-key")
    with pytest.raises(suggestions.SuggestionDecided):
        await suggestions.decide_suggestion(pool, store, vault, "/test", sid, False, "agent-key")


async def test_a_rejected_pair_is_not_suggested_again(pool: asyncpg.Pool) -> None:
    older, younger, a, b = await two_customers(pool)
    await record(pool, claim(a, b))
    [suggestion] = await suggestions.list_suggestions(pool, vault, "pending", older, 10)
    out = await suggestions.decide_suggestion(pool, store, vault, "/test", suggestion["suggestion_id"], False, "k")
    assert out["status"] == "rejected" and len(out["event_ids"]) == 2  # on both timelines
    await record(pool, claim(b, a))
    assert await suggestions.list_suggestions(pool, vault, "pending", older, 10) == []
    assert await merged_into(pool, younger) is None
    with pytest.raises(suggestions.SuggestionNotFound):
        await suggestions.decide_suggestion(pool, store, vault, "/test", str(uuid.uuid4()), True, "k")


async def test_an_agent_verifies_a_claimed_identifier(pool: asyncpg.Pool) -> None:
    customer, _, _, others_mail = await two_customers(pool)
    claimed = email(f"claimed-{uuid.uuid4().hex[:8]}")
    await record(pool, claim(claimed, customer_id=customer))
    assert await trust_of(pool, claimed) == (customer, "claimed")
    [event_id] = await handlers.verify_identifiers(pool, store, vault, "/test", customer, [claimed])
    assert event_id and await trust_of(pool, claimed) == (customer, "verified")
    assert await handlers.verify_identifiers(pool, store, vault, "/test", customer, [claimed]) == []
    with pytest.raises(handlers.IdentifierNotFound):  # another customer's address is not theirs to verify
        await handlers.verify_identifiers(pool, store, vault, "/test", customer, [others_mail])


async def test_erasure_forgets_the_suggestions_naming_the_customer(pool: asyncpg.Pool) -> None:
    older, younger, a, b = await two_customers(pool)
    await record(pool, claim(a, b))
    [suggestion] = await suggestions.list_suggestions(pool, vault, "pending", older, 10)
    await handlers.erase_customer(pool, store, vault, "/test", younger)
    assert await suggestions.list_suggestions(pool, vault, None, older, 10) == []
    with pytest.raises(suggestions.SuggestionNotFound):
        await suggestions.decide_suggestion(pool, store, vault, "/test", suggestion["suggestion_id"], True, "k")
