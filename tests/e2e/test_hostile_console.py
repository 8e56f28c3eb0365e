"""Hostile input against the console and the live stream, on the real stack (issue 23 part 5).

The console learns the services' URLs only from /console/config.json (settings), never from its
own URL; the live timeline opens with a short-lived single-use ticket, not the API key in the URL;
pages and API answers carry a Content-Security-Policy and frame protection. (The browser side,
a hostile ?intake= link in a real Chromium, is in tests/browser/test_console.py.)
"""

import secrets
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from crmtools.devstack import Stack
from servicekit.streamtickets import StreamTickets

from tests.conftest import ADMIN_KEY, api_client, running_stack
from tests.e2e.helpers import make_key

pytestmark = pytest.mark.e2e

# Known to the test so it can sign tickets the services would accept but for one thing (expired).
SECRET = secrets.token_urlsafe(24)
EVIL = "http://evil.invalid"


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"STREAM_TICKET_SECRET": SECRET, "LOG_LEVEL": "INFO"}
    with running_stack(tmp_path_factory.mktemp("hostile-console"), env) as stack:
        yield stack


def directives(policy: str) -> dict[str, str]:
    return {d.strip().split(" ", 1)[0]: d.strip().partition(" ")[2] for d in policy.split(";") if d.strip()}


async def customer(stack: Stack) -> str:
    body = {
        "customer": {"email": f"hostile-{uuid.uuid4().hex[:8]}@example.com"},
        "channel": "web",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": "2026-01-01T10:00:00Z",
        "content": "hello",
    }
    async with api_client(timeout=10) as client:
        r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=body)
        assert r.status_code == 202, r.text
        return str(r.json()["customer_id"])


