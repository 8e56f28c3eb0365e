"""Input that parses but is wrong, against the real stack: one test per class of problem, over
the examples and the services and routes the class reaches. Each answer is a 4xx with our error
shape naming the field (never a 500, never a dropped connection). docs/limits.md says the rules.
"""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client
from tests.e2e.helpers import interaction_body

pytestmark = pytest.mark.e2e

JSON = {"content-type": "application/json"}


def interaction(**fields: Any) -> dict[str, Any]:
    """A valid chat message with metadata, from a new address each time; `fields` replace its own."""
    email = f"hostile-{uuid.uuid4().hex[:10]}@example.com"
    return interaction_body(email, channel="chat", **{"metadata": {"campaign": "spring"}, **fields})


def encoded(body: Any) -> bytes:
    """JSON as a client would send it; ensure_ascii writes lone surrogates and NUL as \\u escapes."""
    return json.dumps(body).encode()


def refused(r: httpx.Response, status: int, field: str | None = None, error: str | None = "validation_failed") -> Any:
    """Our error shape, with errors[].field and .reason; `field` among them when given; `error`
    the machine-readable reason (None: any)."""
    assert r.status_code == status, r.text
    body = r.json()
    assert error is None or body["error"] == error, body
    assert body["errors"] and all(e["field"] and e["reason"] for e in body["errors"]), body
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


