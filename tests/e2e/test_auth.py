"""Authentication and authorization over every route of every service, keys made and revoked
through intake, the per-key rate limit, the audit log and the customer export."""

import asyncio
import random
import uuid
from typing import Any

import httpx
import pytest
from crmtools.devstack import ServiceProcess, Stack
from crmtools.processes import free_port

from tests.conftest import api_client, eventually
from tests.e2e.conftest import interaction
from tests.e2e.helpers import make_key

pytestmark = pytest.mark.e2e

OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"}
SCOPES = ("agent", "supervisor", "ops", "keys", "campaigns", "channel:web")

# Which scopes may call which route (admin may call all). Anything not listed needs admin only.
ROUTES_BY_SCOPES: list[tuple[set[str], list[str]]] = [
    (
        {"agent"},
        [
            "GET /v1/customers/{customer_id}/timeline",
            "GET /v1/customers/{customer_id}/timeline/digest",
            "GET /v1/customers/{customer_id}/timeline/stream",
            "POST /v1/stream-tickets",
            "GET /v1/customers",
            "GET /v1/customers/{customer_id}",
            "PUT /v1/customers/{customer_id}/consent",
            "PUT /v1/customers/{customer_id}/preferences",
            "PUT /v1/customers/{customer_id}/profile",
            "POST /v1/customers/{customer_id}/identifiers:verify",
            "PUT /v1/customers/{customer_id}/fields",
            "POST /v1/customers/{customer_id}/tags",
            "GET /v1/merge-suggestions",
            "POST /v1/merge-suggestions/{suggestion_id}:accept",
            "POST /v1/merge-suggestions/{suggestion_id}:reject",
            "POST /v1/customers/{customer_id}/merge",
            "POST /v1/customers/{customer_id}/unmerge",
        ],
    ),
    ({"agent", "channel:web"}, ["POST /v1/interactions", "POST /v1/interactions:batch"]),
    (
        {"agent", "ops"},
        [
            "GET /v1/notifications",
            "GET /v1/notifications/{notification_id}",
            "GET /v1/customers/{customer_id}/insights",
        ],
    ),
    ({"ops"}, ["GET /v1/kpis", "GET /v1/reports/cases.csv", "GET /v1/reports/kpis.csv"]),
    ({"agent", "ops"}, ["GET /v1/admin/fields"]),  # case's and intake's definitions, for the console; POST: admin
    ({"supervisor"}, ["PUT /v1/agents/{agent_id}"]),
    (
        {"agent", "supervisor"},  # an agent key sets only its own agent's status (test_agents.py)
        ["PUT /v1/agents/{agent_id}/status", "GET /v1/agents", "GET /v1/agents/{agent_id}", "GET /v1/queues/{team}"],
    ),
    ({"keys"}, ["POST /internal/v1/data-keys:lookup"]),  # services that seal or read personal data
    (  # results are counts, no personal data: the console shows them to agents
        {"campaigns", "agent", "ops"},
        ["GET /v1/campaigns", "GET /v1/campaigns/{campaign_id}", "GET /v1/campaigns/{campaign_id}/results"],
    ),
    (
        {"campaigns"},
        [
            "POST /v1/campaigns",
            "POST /v1/campaigns/{campaign_id}:pause",
            "POST /v1/campaigns/{campaign_id}:resume",
            "POST /v1/campaigns/{campaign_id}:cancel",
        ],
    ),
]
ALLOWED: dict[tuple[str, str], set[str]] = {
    (method, path): scopes for scopes, routes in ROUTES_BY_SCOPES for method, path in (r.split(" ") for r in routes)
}
CASE_ROUTES_PREFIX = "/v1/cases"  # every case route: agent


def allowed(method: str, path: str) -> set[str]:
    if path.startswith(CASE_ROUTES_PREFIX):
        return {"agent"}
    return ALLOWED.get((method, path), set())


