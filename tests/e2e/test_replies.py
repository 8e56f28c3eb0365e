"""An agent's reply end to end, the four services as real processes and a real SMTP server: the
reply is a case event (the first response), notification mails its body to the customer's
address on the agent's channel (rule agent_reply), and every decision about it is on all four
timelines with equal digests. A channel without an address or a blocked one suppresses it."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client, eventually, running_stack, smtp_env
from tests.e2e.conftest import digests
from tests.e2e.helpers import interaction_body, make_key
from tests.notification.receivers import SmtpServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("replies-stack"), smtp_env(smtp)) as s:
        yield s


async def case_of(stack: Stack, client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """The case a complaint from `email` opens, once case has it."""
    body = interaction_body(email, kind="complaint", content="the router is broken")
    r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=body)
    assert r.status_code == 202, r.text
    customer = r.json()["customer_id"]

    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"{stack.services['case'].url}/v1/cases", params={"customer_id": customer})
        cases = r.json()["cases"]
        return cases[0] if cases else None

    found: dict[str, Any] = await eventually(probe, what="the complaint opens a case")
    return found


async def reply_decisions(stack: Stack, client: httpx.AsyncClient, customer: str) -> dict[str, list[tuple[str, Any]]]:
    """Per service: (type, channel/reason) of the notification events of rule agent_reply on its timeline."""
    out = {}
    for name, svc in stack.services.items():
        r = await client.get(f"{svc.url}/v1/customers/{customer}/timeline", params={"limit": 100})
        assert r.status_code == 200, r.text
        out[name] = sorted(
            (e["type"], e["data"].get("reason") or e["data"]["channel"])
            for e in r.json()["events"]
            if e["type"].startswith("crm.notification.") and e["data"].get("rule") == "agent_reply"
        )
    return out


async def on_all_timelines(stack: Stack, client: httpx.AsyncClient, customer: str, expected: list[Any]) -> None:
    """Until the four timelines hold exactly `expected` for agent_reply and their digests are equal."""

    async def probe() -> bool | None:
        decisions = await reply_decisions(stack, client, customer)
        if any(found != sorted(expected) for found in decisions.values()):
            return None
        return True if len(set((await digests(stack, customer, client)).values())) == 1 else None

    await eventually(probe, timeout_s=60, what=f"agent_reply decisions {expected} on all four timelines")


async def test_a_reply_is_mailed_to_the_customer_and_its_decisions_are_on_all_four_timelines(
    stack: Stack, smtp: SmtpServer
) -> None:
    case = stack.services["case"].url
    email = f"reply-{uuid.uuid4().hex[:8]}@example.com"
    agent = await make_key(stack, "agent ana", ["agent"])
    async with api_client(timeout=10) as client, api_client(agent["key"], timeout=10) as as_ana:
        listed = await case_of(stack, client, email)
        case_id, customer = listed["case_id"], listed["customer_id"]
        assert listed["first_response_at"] is None
        text = "A technician comes on Monday between 8 and 12.\nKind regards"
        r = await as_ana.post(
            f"{case}/v1/cases/{case_id}/replies",
            json={"channel": "email", "body": text},
            headers={"If-Match": f'"{listed["version"]}"'},
        )
        assert r.status_code == 200, r.text
        replied = r.json()
        assert replied["version"] == listed["version"] + 1 and r.headers["ETag"] == f'"{replied["version"]}"'
        assert replied["first_response_at"] is not None  # the first reply is the first response
        [event_id] = replied["event_ids"]
        detail = (await client.get(f"{case}/v1/cases/{case_id}")).json()
        entry = next(h for h in detail["history"] if h["event_id"] == event_id)
        assert entry["type"] == "crm.case.reply_sent.v1"
        data = entry["data"]
        assert (data["channel"], data["author"], data["body"]) == ("email", "agent ana", text)
        assert detail["sla"]["first_response"]["met_at"] == replied["first_response_at"]

        async def mailed() -> Any:
            found = [m for m in smtp.messages if m["To"] == email and m["X-CRM-Rule"] == "agent_reply"]
            return found or None

        [mail] = await eventually(mailed, what="the reply reaches the SMTP server")
        assert mail["Subject"] == f"Re: your case {case_id}"
        assert mail.get_content().replace("\r\n", "\n").strip() == text  # SMTP lines end in CRLF
        await on_all_timelines(
            stack, client, customer, [("crm.notification.scheduled.v1", "email"), ("crm.notification.sent.v1", "email")]
        )


async def test_a_reply_without_an_address_or_on_a_blocked_channel_is_suppressed_not_rerouted(
    stack: Stack, smtp: SmtpServer
) -> None:
    intake, case = stack.services["intake"].url, stack.services["case"].url
    email = f"blocked-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        listed = await case_of(stack, client, email)
        case_id, customer = listed["case_id"], listed["customer_id"]
        # No phone known: an SMS reply is suppressed (no_address), not sent by email instead.
        r = await client.post(
            f"{case}/v1/cases/{case_id}/replies",
            json={"channel": "sms", "body": "Please call us.", "author": "ana"},
            headers={"If-Match": f'"{listed["version"]}"'},
        )
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        consent = {"consents": [{"purpose": "service", "channel": "email", "granted": False}]}
        r = await client.put(f"{intake}/v1/customers/{customer}/consent", json=consent)
        assert r.status_code == 200, r.text
        [consent_event] = r.json()["event_ids"]
        r = await client.get(
            f"{stack.services['notification'].url}/v1/customers/{customer}/timeline",
            params={"wait_for": consent_event, "timeout_ms": 15000},
        )
        assert r.status_code == 200  # notification knows the email channel is blocked now
        r = await client.post(
            f"{case}/v1/cases/{case_id}/replies",
            json={"channel": "email", "body": "Are you there?", "author": "ana"},
            headers={"If-Match": f'"{version}"'},
        )
        assert r.status_code == 200, r.text
        await on_all_timelines(
            stack,
            client,
            customer,
            [("crm.notification.suppressed.v1", "blocked_channel"), ("crm.notification.suppressed.v1", "no_address")],
        )
        assert not [m for m in smtp.messages if m["To"] == email and m["X-CRM-Rule"] == "agent_reply"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "fax", "body": "hi"}, "channel"),
        ({"channel": "email", "body": ""}, "body"),
        ({"channel": "email", "body": "x" * 10_001}, "body"),
        ({"channel": "email"}, "body"),
        ({"channel": "email", "body": "hi", "author": " ana"}, "author"),
        ({"channel": "email", "body": "hi", "cc": "someone@example.com"}, "cc"),
    ],
)
async def test_bad_replies_are_422_naming_the_field(stack: Stack, body: dict[str, Any], field: str) -> None:
    async with api_client(timeout=10) as client:
        listed = await case_of(stack, client, f"bad-{uuid.uuid4().hex[:8]}@example.com")
        url = f"{stack.services['case'].url}/v1/cases/{listed['case_id']}/replies"
        r = await client.post(url, json=body, headers={"If-Match": f'"{listed["version"]}"'})
        assert r.status_code == 422, r.text
        answer = r.json()
        assert answer["error"] == "validation_failed"
        assert field in [e["field"] for e in answer["errors"]], answer
        assert all(e["reason"] for e in answer["errors"])


async def test_a_reply_needs_the_version_and_a_case_that_is_not_closed(stack: Stack) -> None:
    case = stack.services["case"].url
    async with api_client(timeout=10) as client:
        listed = await case_of(stack, client, f"closed-{uuid.uuid4().hex[:8]}@example.com")
        url = f"{case}/v1/cases/{listed['case_id']}/replies"
        reply = {"channel": "email", "body": "hi", "author": "ana"}
        r = await client.post(url, json=reply)
        assert (r.status_code, r.json()["error"]) == (428, "precondition_required")
        r = await client.post(url, json=reply, headers={"If-Match": '"99"'})
        assert (r.status_code, r.json()["error"]) == (409, "concurrency_conflict")
        r = await client.post(f"{case}/v1/cases/no-such-case/replies", json=reply, headers={"If-Match": '"1"'})
        assert (r.status_code, r.json()["error"]) == (404, "case_not_found")
        version = listed["version"]
        for to in ("open", "resolved", "closed"):
            r = await client.post(f"{case}/v1/cases/{listed['case_id']}/status", json={"status": to},
                                  headers={"If-Match": f'"{version}"'})  # fmt: skip
            assert r.status_code == 200, r.text
            version = r.json()["version"]
        r = await client.post(url, json=reply, headers={"If-Match": f'"{version}"'})
        assert (r.status_code, r.json()["error"]) == (409, "case_closed")