@pytest.fixture(scope="module")
async def seeded(stack: Stack) -> dict[str, str]:
    """A customer known to every service, and a case of theirs."""
    urls = {name: svc.url for name, svc in stack.services.items()}
    async with api_client(timeout=30) as client:
        r = await client.post(f"{urls['intake']}/v1/interactions", json=interaction())
        assert r.status_code == 202, r.text
        customer_id, event_id = r.json()["customer_id"], r.json()["event_id"]
        for service in ("case", "notification", "analytics"):
            w = await client.get(
                f"{urls[service]}/v1/customers/{customer_id}/timeline",
                params={"wait_for": event_id, "timeout_ms": 30_000},
            )
            assert w.status_code == 200, w.text
        r = await client.post(f"{urls['case']}/v1/cases", json={"customer_id": customer_id, "type": "billing"})
        assert r.status_code == 201, r.text
        for name, field_type in ((HOSTILE_FIELD, "text"), (HOSTILE_NUMBER, "number")):
            made = await client.post(f"{urls['intake']}/v1/admin/fields", json={"name": name, "type": field_type})
            assert made.status_code in (200, 201), made.text
    return {**urls, "customer_id": customer_id, "case_id": r.json()["case_id"]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(timeout=30) as c:
        yield c


def route(seeded: dict[str, str], service: str, path: str) -> str:
    return seeded[service] + path.format(
        customer_id=seeded["customer_id"], case_id=seeded["case_id"], agent_id="hostile-agent", team="support"
    )


HOSTILE_FIELD = "hostile_note"  # customer fields the seeded fixture defines
HOSTILE_NUMBER = "hostile_count"

# (service, method, path, a valid body, where to put the value, the field the answer must name)
TEXT_FIELDS: list[tuple[str, str, str, dict[str, Any], tuple[Any, ...], str]] = [
    ("intake", "POST", "/v1/interactions", interaction(), ("content",), "content"),
    ("intake", "POST", "/v1/interactions", interaction(), ("client_event_id",), "client_event_id"),
    ("intake", "POST", "/v1/interactions", interaction(), ("metadata", "campaign"), "metadata.campaign"),
    ("intake", "POST", "/v1/interactions", interaction(metadata={"a": {"b": ["x"]}}), ("metadata", "a", "b", 0),
     "metadata.a.b.0"),
    ("intake", "POST", "/v1/interactions", interaction(customer={"external": [{"channel": "chat", "id": "u"}]}),
     ("customer", "external", 0, "id"), "customer.external.0.id"),
    ("intake", "POST", "/v1/interactions:batch", {"items": [interaction()]}, ("items", 0, "content"), "content"),
    ("intake", "POST", "/v1/admin/keys", {"name": "k", "scopes": ["agent"]}, ("name",), "name"),
    ("intake", "POST", "/internal/v1/data-keys:lookup", {"customer_ids": ["x"]}, ("customer_ids", 0),
     "customer_ids.0"),
    ("intake", "PUT", "/v1/customers/{customer_id}/fields", {"values": {HOSTILE_FIELD: "x"}},
     ("values", HOSTILE_FIELD), f"values.{HOSTILE_FIELD}"),
    ("intake", "POST", "/v1/customers/{customer_id}/tags", {"add": ["x"]}, ("add", 0), "add.0"),
    ("intake", "POST", "/v1/admin/fields", {"name": "hostile_label", "type": "text", "label": "l"}, ("label",),
     "label"),
    ("intake", "POST", "/v1/customers/{customer_id}/merge", {"merged_id": "m"}, ("merged_id",), "merged_id"),
    ("intake", "POST", "/v1/customers/{customer_id}/unmerge", {"merged_id": "m"}, ("merged_id",), "merged_id"),
    ("intake", "POST", "/v1/customers/{customer_id}/unmerge", {"merged_id": "m", "reason": "r"}, ("reason",),
     "reason"),
    ("intake", "POST", "/v1/customers/{customer_id}/unmerge",
     {"merged_id": "m", "identifiers": [{"kind": "external", "value": "v", "channel": "chat"}]},
     ("identifiers", 0, "value"), "identifiers.0.value"),
    ("case", "POST", "/v1/cases", {"customer_id": "c", "type": "billing", "title": "t"}, ("title",), "title"),
    ("case", "POST", "/v1/cases/{case_id}/notes", {"expected_version": 1, "author": "a", "text": "t"}, ("text",),
     "text"),
    ("case", "POST", "/v1/cases/{case_id}/status", {"expected_version": 1, "status": "open", "reason": "r"},
     ("reason",), "reason"),
    ("case", "POST", "/v1/cases/{case_id}/assign", {"expected_version": 1, "owner": "o"}, ("owner",), "owner"),
    ("case", "POST", "/v1/cases/{case_id}/replies", {"expected_version": 1, "channel": "email", "body": "b"},
     ("body",), "body"),
    ("case", "POST", "/v1/cases/{case_id}/replies", {"expected_version": 1, "channel": "email", "body": "b",
     "author": "a"}, ("author",), "author"),
    ("case", "PUT", "/v1/agents/{agent_id}", {"name": "n", "teams": ["t"], "capacity": 1}, ("name",), "name"),
    ("case", "PUT", "/v1/agents/{agent_id}", {"name": "n", "teams": ["t"], "capacity": 1}, ("teams", 0),
     "teams.0"),
    ("case", "POST", "/v1/cases/{case_id}/fields", {"expected_version": 1, "values": {"hostile_note": "t"}},
     ("values", "hostile_note"), "values.hostile_note"),
    ("case", "POST", "/v1/cases/{case_id}/tags", {"add": ["t"]}, ("add", 0), "add.0"),
    ("case", "POST", "/v1/cases/{case_id}/tags", {"remove": ["t"]}, ("remove", 0), "remove.0"),
    ("case", "POST", "/v1/admin/fields", {"name": "hostile_label", "type": "text", "label": "l"}, ("label",),
     "label"),
]  # fmt: skip
UNSAFE_TEXT = ["\ud800", "a\udfffb", "\x00", "a\x00b", "bell\x07", "\x1b[2J", "\x7f", "\x85"]


def placed(body: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    node = copy
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    return copy


@pytest.mark.parametrize("text", UNSAFE_TEXT)
@pytest.mark.parametrize(
    ("service", "method", "path", "body", "where", "field"), TEXT_FIELDS, ids=[f"{t[2]}:{t[5]}" for t in TEXT_FIELDS]
)
async def test_lone_surrogates_nul_and_control_characters_are_422_naming_the_field(
    seeded: dict[str, str],
    client: httpx.AsyncClient,
    service: str,
    method: str,
    path: str,
    body: dict[str, Any],
    where: tuple[Any, ...],
    field: str,
    text: str,
) -> None:
    r = await client.request(
        method, route(seeded, service, path), content=encoded(placed(body, where, text)), headers=JSON
    )
    refused(r, 422, field)


@pytest.mark.parametrize("key", ["\ud800", "a\x00", "tab\there", "\x1f"])
async def test_unsafe_metadata_keys_are_422(seeded: dict[str, str], client: httpx.AsyncClient, key: str) -> None:
    body = interaction(metadata={"outer": {key: 1}})
    r = await client.post(f"{seeded['intake']}/v1/interactions", content=encoded(body), headers=JSON)
    assert "a key contains" in refused(r, 422, "metadata.outer")["errors"][0]["reason"]


def deep(levels: int, leaf: str = "1") -> str:
    return '{"k":' * (levels - 1) + '{"k":' + leaf + "}" + "}" * (levels - 1)


@pytest.mark.parametrize("levels", [9, 50, 300, 900])
async def test_metadata_nested_past_the_limit_is_422(
    seeded: dict[str, str], client: httpx.AsyncClient, levels: int
) -> None:
    text = encoded(interaction(metadata="X")).replace(b'"X"', deep(levels).encode())
    r = await client.post(f"{seeded['intake']}/v1/interactions", content=text, headers=JSON)
    assert refused(r, 422)["errors"][0]["reason"] == "nested deeper than 8 levels"


async def test_metadata_exactly_at_the_limits_and_free_text_breaks_are_accepted(
    seeded: dict[str, str], client: httpx.AsyncClient
) -> None:
    """The limits are exact: 8 levels, 256 keys of 128 characters pass, one more of any does not;
    tab, CR and LF are free text, not control characters to refuse."""
    intake = f"{seeded['intake']}/v1/interactions"
    for levels, status in ((8, 202), (9, 422)):
        text = encoded(interaction(metadata="X")).replace(b'"X"', deep(levels).encode())
        assert (await client.post(intake, content=text, headers=JSON)).status_code == status
    for keys, chars, status in ((256, 128, 202), (257, 128, 422), (256, 129, 422)):
        wide = interaction(metadata={f"{n:0{chars}d}": n for n in range(keys)})
        assert (await client.post(intake, json=wide)).status_code == status
    body = interaction(content="line one\r\n\tline two\n", metadata={"note": "a\tb\nc"})
    r = await client.post(intake, json=body)
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("metadata", "field", "reason"),
    [
        ({f"k{n}": n for n in range(257)}, "metadata", "more than 256 keys in all"),
        ({"a": [{f"k{n}": n} for n in range(300)]}, "metadata", "more than 256 keys in all"),
        ({"a": {"k" * 129: 1}}, "metadata.a", "a key is longer than 128 characters"),
        ({"n": 2**64}, "metadata.n", "integer out of the 64-bit range"),
    ],
)
async def test_metadata_key_count_key_length_and_numbers_are_limited(
    seeded: dict[str, str], client: httpx.AsyncClient, metadata: dict[str, Any], field: str, reason: str
) -> None:
    r = await client.post(f"{seeded['intake']}/v1/interactions", json=interaction(metadata=metadata))
    assert {"field": field, "reason": reason} in refused(r, 422, field)["errors"]


BODY_ROUTES = [
    ("intake", "POST", "/v1/interactions"),
    ("intake", "POST", "/v1/interactions:batch"),
    ("intake", "PUT", "/v1/customers/{customer_id}/profile"),
    ("intake", "PUT", "/v1/customers/{customer_id}/fields"),
    ("intake", "POST", "/v1/customers/{customer_id}/tags"),
    ("intake", "POST", "/v1/admin/fields"),
    ("intake", "POST", "/v1/admin/keys"),
    ("intake", "POST", "/v1/customers/{customer_id}/merge"),
    ("intake", "POST", "/v1/customers/{customer_id}/unmerge"),
    ("case", "POST", "/v1/cases"),
    ("case", "POST", "/v1/cases/{case_id}/notes"),
    ("case", "POST", "/v1/cases/{case_id}/replies"),
    ("case", "PUT", "/v1/agents/{agent_id}"),
    ("case", "PUT", "/v1/agents/{agent_id}/status"),
    ("case", "POST", "/v1/cases/{case_id}/fields"),
    ("case", "POST", "/v1/cases/{case_id}/tags"),
    ("case", "POST", "/v1/admin/fields"),
]


@pytest.mark.parametrize(("service", "method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("shape", ["objects", "arrays"])
async def test_bodies_nested_deeper_than_json_can_be_read_are_422(
    seeded: dict[str, str], client: httpx.AsyncClient, service: str, method: str, path: str, shape: str
) -> None:
    text = deep(5000) if shape == "objects" else "[" * 5000 + "]" * 5000
    r = await client.request(method, route(seeded, service, path), content=text.encode(), headers=JSON)
    refused(r, 422, "body")


@pytest.mark.parametrize(("service", "method", "path"), BODY_ROUTES)
async def test_unreadable_bodies_say_why(
    seeded: dict[str, str], client: httpx.AsyncClient, service: str, method: str, path: str
) -> None:
    url = route(seeded, service, path)
    huge_number = await client.request(method, url, content=b'{"n": ' + b"9" * 5000 + b"}", headers=JSON)
    refused(huge_number, 422, "body")
    not_utf8 = await client.request(method, url, content=b'{"name": "\xff\xfe"}', headers=JSON)
    refused(not_utf8, 400, "body", error="malformed_json")


async def chunks(total: int) -> AsyncIterator[bytes]:
    """A body with no Content-Length (chunked), `total` bytes of a valid JSON string."""
    yield b'{"content": "'
    for _ in range(total // 65536):
        yield b"x" * 65536
    yield b'"}'


@pytest.mark.parametrize(("service", "method", "path"), BODY_ROUTES)
async def test_chunked_bodies_over_the_limit_are_413(
    seeded: dict[str, str], client: httpx.AsyncClient, service: str, method: str, path: str
) -> None:
    limit = 16 * 1024 * 1024 if path.endswith(":batch") else 1024 * 1024  # intake.main, MAX_BODY_BYTES
    r = await client.request(method, route(seeded, service, path), content=chunks(limit + 65536), headers=JSON)
    assert "Content-Length" not in r.request.headers
    refused(r, 413, "body", error="body_too_large")


MERGE_BODIES: list[tuple[str, Any, int, str]] = [  # (command, body, status, a field the answer names)
    ("merge", {}, 422, "merged_id"),
    ("merge", {"merged_id": 5}, 422, "merged_id"),
    ("merge", ["m"], 422, "body"),
    ("merge", {"merged_id": "m", "survivor_id": "x"}, 422, "survivor_id"),
    ("merge", {"merged_id": "m" * 65}, 422, "merged_id"),
    ("merge", {"merged_id": "' OR 1=1 --"}, 404, "body.merged_id"),
    ("merge", {"merged_id": "{{customer_id}}"}, 404, "body.merged_id"),
    ("unmerge", {"merged_id": "m", "identifiers": "a@b.c"}, 422, "identifiers"),
    ("unmerge", {"merged_id": "m", "identifiers": [{"kind": "fax", "value": "1"}]}, 422, "identifiers.0.kind"),
    ("unmerge", {"merged_id": "m", "identifiers": [{"kind": "email", "value": "x", "extra": 1}]}, 422,
     "identifiers.0.extra"),
    ("unmerge", {"merged_id": "m", "identifiers": [{"kind": "email", "value": "a@b.c"}] * 51}, 422, "identifiers"),
    ("unmerge", {"merged_id": "m", "identifiers": [{"kind": "email", "value": "no-at-sign"}]}, 422,
     "body.identifiers.0.value"),
    ("unmerge", {"merged_id": "m", "identifiers": [{"kind": "external", "value": "v"}]}, 422,
     "body.identifiers.0.channel"),
    ("unmerge", {"merged_id": "m", "reason": "r" * 501}, 422, "reason"),
    ("unmerge", {"merged_id": "'; DROP TABLE customers; --"}, 404, "body.merged_id"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "body", "status", "field"), MERGE_BODIES)
async def test_merge_and_unmerge_refuse_bad_bodies_naming_the_field(
    seeded: dict[str, str], client: httpx.AsyncClient, command: str, body: Any, status: int, field: str
) -> None:
    url = route(seeded, "intake", f"/v1/customers/{{customer_id}}/{command}")
    refused(await client.post(url, json=body), status, field, "validation_failed" if status == 422 else None)
    # nothing stalls: the customer still answers, unmerged and unchanged
    r = await client.get(route(seeded, "intake", "/v1/customers/{customer_id}"), follow_redirects=False)
    assert r.status_code == 200 and r.json()["merged_ids"] == []


CASE_COMMANDS = [
    ("assign", {"owner": "ana"}),
    ("status", {"status": "open"}),
    ("priority", {"priority": "high"}),
    ("notes", {"author": "ana", "text": "hi"}),
    ("replies", {"channel": "email", "body": "hi"}),
    ("fields", {"values": {"hostile_note": "hi"}}),
    ("tags", {"add": ["hi"]}),
]


@pytest.mark.parametrize(
    "if_match", [b"\xb2", b'"\xb3"', b"W/\xb9", b"99999999999999999999", b"9" * 5000, b"-1", b"1.0", b"0x1"]
)
@pytest.mark.parametrize(("command", "body"), CASE_COMMANDS, ids=[c for c, _ in CASE_COMMANDS])
async def test_if_match_takes_ascii_digits_only(
    seeded: dict[str, str], client: httpx.AsyncClient, command: str, body: dict[str, Any], if_match: bytes
) -> None:
    """Latin-1 superscripts pass str.isdigit() and then int() raised; 20 digits overflowed bigint."""
    r = await client.post(
        route(seeded, "case", f"/v1/cases/{{case_id}}/{command}"), json=body, headers={"If-Match": if_match}
    )
    refused(r, 422, "header.If-Match")


@pytest.mark.parametrize("key", [b"a\x85b", b"\x9f"])  # DEL: the HTTP parser answers 400 itself
async def test_idempotency_keys_with_control_characters_are_422(
    seeded: dict[str, str], client: httpx.AsyncClient, key: bytes
) -> None:
    r = await client.post(f"{seeded['intake']}/v1/interactions", json=interaction(), headers={"Idempotency-Key": key})
    refused(r, 422, "header.Idempotency-Key")


@pytest.mark.parametrize("when", [123, 0, 1.7e9, "123", "1700000000", "2026-11-30", True])
async def test_dates_must_be_rfc3339_text(seeded: dict[str, str], client: httpx.AsyncClient, when: Any) -> None:
    """`occurred_at: 123` was stored as 1970-01-01T00:02:03Z."""
    r = await client.post(f"{seeded['intake']}/v1/interactions", json=interaction(occurred_at=when))
    refused(r, 422, "occurred_at")
    r = await client.post(f"{seeded['intake']}/v1/interactions:batch", json={"items": [interaction(occurred_at=when)]})
    refused(r, 422, "occurred_at")
    now = datetime.now(UTC).isoformat()
    r = await client.get(f"{seeded['analytics']}/v1/kpis", params={"from": str(when), "to": now, "window": "day"})
    refused(r, 422, "query.from")


@pytest.mark.parametrize(
    "email", ["a()@x.io", "a(comment)b@x.io", "a\x00b@x.io", "a\x01@x.io", "a@x.io\x00", "\u200ba@x.io", "a@[1.2.3.4]"]
)
async def test_emails_are_validated_by_email_validator(
    seeded: dict[str, str], client: httpx.AsyncClient, email: str
) -> None:
    r = await client.post(
        f"{seeded['intake']}/v1/interactions",
        content=encoded(interaction(customer={"email": email})),
        headers=JSON,
    )
    refused(r, 422, "customer.email")
    r = await client.get(f"{seeded['intake']}/v1/customers", params={"email": email})
    refused(r, 422, "query.email")


async def test_a_unicode_domain_and_its_idna_spelling_are_one_customer(
    seeded: dict[str, str], client: httpx.AsyncClient
) -> None:
    local = f"idn-{uuid.uuid4().hex[:8]}"
    first = await client.post(
        f"{seeded['intake']}/v1/interactions", json=interaction(customer={"email": f"{local}@münchen.de"})
    )
    second = await client.post(
        f"{seeded['intake']}/v1/interactions", json=interaction(customer={"email": f"{local}@XN--MNCHEN-3YA.de"})
    )
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["customer_id"] == second.json()["customer_id"]


URL_ROUTES = [
    ("intake", "/v1/customers/{id}"),
    ("intake", "/v1/customers/{id}/timeline"),
    ("case", "/v1/cases/{id}"),
    ("case", "/v1/agents/{id}"),
    ("case", "/v1/queues/{id}"),
    ("notification", "/v1/notifications/{id}"),
    ("analytics", "/v1/customers/{id}/insights"),
]


@pytest.mark.parametrize("escaped", ["%00", "a%00b", "%01", "%1B%5B2J", "%7F"])
@pytest.mark.parametrize(("service", "path"), URL_ROUTES)
async def test_control_characters_in_the_path_are_422_before_authentication(
    seeded: dict[str, str], service: str, path: str, escaped: str
) -> None:
    url = seeded[service] + path.replace("{id}", escaped)
    async with api_client(timeout=30) as authed, api_client(None, timeout=30) as anonymous:
        refused(await authed.get(url), 422, "path")
        refused(await anonymous.get(url), 422, "path")


QUERIES = [
    ("intake", "/v1/customers", "q"),
    ("intake", "/v1/customers", "name"),
    ("intake", "/v1/customers", "tag"),
    ("intake", "/v1/customers", f"field.{HOSTILE_FIELD}"),
    ("case", "/v1/cases", "owner"),
    ("case", "/v1/cases", "customer_id"),
    ("case", "/v1/cases", "tag"),
    ("case", "/v1/cases", "field.hostile_note"),
    ("case", "/v1/agents", "team"),
    ("notification", "/v1/notifications", "customer_id"),
    ("analytics", "/v1/admin/audit", "key_id"),
    ("analytics", "/v1/customers/{customer_id}/timeline", "before"),
    ("analytics", "/v1/kpis", "group_by"),
    ("analytics", "/v1/reports/kpis.csv", "group_by"),
    ("analytics", "/v1/reports/cases.csv", "from"),
]


@pytest.mark.parametrize("escaped", ["abcd%00", "%01abcd", "ab%1Fcd"])
@pytest.mark.parametrize(("service", "path", "name"), QUERIES)
async def test_control_characters_in_query_parameters_are_422(
    seeded: dict[str, str], client: httpx.AsyncClient, service: str, path: str, name: str, escaped: str
) -> None:
    r = await client.get(f"{route(seeded, service, path)}?{name}={escaped}")
    refused(r, 422, f"query.{name}")


@pytest.mark.parametrize("service", ["intake", "case", "notification", "analytics"])
async def test_a_nul_in_a_path_does_not_stop_the_audit_log(seeded: dict[str, str], service: str) -> None:
    """A NUL in a path parameter used to reach the audit batch, which PostgreSQL then refused on
    every flush: no audit record was written again, and reading the audit log answered 422."""
    async with api_client(timeout=30) as admin:
        key = (await admin.post(f"{seeded['intake']}/v1/admin/keys", json={"name": "nul", "scopes": ["agent"]})).json()
        # known everywhere once its event is applied there
        for svc in ("intake", "case", "notification", "analytics"):
            await admin.get(
                f"{seeded[svc]}/v1/customers/none/timeline",
                params={"wait_for": key["event_id"], "timeout_ms": 15000},
            )
        async with api_client(key["key"], timeout=30) as agent:
            await agent.get(f"{seeded[service]}/v1/customers/nul%00here/timeline")
            ok = await agent.get(f"{seeded[service]}/v1/customers/{seeded['customer_id']}/timeline")
            assert ok.status_code == 200, ok.text
        r = await admin.get(f"{seeded[service]}/v1/admin/audit", params={"key_id": key["key_id"]})
    assert r.status_code == 200, r.text
    assert [(row["customer_id"], row["status"]) for row in r.json()["items"]] == [(seeded["customer_id"], 200)]


REPORT_ROUTES = ["/v1/kpis", "/v1/reports/kpis.csv", "/v1/reports/cases.csv"]
BAD_REPORT_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"from": "123"}, "query.from"),
    ({"from": True}, "query.from"),
    ({"to": "2026-13-40T00:00:00Z"}, "query.to"),
    ({"to": "2026-01-01T00:00:00Z" + "0" * 10_000}, "query.to"),
    ({"window": "week"}, "query.window"),
    ({"group_by": "field.A;DROP TABLE kpi_cases"}, "query.group_by"),
    ({"group_by": "owner' OR '1'='1"}, "query.group_by"),
    ({"group_by": "field." + "a" * 5000}, "query.group_by"),
    ({"group_by": ["team", "owner"]}, "query.group_by"),
    ({"group_by": "field."}, "query.group_by"),
    ({"team": "t" * 65}, "query.team"),
]


@pytest.mark.parametrize(("params", "field"), BAD_REPORT_PARAMS)
@pytest.mark.parametrize("path", REPORT_ROUTES)
async def test_report_parameters_that_parse_but_are_wrong_are_422(
    seeded: dict[str, str], client: httpx.AsyncClient, path: str, params: dict[str, Any], field: str
) -> None:
    if path == "/v1/reports/cases.csv" and field not in ("query.from", "query.to"):
        return  # the case report takes a range only
    good = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "group_by": "team"}
    r = await client.get(f"{seeded['analytics']}{path}", params={**good, **params})
    refused(r, 422, field)