async def stream_status(url: str, params: dict[str, str] | None = None, key: str | None = None) -> tuple[int, str]:
    """The stream's status and content type; the body of a refusal."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", url, params=params, headers=headers) as r,
    ):
        if r.status_code != 200:
            await r.aread()
            return r.status_code, r.text
        return r.status_code, r.headers["content-type"]


async def ticket_for(stack: Stack, service: str, customer_id: str, key: str = ADMIN_KEY) -> str:
    async with api_client(key, timeout=10) as client:
        r = await client.post(f"{stack.services[service].url}/v1/stream-tickets", json={"customer_id": customer_id})
        assert r.status_code == 200, r.text
        body = r.json()
        assert 0 < body["expires_in"] <= 60
        return str(body["ticket"])


def stream_url(stack: Stack, service: str, customer_id: str) -> str:
    return f"{stack.services[service].url}/v1/customers/{customer_id}/timeline/stream"


# --- where the console sends the key ---------------------------------------------------------


async def test_console_config_names_the_configured_services_whatever_the_query(hostile_stack: Stack) -> None:
    intake = hostile_stack.services["intake"].url
    expected = {name: svc.url for name, svc in hostile_stack.services.items()}
    async with httpx.AsyncClient(timeout=10) as client:  # no key: the page reads it before sign-in
        plain = await client.get(f"{intake}/console/config.json")
        hostile = await client.get(
            f"{intake}/console/config.json", params={"intake": EVIL, "case": EVIL, "analytics": EVIL}
        )
        # the page itself, opened by a hostile link, is the same page
        page = await client.get(f"{intake}/console/", params={"intake": EVIL})
    assert plain.status_code == 200, plain.text
    assert plain.json() == {"services": expected}
    assert hostile.json() == {"services": expected}
    assert page.status_code == 200
    assert "evil" not in page.text


async def test_the_console_page_has_a_strict_policy_and_cannot_be_framed(hostile_stack: Stack) -> None:
    intake = hostile_stack.services["intake"].url
    async with httpx.AsyncClient(timeout=10) as client:
        scripts = ("/console/app.js", "/console/records.js", "/console/reports.js", "/console/merging.js")
        for path in ("/console/", *scripts, "/console/style.css", "/console/config.json"):
            r = await client.get(f"{intake}{path}", params={"intake": EVIL})
            assert r.status_code == 200, (path, r.status_code)
            policy = directives(r.headers["content-security-policy"])
            assert policy["default-src"] == "'self'", path
            assert policy["script-src"] == "'self'", path  # no inline script, no eval
            assert policy["frame-ancestors"] == "'none'", path
            connect = policy["connect-src"].split()
            assert connect == ["'self'", *(svc.url for svc in hostile_stack.services.values())], path
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"


async def test_api_answers_carry_no_run_no_frame_headers(hostile_stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for svc in hostile_stack.services.values():
            for path in ("/healthz", "/v1/customers/x/timeline"):  # an open answer and a refusal
                r = await client.get(svc.url + path)
                policy = directives(r.headers["content-security-policy"])
                assert policy["default-src"] == "'none'", (svc.name, path)
                assert policy["frame-ancestors"] == "'none'"
                assert r.headers["x-frame-options"] == "DENY"
                assert r.headers["x-content-type-options"] == "nosniff"
                assert r.headers["referrer-policy"] == "no-referrer"


# --- the key never in a URL; tickets ------------------------------------------------------------


async def test_the_key_in_the_url_is_refused_everywhere(hostile_stack: Stack) -> None:
    customer_id = await customer(hostile_stack)
    for name, svc in hostile_stack.services.items():
        status, body = await stream_status(stream_url(hostile_stack, name, customer_id), {"access_token": ADMIN_KEY})
        assert status == 401, (name, status, body)
        assert '"unauthenticated"' in body
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"{svc.url}/v1/customers/{customer_id}/timeline", params={"access_token": ADMIN_KEY})
        assert r.status_code == 401, (name, r.text)
    # the header still opens it (non-browser clients)
    status, content_type = await stream_status(stream_url(hostile_stack, "case", customer_id), key=ADMIN_KEY)
    assert (status, content_type.split(";")[0]) == (200, "text/event-stream")


async def test_a_fresh_ticket_opens_the_stream_once(hostile_stack: Stack) -> None:
    customer_id = await customer(hostile_stack)
    ticket = await ticket_for(hostile_stack, "case", customer_id)
    url = stream_url(hostile_stack, "case", customer_id)
    status, content_type = await stream_status(url, {"ticket": ticket})
    assert (status, content_type.split(";")[0]) == (200, "text/event-stream")
    status, body = await stream_status(url, {"ticket": ticket})
    assert status == 401
    assert "used already" in body


async def test_a_ticket_is_good_for_its_customer_and_its_service_only(hostile_stack: Stack) -> None:
    mine, other = await customer(hostile_stack), await customer(hostile_stack)
    ticket = await ticket_for(hostile_stack, "case", mine)
    status, body = await stream_status(stream_url(hostile_stack, "case", other), {"ticket": ticket})
    assert (status, "another customer" in body) == (401, True)
    for name in ("intake", "notification", "analytics"):
        status, body = await stream_status(stream_url(hostile_stack, name, mine), {"ticket": ticket})
        assert (status, "not for this service" in body) == (401, True), (name, body)
    # refused tries did not use it up
    status, _ = await stream_status(stream_url(hostile_stack, "case", mine), {"ticket": ticket})
    assert status == 200


async def test_expired_and_forged_tickets_are_refused(hostile_stack: Stack) -> None:
    customer_id = await customer(hostile_stack)
    url = stream_url(hostile_stack, "case", customer_id)
    signer = StreamTickets("case", SECRET)
    # signed as the service signs: good unless expired (so the refusal below is the expiry's)
    status, _ = await stream_status(url, {"ticket": signer.issue("bootstrap-admin", customer_id)})
    assert status == 200
    expired = signer.issue("bootstrap-admin", customer_id, expires_at=time.time() - 1)
    status, body = await stream_status(url, {"ticket": expired})
    assert (status, "expired" in body) == (401, True), body
    guessed = StreamTickets("case", "a guessed secret").issue("bootstrap-admin", customer_id)
    real = await ticket_for(hostile_stack, "case", customer_id)
    payload, mac = real.split(".")
    for forged in (guessed, f"{payload}.{mac[::-1]}", payload, f"{payload}x.{mac}", "not-a-ticket", ADMIN_KEY):
        status, body = await stream_status(url, {"ticket": forged})
        assert status == 401, (forged, body)
        assert '"unauthenticated"' in body


async def test_tickets_need_the_scope_of_the_timeline(hostile_stack: Stack) -> None:
    customer_id = await customer(hostile_stack)
    case = hostile_stack.services["case"].url
    ops = (await make_key(hostile_stack, "ops only", ["ops"]))["key"]
    agent = (await make_key(hostile_stack, "an agent", ["agent"]))["key"]
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{case}/v1/stream-tickets", json={"customer_id": customer_id})
        assert r.status_code == 401, r.text
        r = await client.post(
            f"{case}/v1/stream-tickets", json={"customer_id": customer_id}, headers={"Authorization": f"Bearer {ops}"}
        )
        assert (r.status_code, r.json()["error"]) == (403, "forbidden")
        r = await client.post(f"{case}/v1/stream-tickets", json={}, headers={"Authorization": f"Bearer {agent}"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "customer_id"
    ticket = await ticket_for(hostile_stack, "case", customer_id, key=agent)
    status, _ = await stream_status(stream_url(hostile_stack, "case", customer_id), {"ticket": ticket})
    assert status == 200