def web_interaction() -> dict[str, Any]:
    return {**interaction(f"auth-{uuid.uuid4().hex[:8]}@example.com", random.Random(1)), "channel": "web"}


async def call(client: httpx.AsyncClient, method: str, url: str, path: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    concrete = path.replace("{customer_id}", "nobody").replace("{case_id}", "nocase").replace(
        "{notification_id}", "none").replace("{key_id}", "nokey").replace("{suggestion_id}", "nosug").replace(
        "{agent_id}", "noagent").replace("{team}", "noteam").replace("{campaign_id}", "nocampaign")  # fmt: skip
    body: Any = None
    if (method, path) == ("POST", "/v1/interactions"):
        body = web_interaction()
    elif (method, path) == ("POST", "/v1/interactions:batch"):
        body = {"items": [web_interaction()]}
    elif method in ("POST", "PUT"):
        body = {}
    if path.endswith("/stream"):
        async with client.stream(method, url + concrete, headers=headers) as r:
            return r.status_code
    r = await client.request(method, url + concrete, headers=headers, json=body)
    return r.status_code


async def test_every_route_and_scope(stack: Stack) -> None:
    keys = {scope: (await make_key(stack, f"matrix {scope}", [scope]))["key"] for scope in SCOPES}
    problems: list[str] = []
    checked = 0
    async with httpx.AsyncClient(timeout=10) as client:
        for name, svc in stack.services.items():
            spec = (await client.get(f"{svc.url}/openapi.json")).json()
            for path, operations in spec["paths"].items():
                for method in operations:
                    method = method.upper()
                    if path in OPEN:
                        continue
                    checked += 1
                    status = await call(client, method, svc.url, path, None)
                    if status != 401:
                        problems.append(f"{name} {method} {path} without a key: {status}")
                    bad = await call(client, method, svc.url, path, "crm_not_a_real_key")
                    if bad != 401:
                        problems.append(f"{name} {method} {path} with a wrong key: {bad}")
                    for scope, key in keys.items():
                        status = await call(client, method, svc.url, path, key)
                        should = scope in allowed(method, path)
                        if should and status in (401, 403):
                            problems.append(f"{name} {method} {path} as {scope}: {status}, should be allowed")
                        if not should and status != 403:
                            problems.append(f"{name} {method} {path} as {scope}: {status}, should be 403")
                    admin = await call(client, method, svc.url, path, stack.admin_key)
                    if admin in (401, 403):
                        problems.append(f"{name} {method} {path} as admin: {admin}")
            for path in OPEN & set(spec["paths"]):
                assert (await client.get(svc.url + path)).status_code == 200, (name, path)
    assert checked > 30
    assert not problems, "\n".join(problems)


async def test_channel_keys_write_only_their_channel_and_errors_say_why(stack: Stack) -> None:
    web = (await make_key(stack, "web front end", ["channel:web"]))["key"]
    intake = stack.services["intake"].url
    async with api_client(web, timeout=10) as client:
        ok = await client.post(f"{intake}/v1/interactions", json=web_interaction())
        assert ok.status_code == 202
        sms = await client.post(f"{intake}/v1/interactions", json={**web_interaction(), "channel": "sms"})
        assert sms.status_code == 403
        assert sms.json()["error"] == "forbidden" and sms.json()["required"] == ["channel:sms"]
        mixed = await client.post(
            f"{intake}/v1/interactions:batch",
            json={"items": [web_interaction(), {**web_interaction(), "channel": "sms"}]},
        )
        assert mixed.status_code == 403
    async with httpx.AsyncClient(timeout=10) as anonymous:
        r = await anonymous.get(f"{intake}/v1/customers/x")
        assert (r.status_code, r.json()["error"], r.headers["www-authenticate"]) == (401, "unauthenticated", "Bearer")


async def test_revoked_key_stops_working_everywhere(stack: Stack) -> None:
    key = await make_key(stack, "soon gone", ["agent"])
    async with api_client(key["key"], timeout=10) as client:
        assert (await client.get(f"{stack.services['case'].url}/v1/cases")).status_code == 200
    async with api_client(timeout=10) as admin:
        listed = (await admin.get(f"{stack.services['intake'].url}/v1/admin/keys")).json()["items"]
        assert any(k["key_id"] == key["key_id"] and "key" not in k for k in listed)
        r = await admin.delete(f"{stack.services['intake'].url}/v1/admin/keys/{key['key_id']}")
        assert r.status_code == 200
        again = await admin.delete(f"{stack.services['intake'].url}/v1/admin/keys/{key['key_id']}")
        assert again.status_code == 409
    async with api_client(key["key"], timeout=10) as client:
        statuses: dict[str, int] = {}
        for _ in range(60):  # lookups are cached for 5 s
            statuses = {
                n: (await client.get(f"{s.url}/v1/customers/x/timeline")).status_code for n, s in stack.services.items()
            }
            if set(statuses.values()) == {401}:
                break
            await asyncio.sleep(0.25)
        assert set(statuses.values()) == {401}, statuses


async def test_rate_limit_answers_429_with_retry_after(stack: Stack) -> None:
    intake = stack.services["intake"]
    strict = ServiceProcess("intake", free_port(), dict(intake.env), stack.logs / "intake-strict.log")
    strict.env.update({"HTTP_PORT": str(strict.port), "RATE_LIMIT_PER_KEY_RPS": "1", "RATE_LIMIT_PER_KEY_BURST": "3"})
    strict.start()
    try:
        await asyncio.to_thread(strict.wait_ready, 60)
        async with api_client(timeout=10) as client:
            statuses = [(await client.get(f"{strict.url}/v1/customers/x")).status_code for _ in range(6)]
            limited = await client.get(f"{strict.url}/v1/customers/x")
        assert statuses[:3] == [404, 404, 404]
        assert limited.status_code == 429 and 429 in statuses
        assert limited.json()["error"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
    finally:
        strict.stop()


async def test_audit_log_records_who_read_what(stack: Stack) -> None:
    key = await make_key(stack, "audited agent", ["agent"])
    customer = f"audit-{uuid.uuid4().hex[:8]}"
    case = stack.services["case"].url
    async with api_client(key["key"], timeout=10) as client:
        await client.get(f"{case}/v1/customers/{customer}/timeline")
        await client.get(f"{case}/v1/customers/{customer}/timeline/digest")
        await client.get(f"{case}/v1/kpis")  # not found here; still recorded as an attempt
    async with api_client(timeout=10) as admin:
        rows = (await admin.get(f"{case}/v1/admin/audit", params={"key_id": key["key_id"]})).json()["items"]
        forbidden = await admin.get(f"{case}/v1/admin/audit")
        pages, cursor = [], None  # one row a page, following next_before, gives the same rows
        for _ in range(len(rows) + 1):
            params = {"key_id": key["key_id"], "limit": 1, **({"before": cursor} if cursor else {})}
            page = (await admin.get(f"{case}/v1/admin/audit", params=params)).json()
            pages.extend(page["items"])
            if (cursor := page["next_before"]) is None:
                break
    assert {(r["method"], r["route"], r["customer_id"], r["status"]) for r in rows} >= {
        ("GET", "/v1/customers/{customer_id}/timeline", customer, 200)
    }
    assert forbidden.status_code == 200
    assert len(rows) >= 2 and pages == rows
    async with api_client(key["key"], timeout=10) as client:
        assert (await client.get(f"{case}/v1/admin/audit")).status_code == 403


async def test_export_gathers_from_all_four_services(stack: Stack) -> None:
    """A complaint (text and metadata of its own) opens a case, an agent adds a note, notification
    decides the customer's message: the export holds each of them, from the service that keeps it."""
    intake, case = stack.services["intake"].url, stack.services["case"].url
    tag = uuid.uuid4().hex[:8]
    email, content, note = f"export-{tag}@example.com", f"export text {tag}", f"export note {tag}"
    metadata = {"order": {"ref": f"ORD-{tag}"}, "amount": 12}
    async with api_client(timeout=20) as client:
        complaint = {**interaction(email, random.Random(2)), "kind": "complaint", "direction": "inbound"}
        posted = await client.post(
            f"{intake}/v1/interactions", json={**complaint, "content": content, "metadata": metadata}
        )
        assert posted.status_code == 202, posted.text
        first = posted.json()
        customer = first["customer_id"]

        async def opened() -> dict[str, Any] | None:
            cases = (await client.get(f"{case}/v1/cases", params={"customer_id": customer})).json()["cases"]
            return cases[0] if cases else None

        listed = await eventually(opened, timeout_s=30, what="the complaint opens a case")
        noted = await client.post(f"{case}/v1/cases/{listed['case_id']}/notes",
                              json={"author": "ana", "text": note, "expected_version": listed["version"]})  # fmt: skip
        assert noted.status_code == 200, noted.text
        note_event = noted.json()["event_ids"][-1]
        assert (await client.get(f"{case}/v1/cases/{listed['case_id']}")).status_code == 200
        # (the rate-limit test's second intake instance just left the group: allow for the rebalance)
        for svc in stack.services.values():  # applied everywhere, and each service audits a read of theirs
            applied = await client.get(
                f"{svc.url}/v1/customers/{customer}/timeline",
                params={"wait_for": note_event, "timeout_ms": 20000},
            )
            assert applied.status_code == 200, svc.name

        async def decided() -> bool | None:
            """notification has chosen the case_opened message's address and text; analytics knows them."""
            listing = await client.get(f"{stack.services['notification'].url}/v1/notifications",
                                       params={"customer_id": customer})  # fmt: skip
            ready = [m for m in listing.json()["items"] if m["rule"] == "case_opened" and m["subject"]]
            insights = await client.get(f"{stack.services['analytics'].url}/v1/customers/{customer}/insights")
            return True if ready and insights.status_code == 200 else None

        await eventually(decided, timeout_s=30, what="the case_opened message is decided")
        answer = await client.get(f"{intake}/v1/customers/{customer}/export")
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        async with api_client(key=None, timeout=10) as anonymous:
            assert (await anonymous.get(f"{intake}/v1/customers/{customer}/export")).status_code == 401
    assert doc["customer_id"] == customer
    assert doc["intake"]["customer"]["identifiers"][0]["value"] == email
    for name in ("intake", "case", "notification", "analytics"):
        events = {e["event_id"]: e for e in doc[name]["timeline"]}
        assert events[first["event_id"]]["data"]["content"] == content, name
        assert events[first["event_id"]]["data"]["metadata"] == metadata, name
        assert events[note_event]["data"]["text"] == note, name
        assert {(a["route"], a["customer_id"]) for a in doc[name]["audit"]} >= {
            ("/v1/customers/{customer_id}/timeline", customer)
        }, name
    # routes about one case are audited against its customer, with the case id as their target
    case_audit = {(a["method"], a["route"], a["customer_id"], str(a["target"])) for a in doc["case"]["audit"]}
    target = str({"case_id": listed["case_id"]})
    assert {
        ("POST", "/v1/cases/{case_id}/notes", customer, target),
        ("GET", "/v1/cases/{case_id}", customer, target),
    } <= case_audit
    [exported_case] = doc["case"]["cases"]
    assert exported_case["case_id"] == listed["case_id"] and exported_case["customer_id"] == customer
    assert [n["text"] for n in exported_case["notes"]] == [note]
    assert [h["type"] for h in exported_case["history"]][-1] == "crm.case.note_added.v1"
    [message] = [m for m in doc["notification"]["items"] if m["rule"] == "case_opened"]
    assert message["address"] == email and listed["case_id"] in message["body"]
    assert email in {c["value"] for c in doc["notification"]["contacts"]}
    assert doc["analytics"]["insights"]["customer_id"] == customer