@pytest.mark.parametrize("path", REPORT_ROUTES)
async def test_injection_strings_in_report_filters_are_data_and_nothing_stalls(
    seeded: dict[str, str], client: httpx.AsyncClient, path: str
) -> None:
    span = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    extra = {} if path.endswith("cases.csv") else {"team": "x'); DROP TABLE kpi_cases; --", "group_by": "tag"}
    r = await client.get(f"{seeded['analytics']}{path}", params={**span, **extra})
    assert r.status_code == 200, r.text
    # The tables are there and the service answers the next request.
    again = await client.get(f"{seeded['analytics']}/v1/kpis", params={**span, "group_by": "owner"})
    assert again.status_code == 200 and again.json()["sums_to_totals"] is True, again.text


FIELD_ROUTES = [
    ("/v1/cases/{case_id}/fields", {"values": [1]}, "values"),  # wrong types
    ("/v1/cases/{case_id}/fields", {"values": "x"}, "values"),
    ("/v1/cases/{case_id}/fields", {"values": {"hostile_note": "x"}, "colour": "red"}, "colour"),  # unknown
    ("/v1/cases/{case_id}/fields", {"values": {f"f{i}": 1 for i in range(101)}}, "values"),  # oversized
    ("/v1/cases/{case_id}/fields", {"values": {"hostile_note": "x" * 2001}}, "values.hostile_note"),
    ("/v1/cases/{case_id}/fields", {"values": {"hostile_note": {"nested": ["x"]}}}, "values.hostile_note"),
    ("/v1/cases/{case_id}/fields", {"values": {"hostile_note": "x", "'; DROP TABLE cases; --": 1}}, "values"),
    ("/v1/cases/{case_id}/tags", {"add": "x"}, "add"),
    ("/v1/cases/{case_id}/tags", {"add": [1]}, "add.0"),
    ("/v1/cases/{case_id}/tags", {"add": ["x"], "colour": "red"}, "colour"),
    ("/v1/cases/{case_id}/tags", {"add": [f"t{i}" for i in range(51)]}, "add"),
    ("/v1/cases/{case_id}/tags", {"add": ["'; DROP TABLE case_tags; --"]}, "add.0"),
    ("/v1/admin/fields", {"name": "x", "type": "enum", "values": [str(i) for i in range(101)]}, "values"),
    ("/v1/admin/fields", {"name": "x" * 64, "type": "text"}, "name"),
    ("/v1/admin/fields", {"name": "x", "type": "enum", "values": ["ok", "a\x00b", "\ud800"]}, "values.1"),
    ("/v1/admin/fields", {"name": "x", "type": "text", "label": "x" * 101}, "label"),
    ("/v1/admin/fields", {"name": "x", "type": "text", "personal": [True]}, "personal"),
    ("/v1/admin/fields", {"name": "x'; DROP TABLE case_fields; --", "type": "text"}, "name"),
]


