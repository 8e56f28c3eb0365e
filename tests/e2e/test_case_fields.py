"""Typed fields and tags on cases (issue 29), end to end on the real stack (intake and case):
admins define and redefine fields, agents set and clear values under If-Match and change tags,
the case list filters on both with keyset pages as before, a field required to resolve blocks
the resolution with a 409, a personal value is unreadable after the customer's erasure, and
`crm replay case` makes the definitions, values and tags again from case's events."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client, eventually, running_stack
from tests.e2e.helpers import make_key
from tests.e2e.test_operations import crm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("case-fields-stack"), {}, services=("intake", "case")) as s:
        yield s


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(timeout=30) as c:
        yield c


def urls(stack: Stack) -> tuple[str, str]:
    return stack.services["intake"].url, stack.services["case"].url


async def new_customer(stack: Stack, client: httpx.AsyncClient) -> str:
    """A customer case knows (its first interaction applied there)."""
    intake, case = urls(stack)
    body = {
        "customer": {"email": f"fields-{uuid.uuid4().hex[:10]}@example.com"},
        "channel": "web",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": "my washing machine broke",
    }
    r = await client.post(f"{intake}/v1/interactions", json=body)
    assert r.status_code == 202, r.text
    customer, event_id = r.json()["customer_id"], r.json()["event_id"]
    w = await client.get(
        f"{case}/v1/customers/{customer}/timeline", params={"wait_for": event_id, "timeout_ms": 30_000}
    )
    assert w.status_code == 200, w.text
    return str(customer)


async def new_case(stack: Stack, client: httpx.AsyncClient, customer: str, type_: str = "complaint") -> dict[str, Any]:
    r = await client.post(f"{urls(stack)[1]}/v1/cases", json={"customer_id": customer, "type": type_})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def define(client: httpx.AsyncClient, case: str, **definition: Any) -> httpx.Response:
    return await client.post(f"{case}/v1/admin/fields", json=definition)


async def set_fields(
    client: httpx.AsyncClient, case: str, case_id: str, version: int | None, values: dict[str, Any]
) -> httpx.Response:
    headers = {"If-Match": f'"{version}"'} if version is not None else {}
    return await client.post(f"{case}/v1/cases/{case_id}/fields", json={"values": values}, headers=headers)


def fields_of(errors: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in errors.json()["errors"]}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_admins_define_and_redefine_fields_with_versions(stack: Stack, client: httpx.AsyncClient) -> None:
    case = urls(stack)[1]
    name = unique("failure")
    r = await define(client, case, name=name, type="enum", values=["motor", "pump"], label="Type of failure")
    assert r.status_code == 201, r.text
    assert (r.json()["version"], r.json()["values"], len(r.json()["event_ids"])) == (
        1,
        ["motor", "pump"],
        1,
    )
    r = await define(client, case, name=name, type="enum", values=["pump", "door"], label="Type of failure")
    assert (r.status_code, r.json()["version"], r.json()["values"]) == (200, 2, ["pump", "door"])
    again = await define(client, case, name=name, type="enum", values=["pump", "door"], label="Type of failure")
    assert (again.status_code, again.json()["version"], again.json()["event_ids"]) == (200, 2, [])

    r = await define(client, case, name=name, type="text")
    assert (r.status_code, r.json()["error"]) == (409, "field_type_fixed"), r.text
    r = await define(client, case, name=name, type="enum", values=["pump"], personal=True)
    assert (r.status_code, r.json()["error"]) == (409, "field_personal_fixed"), r.text
    for bad, field in [
        ({"name": "Bad Name", "type": "text"}, "name"),
        ({"name": "x", "type": "colour"}, "type"),
        ({"name": "x", "type": "enum"}, "body"),
        ({"name": "x", "type": "text", "values": ["a"]}, "body"),
        ({"name": "x", "type": "text", "case_types": ["nope"]}, "case_types.0"),
        ({"name": "x", "type": "text", "colour": "red"}, "colour"),
        ({"name": "x", "type": "text", "label": "a\x00b"}, "label"),
    ]:
        r = await client.post(f"{case}/v1/admin/fields", json=bad)
        assert r.status_code == 422 and r.json()["error"] == "validation_failed", (bad, r.text)
        assert any(e["field"].startswith(field) for e in r.json()["errors"]), (bad, r.text)

    # Agents and ops read the definitions (the console draws the panel); only admins define.
    agent = (await make_key(stack, "fields agent", ["agent"], readers=["case"]))["key"]
    async with api_client(agent, timeout=10) as as_agent:
        listed = await as_agent.get(f"{case}/v1/admin/fields")
        assert listed.status_code == 200, listed.text
        [row] = [f for f in listed.json()["items"] if f["name"] == name]
        assert (row["version"], row["values"]) == (2, ["pump", "door"])
        r = await as_agent.post(f"{case}/v1/admin/fields", json={"name": unique("x"), "type": "bool"})
        assert r.status_code == 403


async def test_agents_set_and_clear_fields_under_if_match(stack: Stack, client: httpx.AsyncClient) -> None:
    case = urls(stack)[1]
    model, bought, count, billing_only = unique("model"), unique("bought"), unique("repairs"), unique("invoice")
    for d in [
        {"name": model, "type": "enum", "values": ["a1", "b2"]},
        {"name": bought, "type": "date"},
        {"name": count, "type": "number"},
        {"name": billing_only, "type": "text", "case_types": ["billing"]},
    ]:
        assert (await define(client, case, **d)).status_code == 201
    customer = await new_customer(stack, client)
    opened = await new_case(stack, client, customer)
    case_id, version = opened["case_id"], opened["version"]
    assert (opened["fields"], opened["tags"]) == ({}, [])

    r = await set_fields(client, case, case_id, None, {model: "a1"})
    assert (r.status_code, r.json()["error"]) == (428, "precondition_required")
    r = await set_fields(client, case, case_id, version + 5, {model: "a1"})
    assert (r.status_code, r.json()["error"]) == (409, "concurrency_conflict")

    r = await set_fields(client, case, case_id, version, {model: "a1", bought: "2025-12-01", count: 2.0})
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {model: "a1", bought: "2025-12-01", count: 2}
    assert r.headers["etag"] == f'"{version + 1}"' and len(r.json()["event_ids"]) == 1
    version += 1

    # Published like every case event: on the customer's timeline in intake too.
    intake = urls(stack)[0]
    [event_id] = r.json()["event_ids"]
    w = await client.get(
        f"{intake}/v1/customers/{customer}/timeline", params={"wait_for": event_id, "timeout_ms": 30_000}
    )
    [published] = [e for e in w.json()["events"] if e["event_id"] == event_id]
    assert published["type"] == "crm.case.fields_set.v1" and published["data"]["values"][model] == "a1"

    # The same values again store nothing and keep the version.
    r = await set_fields(client, case, case_id, version, {model: "a1", count: 2})
    assert (r.status_code, r.json()["event_ids"], r.json()["version"]) == (200, [], version)

    r = await set_fields(
        client, case, case_id, version, {model: "z9", bought: "01.12.2025", count: "3", billing_only: "x", "nope": 1}
    )
    assert r.status_code == 422 and r.json()["error"] == "validation_failed"
    assert fields_of(r) == {
        f"values.{model}": "not one of the field's values",
        f"values.{bought}": "expected a date YYYY-MM-DD",
        f"values.{count}": "expected a number",
        f"values.{billing_only}": "the field does not apply to complaint cases",
        "values.nope": "unknown field",
    }
    r = await set_fields(client, case, case_id, version, {"Not A Name": 1})
    assert r.status_code == 422 and fields_of(r) == {"values": "a field name is a-z, 0-9 and _, starting with a letter"}

    r = await set_fields(client, case, case_id, version, {model: None})
    assert r.status_code == 200 and r.json()["fields"] == {bought: "2025-12-01", count: 2}
    detail = (await client.get(f"{case}/v1/cases/{case_id}")).json()
    assert detail["fields"] == {bought: "2025-12-01", count: 2}
    sets = [h for h in detail["history"] if h["type"] == "crm.case.fields_set.v1"]
    assert [h["data"]["changed"] for h in sets] == [sorted([model, bought, count]), [model]]
    assert sets[1]["data"]["values"] == {model: None} and sets[1]["data"]["type"] == "complaint"

    # A value whose enum option was removed stays readable; it cannot be set anew.
    r = await set_fields(client, case, case_id, version + 1, {model: "a1"})
    assert r.status_code == 200
    assert (await define(client, case, name=model, type="enum", values=["b2"])).json()["version"] == 2
    detail = (await client.get(f"{case}/v1/cases/{case_id}")).json()
    assert detail["fields"][model] == "a1"
    r = await set_fields(client, case, case_id, detail["version"], {model: None})
    assert r.status_code == 200
    r = await set_fields(client, case, case_id, r.json()["version"], {model: "a1"})
    assert r.status_code == 422 and fields_of(r) == {f"values.{model}": "not one of the field's values"}


async def test_tags_are_normalised_and_if_match_is_optional(stack: Stack, client: httpx.AsyncClient) -> None:
    case = urls(stack)[1]
    opened = await new_case(stack, client, await new_customer(stack, client))
    case_id = opened["case_id"]
    url = f"{case}/v1/cases/{case_id}/tags"
    r = await client.post(url, json={"add": ["  Needs Parts", "VIP", "vip"]})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["needs-parts", "vip"] and r.json()["version"] == opened["version"] + 1
    r = await client.post(url, json={"add": ["vip"], "remove": ["absent"]})
    assert (r.status_code, r.json()["event_ids"]) == (200, [])
    r = await client.post(url, json={"add": ["later"], "remove": ["VIP"]}, headers={"If-Match": '"1"'})
    assert (r.status_code, r.json()["error"]) == (409, "concurrency_conflict")
    r = await client.post(
        url, json={"add": ["later"], "remove": ["VIP"]}, headers={"If-Match": f'"{opened["version"] + 1}"'}
    )
    assert r.status_code == 200 and r.json()["tags"] == ["later", "needs-parts"]
    r = await client.post(url, json={"add": ["ok", "no/slash", "", "x" * 65]})
    assert r.status_code == 422 and set(fields_of(r)) == {"add.1", "add.2", "add.3"}
    r = await client.post(url, json={"add": [f"t{i}" for i in range(49)]})
    assert (r.status_code, r.json()["error"]) == (409, "too_many_tags")
    detail = (await client.get(f"{case}/v1/cases/{case_id}")).json()
    changes = [h["data"] for h in detail["history"] if h["type"] == "crm.case.tags_changed.v1"]
    assert [(c["added"], c["removed"], c["tags"]) for c in changes] == [
        (["needs-parts", "vip"], [], ["needs-parts", "vip"]),
        (["later"], ["vip"], ["later", "needs-parts"]),
    ]
    assert detail["tags"] == ["later", "needs-parts"]

    # An agent's change is in the audit log, attributed to the case's customer.
    agent = await make_key(stack, "tags agent", ["agent"], readers=["case"])
    async with api_client(agent["key"], timeout=10) as as_agent:
        r = await as_agent.post(url, json={"add": ["audited"]})
        assert r.status_code == 200, r.text

    async def audited() -> list[Any] | None:
        rows = (await client.get(f"{case}/v1/admin/audit", params={"key_id": agent["key_id"]})).json()["items"]
        found = [(row["method"], row["route"], row["customer_id"], row["status"]) for row in rows]
        return found or None

    found = await eventually(audited, what="the tag change in the audit log")
    assert found == [("POST", "/v1/cases/{case_id}/tags", opened["customer_id"], 200)]


async def test_the_list_filters_on_fields_and_tags_with_keyset_pages(stack: Stack, client: httpx.AsyncClient) -> None:
    case = urls(stack)[1]
    failure, secret = unique("failure"), unique("serial")
    assert (await define(client, case, name=failure, type="enum", values=["motor", "pump"])).status_code == 201
    assert (await define(client, case, name=secret, type="text", personal=True)).status_code == 201
    customer = await new_customer(stack, client)
    tag = unique("batch").replace("_", "-")
    made = []
    for i in range(5):
        c = await new_case(stack, client, customer, "complaint" if i < 4 else "billing")
        version = c["version"]
        if i != 1:  # four with the failure: motor on 0, 2, 4; pump on 3
            r = await set_fields(client, case, c["case_id"], version, {failure: "pump" if i == 3 else "motor"})
            assert r.status_code == 200, r.text
        if i != 2:
            r = await client.post(f"{case}/v1/cases/{c['case_id']}/tags", json={"add": [tag, f"n{i}"]})
            assert r.status_code == 200, r.text
        made.append(c["case_id"])

    async def pages(params: dict[str, Any]) -> list[list[str]]:
        out, before = [], None
        while True:
            r = await client.get(
                f"{case}/v1/cases", params={**params, "limit": 2, **({"before": before} if before else {})}
            )
            assert r.status_code == 200, r.text
            out.append([row["case_id"] for row in r.json()["cases"]])
            before = r.json()["next_before"]
            if before is None:
                return out

    newest_first = list(reversed(made))
    motor = [newest_first[i] for i in (0, 2, 4)]  # cases 4, 2, 0
    assert await pages({f"field.{failure}": "motor"}) == [motor[:2], motor[2:]]
    assert await pages({f"field.{failure}": "motor", "tag": tag.upper()}) == [[made[4], made[0]]]
    assert await pages({f"field.{failure}": "motor", "type": "complaint"}) == [[made[2], made[0]]]
    assert await pages({"tag": [tag, "n3"]}) == [[made[3]]]
    assert await pages({"tag": tag, "customer_id": customer}) == [[made[4], made[3]], [made[1], made[0]]]

    for params, field, reason in [
        ({"field.nope": "1"}, "query.field.nope", "unknown field"),
        ({f"field.{failure}": "door"}, f"query.field.{failure}", "not one of the field's values"),
        ({f"field.{secret}": "x"}, f"query.field.{secret}", "personal_field"),
        ({"tag": "no/slash"}, "query.tag.0", None),
    ]:
        r = await client.get(f"{case}/v1/cases", params=params)
        assert r.status_code == 422 and r.json()["error"] == "validation_failed", r.text
        assert field in fields_of(r) and (reason is None or fields_of(r)[field] == reason), r.text


async def test_a_field_required_to_resolve_blocks_the_resolution(stack: Stack, client: httpx.AsyncClient) -> None:
    case = urls(stack)[1]
    # Only for "repair" cases, so the other tests here resolve nothing it would block.
    cause = unique("root_cause")
    r = await define(client, case, name=cause, type="text", case_types=["repair"], required_to_resolve=True)
    assert r.status_code == 201, r.text
    c = await new_case(stack, client, await new_customer(stack, client), "repair")
    status = f"{case}/v1/cases/{c['case_id']}/status"
    r = await client.post(status, json={"status": "open"}, headers={"If-Match": f'"{c["version"]}"'})
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    r = await client.post(status, json={"status": "resolved"}, headers={"If-Match": f'"{version}"'})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "fields_required"
    assert r.json()["errors"] == [{"field": f"fields.{cause}", "reason": "required to resolve"}]
    r = await set_fields(client, case, c["case_id"], version, {cause: "a loose wire"})
    assert r.status_code == 200, r.text
    r = await client.post(status, json={"status": "resolved"}, headers={"If-Match": f'"{r.json()["version"]}"'})
    assert r.status_code == 200 and r.json()["status"] == "resolved", r.text


async def test_a_personal_field_is_sealed_and_unreadable_after_erasure(stack: Stack, client: httpx.AsyncClient) -> None:
    intake, case = urls(stack)
    serial = unique("serial_no")
    assert (await define(client, case, name=serial, type="text", personal=True)).status_code == 201
    customer = await new_customer(stack, client)
    c = await new_case(stack, client, customer)
    secret = f"SN-{uuid.uuid4().hex}"
    r = await set_fields(client, case, c["case_id"], c["version"], {serial: secret})
    assert r.status_code == 200 and r.json()["fields"] == {serial: secret}, r.text
    assert (await client.get(f"{case}/v1/cases/{c['case_id']}")).json()["fields"] == {serial: secret}

    # Sealed where it is kept: not in case's database as text, not among the filterable values.
    conn = await asyncpg.connect(stack.postgres.dsn("crm_case"))
    try:
        stored = await conn.fetchval(
            "SELECT data::text FROM events WHERE stream_id = $1 AND type = 'crm.case.fields_set.v1'",
            f"case-{c['case_id']}",
        )
        assert secret not in stored and "[sealed]" in stored
        assert await conn.fetchval("SELECT count(*) FROM case_field_values WHERE case_id = $1", c["case_id"]) == 0
    finally:
        await conn.close()

    r = await client.post(f"{intake}/v1/customers/{customer}/erasure")
    assert r.status_code == 202, r.text

    async def erased() -> dict[str, Any] | None:
        detail = (await client.get(f"{case}/v1/cases/{c['case_id']}")).json()
        return detail if detail["fields"].get(serial) == "[erased]" else None

    detail = await eventually(erased, what="the personal field reads [erased]")
    [event] = [h for h in detail["history"] if h["type"] == "crm.case.fields_set.v1"]
    assert event["data"]["personal"] == {serial: "[erased]"} and secret not in str(detail)


async def test_replay_makes_definitions_values_and_tags_again(stack: Stack, client: httpx.AsyncClient) -> None:
    case = urls(stack)[1]
    kind = unique("kind")
    assert (await define(client, case, name=kind, type="enum", values=["x", "y"])).status_code == 201
    assert (await define(client, case, name=kind, type="enum", values=["x", "y", "z"])).status_code == 200
    c = await new_case(stack, client, await new_customer(stack, client))
    assert (await set_fields(client, case, c["case_id"], c["version"], {kind: "z"})).status_code == 200
    tag = unique("replayed").replace("_", "-")
    assert (await client.post(f"{case}/v1/cases/{c['case_id']}/tags", json={"add": [tag]})).status_code == 200
    before = (await client.get(f"{case}/v1/admin/fields")).json()

    # The read models lost (as after a restore of the tables alone): the events still say it all.
    conn = await asyncpg.connect(stack.postgres.dsn("crm_case"))
    try:
        await conn.execute("TRUNCATE case_fields, case_field_values, case_tags")
    finally:
        await conn.close()
    assert (await client.get(f"{case}/v1/cases", params={"tag": tag})).json()["cases"] == []

    result = await asyncio.to_thread(crm, stack, "replay", "case")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rebuilt case fields and tags" in result.stdout
    assert (await client.get(f"{case}/v1/admin/fields")).json() == before
    [row] = [f for f in before["items"] if f["name"] == kind]
    assert row["version"] == 2
    for params in ({"tag": tag}, {f"field.{kind}": "z"}):
        listed = (await client.get(f"{case}/v1/cases", params=params)).json()["cases"]
        assert [r["case_id"] for r in listed] == [c["case_id"]], params
