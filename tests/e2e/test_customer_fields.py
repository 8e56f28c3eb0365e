"""Typed fields and tags on customers (issue 29), on the real stack: definitions and their
versions, setting and clearing values, 422s naming the field, tags, filters with keyset pages, a
merged id's 308 and the survivor's view, a personal field unreadable after erasure (in intake's
answer and in the export), and the projection rebuilt from intake's events."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from crm_client import AsyncClient, ValidationFailed
from crmtools.devstack import Stack
from eventkit.db import connect

from tests.conftest import ADMIN_KEY, api_client
from tests.e2e.helpers import interaction_body, make_key, wait_applied
from tests.e2e.test_operations import crm

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(timeout=30) as c:
        yield c


@pytest.fixture
def intake(stack: Stack) -> str:
    return stack.services["intake"].url


async def new_customer(client: httpx.AsyncClient, intake: str, **customer: Any) -> str:
    body = interaction_body(f"fields-{uuid.uuid4().hex[:10]}@example.com")
    if customer:
        body["customer"] = customer
    r = await client.post(f"{intake}/v1/interactions", json=body)
    assert r.status_code == 202, r.text
    customer_id: str = r.json()["customer_id"]
    return customer_id


async def define(client: httpx.AsyncClient, intake: str, status: int = 201, **definition: Any) -> dict[str, Any]:
    r = await client.post(f"{intake}/v1/admin/fields", json=definition)
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


async def put_fields(client: httpx.AsyncClient, intake: str, customer_id: str, values: dict[str, Any]) -> Any:
    return await client.put(f"{intake}/v1/customers/{customer_id}/fields", json={"values": values})


async def test_definitions_are_versioned_and_the_type_is_fixed(
    client: httpx.AsyncClient, intake: str, stack: Stack
) -> None:
    name = unique("failure")
    first = await define(client, intake, name=name, type="enum", values=["wifi", "power", "screen"])
    assert (first["version"], first["values"], len(first["event_ids"])) == (1, ["wifi", "power", "screen"], 1)
    again = await define(client, intake, 200, name=name, type="enum", values=["wifi", "power", "screen"])
    assert (again["version"], again["event_ids"]) == (1, [])  # the same definition: nothing new
    second = await define(client, intake, 200, name=name, type="enum", values=["wifi", "power"], label="Failure")
    assert (second["version"], second["label"], len(second["event_ids"])) == (2, "Failure", 1)
    r = await client.post(f"{intake}/v1/admin/fields", json={"name": name, "type": "text"})
    assert (r.status_code, r.json()["error"]) == (409, "field_type_fixed"), r.text
    for case_only in ({"case_types": ["billing"]}, {"required_to_resolve": True}):
        r = await client.post(f"{intake}/v1/admin/fields", json={"name": unique("c"), "type": "text", **case_only})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == f"body.{next(iter(case_only))}"
    cid = await new_customer(client, intake)
    assert (await put_fields(client, intake, cid, {name: "power"})).status_code == 200
    await define(client, intake, 200, name=name, type="enum", values=["wifi"], label="Failure")  # version 3
    assert (await client.get(f"{intake}/v1/customers/{cid}")).json()["fields"] == {name: "power"}  # still readable
    r = await put_fields(client, intake, cid, {name: "power"})  # but not set anew
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, f"values.{name}"), r.text
    ops = (await make_key(stack, "fields ops", ["ops"], readers=["intake"]))["key"]
    async with api_client(ops, timeout=30) as reader:
        listed = (await reader.get(f"{intake}/v1/admin/fields")).json()["items"]
    mine = next(d for d in listed if d["name"] == name)
    assert (mine["version"], mine["values"], mine["type"]) == (3, ["wifi"], "enum")


async def test_set_clear_and_validate_values(client: httpx.AsyncClient, intake: str, stack: Stack) -> None:
    model, bought, count, ok = unique("model"), unique("bought"), unique("count"), unique("ok")
    await define(client, intake, name=model, type="text")
    await define(client, intake, name=bought, type="date")
    await define(client, intake, name=count, type="number")
    await define(client, intake, name=ok, type="bool")
    cid = await new_customer(client, intake)
    values = {model: "RX-200", bought: "2026-03-14", count: 2.0, ok: True}
    r = await put_fields(client, intake, cid, values)
    assert r.status_code == 200, r.text
    assert len(r.json()["event_ids"]) == 1
    assert r.json()["fields"] == {model: "RX-200", bought: "2026-03-14", count: 2, ok: True}
    # published like intake's other events: every service's timeline of the customer has it
    pages = await wait_applied(client, stack, cid, r.json()["event_ids"][0])
    assert all(r.json()["event_ids"][0] in ids for ids in pages.values())
    again = await put_fields(client, intake, cid, values)  # idempotent: same body, same state, no event
    assert (again.status_code, again.json()["event_ids"]) == (200, [])
    r = await put_fields(client, intake, cid, {model: None})  # null clears; the others stay
    assert r.json()["fields"] == {bought: "2026-03-14", count: 2, ok: True}
    shown = (await client.get(f"{intake}/v1/customers/{cid}")).json()
    assert shown["fields"] == {bought: "2026-03-14", count: 2, ok: True}
    bad = {
        unique("nobody"): "x",
        bought: "14/03/2026",
        count: "two",
        ok: "yes",
        model: "",
    }
    for name, value in bad.items():
        r = await put_fields(client, intake, cid, {name: value})
        assert r.status_code == 422, (name, r.text)
        assert r.json()["errors"][0]["field"] == f"values.{name}", r.text
        assert r.json()["errors"][0]["reason"]
    assert (await put_fields(client, intake, "nobody-such", {model: "x"})).status_code == 404


async def test_tags_are_normalised_and_each_change_is_an_event(client: httpx.AsyncClient, intake: str) -> None:
    cid = await new_customer(client, intake)
    url = f"{intake}/v1/customers/{cid}/tags"
    r = await client.post(url, json={"add": ["  Repeat Caller ", "vip"]})
    assert r.status_code == 200, r.text
    assert (r.json()["tags"], len(r.json()["event_ids"])) == (["repeat-caller", "vip"], 1)
    r = await client.post(url, json={"add": ["VIP"], "remove": ["repeat caller"]})
    assert (r.json()["tags"], len(r.json()["event_ids"])) == (["vip"], 1)
    r = await client.post(url, json={"add": ["vip"]})
    assert r.json()["event_ids"] == []
    r = await client.post(url, json={"add": ["ok", "no/slash"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "add.1", r.text
    r = await client.post(url, json={"add": [f"t{n}" for n in range(50)]})
    assert r.status_code == 422, r.text  # 51 with vip
    assert (await client.get(f"{intake}/v1/customers/{cid}")).json()["tags"] == ["vip"]
    # who changed them is in intake's audit log
    audit = (await client.get(f"{intake}/v1/admin/audit", params={"customer_id": cid})).json()["items"]
    assert {(a["method"], a["route"], a["status"]) for a in audit} >= {
        ("POST", "/v1/customers/{customer_id}/tags", 200),
        ("POST", "/v1/customers/{customer_id}/tags", 422),
    }
    assert all(a["key_id"] for a in audit)


async def test_filters_page_by_keyset(client: httpx.AsyncClient, intake: str) -> None:
    product, secret = unique("product"), unique("secret")
    await define(client, intake, name=product, type="enum", values=["rx", "tv"])
    await define(client, intake, name=secret, type="text", personal=True)
    tag = unique("batch").replace("_", "-")
    rx = []
    for n in range(5):
        cid = await new_customer(client, intake)
        assert (await put_fields(client, intake, cid, {product: "rx" if n < 4 else "tv"})).status_code == 200
        if n % 2 == 0:
            assert (await client.post(f"{intake}/v1/customers/{cid}/tags", json={"add": [tag]})).status_code == 200
        if n < 4:
            rx.append(cid)
    seen: list[str] = []
    params: dict[str, Any] = {f"field.{product}": "rx", "limit": 3}
    while True:
        page = await client.get(f"{intake}/v1/customers", params=params)
        assert page.status_code == 200, page.text
        seen.extend(c["customer_id"] for c in page.json()["items"])
        if not page.json()["next_before"]:
            break
        params["before"] = page.json()["next_before"]
    assert seen == sorted(rx, reverse=True)
    both = await client.get(f"{intake}/v1/customers", params={f"field.{product}": "rx", "tag": tag})
    assert [c["customer_id"] for c in both.json()["items"]] == sorted(rx[0::2], reverse=True)
    for params, field, reason in (
        ({f"field.{secret}": "x"}, f"query.field.{secret}", "personal_field"),
        ({f"field.{product}": "radio"}, f"query.field.{product}", None),
        ({f"field.{unique('none')}": "x"}, None, None),
        ({"tag": "a/b"}, "query.tag", None),
        ({"tag": tag, "before": "not-a-cursor"}, "query.before", None),
    ):
        r = await client.get(f"{intake}/v1/customers", params=params)
        assert r.status_code == 422, (params, r.text)
        error = r.json()["errors"][0]
        if field:
            assert error["field"] == field, r.text
        if reason:
            assert error["reason"] == reason, r.text


async def test_a_merged_id_redirects_and_the_survivor_shows_its_values(client: httpx.AsyncClient, intake: str) -> None:
    colour, size = unique("colour"), unique("size")
    await define(client, intake, name=colour, type="text")
    await define(client, intake, name=size, type="text")
    tag = unique("m").replace("_", "-")
    email, phone = f"premerge.{uuid.uuid4().hex[:6]}@example.com", f"+1415557{uuid.uuid4().int % 9000 + 1000}"
    survivor = await new_customer(client, intake, email=email)
    merged = await new_customer(client, intake, phone=phone)
    assert (await put_fields(client, intake, survivor, {colour: "red"})).status_code == 200
    assert (await put_fields(client, intake, merged, {colour: "blue", size: "xl"})).status_code == 200
    assert (await client.post(f"{intake}/v1/customers/{merged}/tags", json={"add": [tag]})).status_code == 200
    assert await new_customer(client, intake, email=email, phone=phone) == survivor
    r = await put_fields(client, intake, merged, {colour: "green"})
    assert r.status_code == 308 and r.headers["location"].endswith(f"/v1/customers/{survivor}/fields"), r.text
    r = await client.post(f"{intake}/v1/customers/{merged}/tags", json={"add": ["x"]})
    assert r.status_code == 308
    shown = (await client.get(f"{intake}/v1/customers/{survivor}")).json()
    assert shown["fields"] == {colour: "red", size: "xl"}  # its own first, the merged id's for the rest
    assert shown["tags"] == [tag]
    found = await client.get(f"{intake}/v1/customers", params={f"field.{size}": "xl", "tag": tag})
    assert [c["customer_id"] for c in found.json()["items"]] == [survivor]
    assert (await client.get(f"{intake}/v1/customers", params={f"field.{colour}": "blue"})).json()["items"] == []
    # clearing on the survivor hides the merged id's value; removing a tag hides its tag
    r = await put_fields(client, intake, survivor, {size: None})
    assert r.json()["fields"] == {colour: "red"}, r.text
    r = await client.post(f"{intake}/v1/customers/{survivor}/tags", json={"remove": [tag]})
    assert r.json()["tags"] == [], r.text
    assert (await client.get(f"{intake}/v1/customers", params={"tag": tag})).json()["items"] == []


async def test_a_personal_field_is_erased_with_the_customer(
    client: httpx.AsyncClient, intake: str, stack: Stack
) -> None:
    note, plan = unique("home_note"), unique("plan")
    await define(client, intake, name=note, type="text", personal=True)
    await define(client, intake, name=plan, type="enum", values=["basic", "gold"])
    cid = await new_customer(client, intake)
    secret = f"ring Bartholomew{uuid.uuid4().hex[:8]} after six"
    r = await put_fields(client, intake, cid, {note: secret, plan: "gold"})
    assert r.json()["fields"] == {note: secret, plan: "gold"}, r.text
    conn = await asyncpg.connect(stack.postgres.dsn("crm_intake"))
    try:  # sealed from the start: neither the projection nor the event holds the text
        assert await conn.fetchval("SELECT count(*) FROM customer_field_values WHERE sealed LIKE 'v1.%'") >= 1
        hits = await conn.fetchval(
            "SELECT count(*) FROM events e, customer_field_values v"
            " WHERE e.data::text LIKE $1 OR v.value::text LIKE $1 OR v.sealed LIKE $1",
            f"%{secret.split()[1]}%",
        )
        assert hits == 0
    finally:
        await conn.close()
    export = await client.get(f"{intake}/v1/customers/{cid}/export")
    assert export.json()["intake"]["customer"]["fields"][note] == secret, export.text
    r = await client.post(f"{intake}/v1/customers/{cid}/erasure")
    assert r.status_code == 202, r.text
    await wait_applied(client, stack, cid, r.json()["event_id"])  # every service has forgotten the key
    shown = (await client.get(f"{intake}/v1/customers/{cid}")).json()
    assert shown["fields"] == {note: "[erased]", plan: "gold"}
    export = await client.get(f"{intake}/v1/customers/{cid}/export")
    assert export.status_code == 200, export.text
    assert export.json()["intake"]["customer"]["fields"] == {note: "[erased]", plan: "gold"}
    assert secret.split()[1] not in export.text
    r = await put_fields(client, intake, cid, {note: "new"})
    assert (r.status_code, r.json()["error"]) == (410, "customer_erased"), r.text


async def test_the_projection_is_rebuilt_from_intakes_events(
    client: httpx.AsyncClient, intake: str, stack: Stack
) -> None:
    name = unique("rebuilt")
    await define(client, intake, name=name, type="number")
    await define(client, intake, 200, name=name, type="number", label="Rebuilt")
    cid = await new_customer(client, intake)
    await put_fields(client, intake, cid, {name: 7})
    await put_fields(client, intake, cid, {name: 8})
    await client.post(f"{intake}/v1/customers/{cid}/tags", json={"add": ["a", "b"]})
    await client.post(f"{intake}/v1/customers/{cid}/tags", json={"remove": ["a"]})
    before = (await client.get(f"{intake}/v1/customers/{cid}")).json()
    queries = [
        "SELECT name, version, definition, defined_by FROM customer_field_definitions ORDER BY name",
        "SELECT customer_id, name, value, value_key, sealed, updated_at FROM customer_field_values ORDER BY 1, 2",
        "SELECT customer_id, tag, present, updated_at FROM customer_tags ORDER BY 1, 2",
    ]
    conn = await connect(stack.postgres.dsn("crm_intake"))
    try:
        tables = [await conn.fetch(q) for q in queries]
        await conn.execute("DELETE FROM customer_tags; UPDATE customer_field_values SET value = '0'")
        result = await asyncio.to_thread(crm, stack, "replay", "intake")
        assert result.returncode == 0, result.stderr
        assert "rebuilt intake's customer fields and tags from" in result.stdout
        assert [await conn.fetch(q) for q in queries] == tables
    finally:
        await conn.close()
    assert (await client.get(f"{intake}/v1/customers/{cid}")).json() == before
    assert before["fields"] == {name: 8} and before["tags"] == ["b"]


async def test_the_python_client_sets_fields_and_tags(client: httpx.AsyncClient, intake: str) -> None:
    model = unique("client_model")
    await define(client, intake, name=model, type="text")
    cid = await new_customer(client, intake)
    async with AsyncClient(intake, ADMIN_KEY) as crm:
        changed = await crm.set_customer_fields(cid, {model: "RX-9"})
        assert (changed.fields, len(changed.event_ids)) == ({model: "RX-9"}, 1)
        tagged = await crm.change_customer_tags(cid, add=["Gold Plan"])
        assert tagged.tags == ["gold-plan"]
        shown = await crm.customer(cid)
        assert (shown.fields, shown.tags) == ({model: "RX-9"}, ["gold-plan"])
        with pytest.raises(ValidationFailed) as caught:
            await crm.set_customer_fields(cid, {unique("nobody"): 1})
        assert caught.value.errors[0].field.startswith("values.")