@pytest.mark.parametrize(("path", "body", "field"), FIELD_ROUTES, ids=[f"{p[0]}:{p[2]}" for p in FIELD_ROUTES])
async def test_case_fields_and_tags_refuse_wrong_types_unknown_and_oversized_input(
    seeded: dict[str, str], client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    r = await client.post(route(seeded, "case", path), content=encoded(body), headers={**JSON, "If-Match": '"1"'})
    refused(r, 422, field)


async def test_injection_text_in_a_text_field_is_kept_as_text(
    seeded: dict[str, str], client: httpx.AsyncClient
) -> None:
    case = seeded["case"]
    r = await client.post(f"{case}/v1/admin/fields", json={"name": "hostile_text", "type": "text"})
    assert r.status_code in (200, 201), r.text
    injected = "'; DROP TABLE cases; -- <script>alert(1)</script>"
    current = (await client.get(route(seeded, "case", "/v1/cases/{case_id}"))).json()["version"]
    r = await client.post(
        route(seeded, "case", "/v1/cases/{case_id}/fields"),
        json={"values": {"hostile_text": injected}},
        headers={"If-Match": f'"{current}"'},
    )
    assert r.status_code == 200 and r.json()["fields"]["hostile_text"] == injected, r.text
    r = await client.get(f"{case}/v1/cases", params={"field.hostile_text": injected})
    assert [c["case_id"] for c in r.json()["cases"]] == [seeded["case_id"]], r.text


INJECTION = "x'); DROP TABLE customer_field_values; --"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {HOSTILE_NUMBER: {"nested": [1]}}}, 422,
         f"values.{HOSTILE_NUMBER}"),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {HOSTILE_NUMBER: 1e308 * 10}}, 422, None),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {HOSTILE_NUMBER: 2**80}}, 422,
         f"values.{HOSTILE_NUMBER}"),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {HOSTILE_FIELD: ["a"]}}, 422,
         f"values.{HOSTILE_FIELD}"),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {INJECTION: "x"}}, 422, f"values.{INJECTION}"),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {HOSTILE_FIELD: "x" * 2001}}, 422,
         f"values.{HOSTILE_FIELD}"),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {f"f{n}": 1 for n in range(101)}}, 422, "values"),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": {}, "extra": 1}, 422, "extra"),
        ("PUT", "/v1/customers/{customer_id}/fields", {"values": "text"}, 422, "values"),
        ("POST", "/v1/customers/{customer_id}/tags", {"add": [INJECTION]}, 422, "add.0"),
        ("POST", "/v1/customers/{customer_id}/tags", {"add": [1]}, 422, "add.0"),
        ("POST", "/v1/customers/{customer_id}/tags", {"remove": ["x" * 65]}, 422, "remove.0"),
        ("POST", "/v1/customers/{customer_id}/tags", {"add": [f"t{n}" for n in range(51)]}, 422, "add"),
        ("POST", "/v1/admin/fields", {"name": INJECTION, "type": "text"}, 422, "name"),
        ("POST", "/v1/admin/fields", {"name": "hostile_x", "type": "blob"}, 422, "type"),
        ("POST", "/v1/admin/fields", {"name": "hostile_x", "type": "enum", "values": []}, 422, None),
        ("POST", "/v1/admin/fields", {"name": "hostile_x", "type": "text", "sealed": True}, 422, "sealed"),
        ("POST", "/v1/admin/fields", {"name": HOSTILE_FIELD, "type": "number"}, 409, None),
    ],
)  # fmt: skip
async def test_field_and_tag_bodies_of_wrong_types_and_injections_are_4xx(
    seeded: dict[str, str],
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    r = await client.request(method, route(seeded, "intake", path), content=encoded(body), headers=JSON)
    if status == 409:
        assert (r.status_code, r.json()["error"]) == (409, "field_type_fixed"), r.text
    else:
        refused(r, status, field)
    shown = await client.get(route(seeded, "intake", "/v1/customers/{customer_id}"))
    assert shown.status_code == 200 and "fields" in shown.json()  # nothing stalled, nothing dropped


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({f"field.{INJECTION}": "x"}, f"query.field.{INJECTION}"),
        ({f"field.{HOSTILE_NUMBER}": INJECTION}, f"query.field.{HOSTILE_NUMBER}"),
        ({f"field.{HOSTILE_NUMBER}": "nan"}, f"query.field.{HOSTILE_NUMBER}"),
        ({"tag": INJECTION}, "query.tag"),
        ({"tag": "x", "before": INJECTION}, "query.before"),
        ({"tag": "x", "email": "a@example.com"}, "query"),
    ],
)
async def test_customer_list_filters_refuse_bad_values(
    seeded: dict[str, str], client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    refused(await client.get(f"{seeded['intake']}/v1/customers", params=params), 422, field)
