"""Customer fields and tags against intake's database: a survivor's view and the filters agree
(own values first, then merged ids', a survivor's clearing hides theirs), pages by keyset, and
the projection rebuilt from the stored events is the one written with them."""

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from intake import field_handlers, field_store
from intake.domain import InvalidInput

from contracts.fields import FieldDefinition
from tests.intake.conftest import store, vault

SOURCE = "/test/intake"


async def customers(pool: asyncpg.Pool, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO customers (customer_id) SELECT unnest($1::text[])",
            ids,
        )
    return ids


async def merge(pool: asyncpg.Pool, survivor: str, merged: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE customers SET merged_into = $1, merged_at = $3 WHERE customer_id = $2",
            survivor,
            merged,
            datetime.now(UTC),
        )


async def define(pool: asyncpg.Pool, **definition: object) -> str:
    name = f"{definition.pop('prefix', 'f')}_{uuid.uuid4().hex[:8]}"
    await field_handlers.define_field(
        pool, store, SOURCE, FieldDefinition.model_validate({"name": name, **definition}), "admin"
    )
    return name


async def listed(pool: asyncpg.Pool, fields: list[tuple[str, str]], tags: list[str], limit: int = 50) -> list[str]:
    out: list[str] = []
    before = None
    async with pool.acquire() as conn:
        while True:
            ids, cursor = await field_store.filtered_customers(conn, fields, tags, limit, before)
            out.extend(ids)
            if cursor is None:
                return out
            before = field_store.decode_cursor(cursor)


async def test_the_survivors_view_and_filters_take_its_own_values_first(pool: asyncpg.Pool) -> None:
    colour, size = await define(pool, type="text"), await define(pool, type="text")
    survivor, merged, other = await customers(pool, 3)
    await field_handlers.set_fields(pool, store, vault, SOURCE, survivor, {colour: "red"}, "agent")
    await field_handlers.set_fields(pool, store, vault, SOURCE, merged, {colour: "blue", size: "xl"}, "agent")
    await field_handlers.set_fields(pool, store, vault, SOURCE, other, {colour: "blue"}, "agent")
    await field_handlers.change_tags(pool, store, SOURCE, merged, ["gold"], [], "agent")
    await merge(pool, survivor, merged)
    async with pool.acquire() as conn:
        view = await field_store.view(conn, vault, survivor, [merged])
    assert view == {"fields": {colour: "red", size: "xl"}, "tags": ["gold"]}
    assert await listed(pool, [(colour, "blue")], []) == [other]  # the merged id's blue is hidden
    assert await listed(pool, [(size, "xl")], ["gold"]) == [survivor]
    await field_handlers.set_fields(pool, store, vault, SOURCE, survivor, {size: None}, "agent")
    await field_handlers.change_tags(pool, store, SOURCE, survivor, [], ["gold"], "agent")
    async with pool.acquire() as conn:
        view = await field_store.view(conn, vault, survivor, [merged])
    assert view == {"fields": {colour: "red"}, "tags": []}
    assert await listed(pool, [(size, "xl")], []) == []
    assert await listed(pool, [], ["gold"]) == []


async def test_pages_hold_every_match_once_in_id_order(pool: asyncpg.Pool) -> None:
    plan = await define(pool, type="enum", values=["basic", "gold"])
    ids = await customers(pool, 23)
    for n, cid in enumerate(ids):
        await field_handlers.set_fields(pool, store, vault, SOURCE, cid, {plan: "gold" if n % 3 else "basic"}, "a")
    gold = sorted((cid for n, cid in enumerate(ids) if n % 3), reverse=True)
    assert await listed(pool, [(plan, "gold")], [], limit=4) == gold
    assert await listed(pool, [(plan, "gold")], [], limit=50) == gold


async def test_the_rebuilt_projection_is_the_one_written_with_the_events(pool: asyncpg.Pool) -> None:
    secret = await define(pool, type="text", personal=True, prefix="secret")
    count = await define(pool, type="number")
    (cid,) = await customers(pool, 1)
    await field_handlers.set_fields(pool, store, vault, SOURCE, cid, {secret: "gate 4", count: 3}, "a")
    await field_handlers.set_fields(pool, store, vault, SOURCE, cid, {count: None}, "a")
    await field_handlers.change_tags(pool, store, SOURCE, cid, ["a", "b"], [], "a")
    await field_handlers.change_tags(pool, store, SOURCE, cid, [], ["a"], "a")
    with pytest.raises(InvalidInput):
        await field_handlers.set_fields(pool, store, vault, SOURCE, cid, {count: "x"}, "a")
    queries = [
        "SELECT * FROM customer_field_definitions ORDER BY name",
        "SELECT * FROM customer_field_values ORDER BY customer_id, name",
        "SELECT * FROM customer_tags ORDER BY customer_id, tag",
    ]
    async with pool.acquire() as conn:
        written = [await conn.fetch(q) for q in queries]
        async with conn.transaction():
            await field_store.rebuild(conn, batch=2)
        assert [await conn.fetch(q) for q in queries] == written
        view = await field_store.view(conn, vault, cid, [])
    assert view == {"fields": {secret: "gate 4"}, "tags": ["b"]}


async def test_between_merged_ids_the_latest_value_counts(pool: asyncpg.Pool) -> None:
    colour = await define(pool, type="text")
    survivor, first, second = await customers(pool, 3)
    await field_handlers.set_fields(pool, store, vault, SOURCE, first, {colour: "blue"}, "agent")
    await field_handlers.set_fields(pool, store, vault, SOURCE, second, {colour: "green"}, "agent")
    await merge(pool, survivor, first)
    await merge(pool, survivor, second)
    async with pool.acquire() as conn:
        assert (await field_store.view(conn, vault, survivor, [first, second]))["fields"] == {colour: "green"}
    assert await listed(pool, [(colour, "green")], []) == [survivor]
    assert await listed(pool, [(colour, "blue")], []) == []
