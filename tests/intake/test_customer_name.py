"""The customer's display name: sealed like other personal data, found by whole words, erased with the customer."""

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from crmtools.infra import EmbeddedPostgres
from eventkit import crypto
from eventkit.eventstore import EventStore
from intake import customer_events, domain, handlers, recording, store
from intake.vault import Vault
from servicekit.keyring import KeyErased

from contracts.events import PROFILE_CHANGED
from tests.conftest import fresh_database

MIGRATIONS = [Path(domain.__file__).parent / "migrations"]
events = EventStore("intake-name-test")
vault = Vault(os.urandom(32))


@pytest.fixture(scope="module")
async def intake_dsn(postgres: EmbeddedPostgres) -> str:
    return await fresh_database(postgres, MIGRATIONS)


async def new_customer(pool: asyncpg.Pool) -> str:
    cmd = domain.RecordInteraction(
        channel="email",
        direction="inbound",
        kind="message",
        occurred_at=datetime.now(UTC),
        identifiers=(domain.normalise_email(f"{uuid.uuid4().hex[:10]}@example.com"),),
        content="hello",
    )
    answer = await recording.record_interactions(pool, events, vault, "/test", [recording.Item(cmd, cmd.content or "")])
    return str(answer[0]["customer_id"])


async def find(pool: asyncpg.Pool, text: str) -> list[str]:
    async with pool.acquire() as conn:
        return await store.find_customers(conn, vault, [], None, 10, domain.name_tokens(text))


async def profile_events(pool: asyncpg.Pool, customer_id: str) -> list[dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT data FROM events WHERE type = $1 AND stream_id = $2 ORDER BY position",
            PROFILE_CHANGED,
            customer_events.stream_of(customer_id),
        )
    return [r["data"] for r in rows]


def test_names_are_tidied_and_split_into_case_folded_words() -> None:
    assert domain.normalise_name("  Ada \t Lovelace ") == "Ada Lovelace"
    assert domain.normalise_name("   ") is None
    assert domain.name_tokens("Ada  LOVELACE-Byron") == ["ada", "byron", "lovelace"]
    assert domain.name_tokens("Zoë Straße") == ["strasse", "zoë"]
    with pytest.raises(domain.InvalidInput):
        domain.normalise_name("Ada\x00Lovelace")
    with pytest.raises(domain.InvalidInput):
        domain.normalise_name("x" * (domain.MAX_NAME_CHARS + 1))


async def test_a_name_is_found_by_its_whole_words_and_stored_only_sealed(pool: asyncpg.Pool) -> None:
    ada, other = await new_customer(pool), await new_customer(pool)
    first = await handlers.change_profile(pool, events, vault, "/test", ada, "Ada Lovelace")
    assert len(first) == 1
    await handlers.change_profile(pool, events, vault, "/test", other, "Ada Byron")
    assert await handlers.change_profile(pool, events, vault, "/test", ada, "Ada Lovelace") == []  # no change

    assert (await handlers.get_customer(pool, vault, ada))["name"] == "Ada Lovelace"
    assert await find(pool, "lovelace") == [ada]
    assert await find(pool, "ADA lovelace") == [ada]
    assert sorted(await find(pool, "ada")) == sorted([ada, other])
    assert await find(pool, "ada turing") == []
    assert await find(pool, "lovel") == []  # whole words only

    # Nowhere in intake's tables or events is the name readable.
    async with pool.acquire() as conn:
        for table in ("customer_names", "customer_name_tokens", "events"):
            dump = await conn.fetchval(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
            assert "lovelace" not in dump.lower(), table
    [data] = await profile_events(pool, ada)
    assert data["name"] == crypto.SEALED
    assert data["sealed"]["key"] == ada and set(data["sealed"]["fields"]) == {"name"}
    async with pool.acquire() as conn:
        keys, _ = await vault.keys(conn, [ada], create=False)
    assert crypto.unseal(data, keys)["name"] == "Ada Lovelace"

    # Clearing the name: it is gone from the profile and from search.
    assert len(await handlers.change_profile(pool, events, vault, "/test", ada, None)) == 1
    assert (await handlers.get_customer(pool, vault, ada))["name"] is None
    assert await find(pool, "lovelace") == []


async def test_erasure_makes_the_name_unreadable_and_unfindable(pool: asyncpg.Pool) -> None:
    grace = await new_customer(pool)
    await handlers.change_profile(pool, events, vault, "/test", grace, "Grace Hopper")
    assert await find(pool, "grace hopper") == [grace]

    await handlers.erase_customer(pool, events, vault, "/test", grace)

    assert await find(pool, "hopper") == []
    assert (await handlers.get_customer(pool, vault, grace))["name"] is None
    [data] = await profile_events(pool, grace)
    async with pool.acquire() as conn:
        keys, erased = await vault.keys(conn, [grace], create=False)
    assert erased == {grace}
    assert crypto.unseal(data, keys)["name"] == crypto.ERASED
    with pytest.raises(KeyErased):  # 410 customer_erased
        await handlers.change_profile(pool, events, vault, "/test", grace, "Grace")


async def test_a_merged_customers_name_finds_the_survivor(pool: asyncpg.Pool) -> None:
    emails = [f"{uuid.uuid4().hex[:10]}@example.com" for _ in range(2)]
    ids = []
    for email in emails:
        cmd = domain.RecordInteraction(
            channel="email", direction="inbound", kind="message", occurred_at=datetime.now(UTC),
            identifiers=(domain.normalise_email(email),), verified=True,
        )  # fmt: skip
        ids.append((await recording.record_interactions(pool, events, vault, "/t", [recording.Item(cmd, email)]))[0])
    older, newer = ids[0]["customer_id"], ids[1]["customer_id"]
    await handlers.change_profile(pool, events, vault, "/test", newer, "Katherine Johnson")
    both = domain.RecordInteraction(
        channel="email", direction="inbound", kind="message", occurred_at=datetime.now(UTC),
        identifiers=tuple(domain.normalise_email(e) for e in emails), verified=True,
    )  # fmt: skip
    merged = await recording.record_interactions(pool, events, vault, "/t", [recording.Item(both, "both")])
    assert merged[0]["customer_id"] == older  # the oldest survives
    assert await find(pool, "katherine johnson") == [older]
