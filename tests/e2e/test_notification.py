"""notification end to end: intake, case and notification as real processes on the embedded stack,
a real SMTP server (aiosmtpd) and a real HTTP webhook receiver in the test.

- a complaint becomes a case; resolving it emails the customer in their language;
- an SLA breach on crm.case.v1 reaches the team webhook signed as Standard Webhooks (checked
  with the `standardwebhooks` library) and with the deprecated HMAC header;
- SIGKILL between the SMTP send and its record: after the restart nothing reaches the SMTP
  server twice, and the message is dead-lettered as outcome_unknown.
"""

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import standardwebhooks
from aiokafka import AIOKafkaProducer
from crmtools.devstack import Stack
from eventkit.envelope import new_event, to_kafka

from contracts.topics import CASE
from tests.conftest import api_client, eventually, running_stack, smtp_env
from tests.e2e.helpers import interaction_body
from tests.notification.receivers import SmtpServer, WebhookServer, webhook_server

pytestmark = pytest.mark.e2e
SECRET = "whsec_ZTJlLXdlYmhvb2stc2VjcmV0LW9mLTMyLWJ5dGVzIQ=="  # Standard Webhooks' form
LEASE_MS = 2000
SERVICES = ("intake", "case", "notification")  # the ones these messages travel through


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    with webhook_server(SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer, hooks: WebhookServer) -> Iterator[Stack]:
    env = {
        **smtp_env(smtp),
        "WEBHOOK_SECRET": SECRET,
        "TEAM_WEBHOOK_URL": f"{hooks.url}/team",
        "NOTIFICATION_SEND_LEASE_MS": str(LEASE_MS),
        "NOTIFICATION_RETRY_BASE_MS": "200",
    }
    with running_stack(tmp_path_factory.mktemp("notification-stack"), env, SERVICES) as s:
        yield s


async def complaint(stack: Stack, client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    body = interaction_body(email, kind="complaint", content="the router is broken")
    r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=body)
    assert r.status_code == 202, r.text
    accepted: dict[str, Any] = r.json()
    return accepted


async def opened_case(stack: Stack, client: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"{stack.services['case'].url}/v1/cases", params={"customer_id": customer_id})
        cases = r.json()["cases"]
        return cases[0] if cases else None

    return await eventually(probe, what="the complaint opens a case")


async def notifications(stack: Stack, client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    r = await client.get(f"{stack.services['notification'].url}/v1/notifications", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_resolving_a_case_emails_the_customer_in_their_language(stack: Stack, smtp: SmtpServer) -> None:
    intake, case, notification = (stack.services[n].url for n in SERVICES)
    email = f"kunde-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        accepted = await complaint(stack, client, email)
        customer = accepted["customer_id"]
        r = await client.put(f"{intake}/v1/customers/{customer}/preferences", json={"language": "de"})
        assert r.status_code == 200, r.text
        [prefs_event] = r.json()["event_ids"]
        r = await client.get(
            f"{notification}/v1/customers/{customer}/timeline", params={"wait_for": prefs_event, "timeout_ms": 15000}
        )
        assert r.status_code == 200  # notification's projection has the language now
        listed = await opened_case(stack, client, customer)
        case_id, version = listed["case_id"], listed["version"]
        r = await client.post(f"{case}/v1/cases/{case_id}/status", json={"status": "open", "expected_version": version})
        assert r.status_code == 200, r.text
        r = await client.post(
            f"{case}/v1/cases/{case_id}/status",
            json={"status": "resolved", "reason": "Techniker war da.", "expected_version": r.json()["version"]},
        )
        assert r.status_code == 200, r.text

        async def resolved_mail() -> Any:
            found = [m for m in smtp.messages if m["To"] == email and m["X-CRM-Rule"] == "case_resolved"]
            return found or None

        [mail] = await eventually(resolved_mail, what="the case-resolved email reaches the SMTP server")
        assert mail["Subject"] == f"Ihr Fall {case_id} ist gelöst"
        assert mail["Content-Language"] == "de"
        assert "Techniker war da." in mail.get_content()
        notification_id = mail["X-CRM-Notification-Id"]

        async def recorded() -> list[dict[str, Any]] | None:
            sent = await notifications(stack, client, customer_id=customer, status="sent")
            return sent if any(n["notification_id"] == notification_id for n in sent) else None

        sent = await eventually(recorded, what="the API lists the sent message")
        resolved = next(n for n in sent if n["notification_id"] == notification_id)
        assert (resolved["rule"], resolved["channel"], resolved["language"]) == ("case_resolved", "email", "de")
        # Every rule made exactly one message for this customer: opened, status open, resolved.
        rules = sorted(n["rule"] for n in await notifications(stack, client, customer_id=customer))
        assert rules.count("case_resolved") == 1 and "case_opened" in rules
        assert len([m for m in smtp.messages if m["X-CRM-Notification-Id"] == notification_id]) == 1

        async def on_timeline() -> set[str] | None:
            r = await client.get(f"{notification}/v1/customers/{customer}/timeline", params={"limit": 100})
            types = {e["type"] for e in r.json()["events"]}
            return types if "crm.notification.sent.v1" in types else None

        types = await eventually(on_timeline, what="the decisions are on the customer's timeline")
        assert {"crm.notification.scheduled.v1", "crm.notification.sent.v1"} <= types


async def test_an_sla_breach_reaches_the_team_webhook_signed(stack: Stack, hooks: WebhookServer) -> None:
    customer, case_id = f"cust-{uuid.uuid4().hex[:8]}", f"case-{uuid.uuid4().hex[:8]}"
    data = {
        "case_id": case_id,
        "customer_id": customer,
        "target": "resolution",
        "due_at": datetime.now(UTC).isoformat(),
        "owner": None,
        "team": "support",
        "priority": "high",
        "type": "repair",
    }
    tp = "00-" + "e" * 32 + "-" + "f" * 16 + "-01"
    event = new_event("crm.case.sla_breached.v1", customer, data, "/crm/case", tp)
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        key, value, headers = to_kafka(event)
        await producer.send_and_wait(CASE, value, key=key, headers=headers)
    finally:
        await producer.stop()

    async def received() -> Any:
        found = [r for r in hooks.received("/team") if orjson.loads(r.body)["source_event_id"] == event.id]
        return found or None

    [request] = await eventually(received, what="the team webhook receives the breach")
    assert (request.verified, request.answered) == (True, 200)  # the receiver checked it itself, and again here
    receiver = standardwebhooks.Webhook(SECRET)
    body = receiver.verify(request.body, request.headers)
    assert request.headers["webhook-id"] == body["notification_id"]  # the id a retry keeps
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        receiver.verify(request.body.replace(case_id.encode(), b"case-forged"), request.headers)
    replayed = {**request.headers, "webhook-timestamp": str(int(request.headers["webhook-timestamp"]) - 600)}
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        receiver.verify(request.body, replayed)
    timestamp = request.headers["X-CRM-Timestamp"]
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-CRM-Signature"], f"v1={mac}")
    assert abs(time.time() - int(timestamp)) < 300  # fresh: a replay days later would be refused
    assert body["rule"] == "sla_breached" and case_id in body["subject"]
    assert request.headers["Idempotency-Key"] == body["notification_id"]
    async with api_client(timeout=10) as client:

        async def delivered() -> list[dict[str, Any]] | None:
            found = await notifications(stack, client, customer_id=customer, status="delivered")
            return found or None

        [item] = await eventually(delivered, what="the delivery is recorded")
    assert (item["audience"], item["recipient"], item["channel"]) == ("staff", "staff:team:support", "webhook")


async def test_sigkill_between_send_and_record_sends_no_duplicate(stack: Stack, smtp: SmtpServer) -> None:
    service = stack.services["notification"]
    email = f"crash-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        # Nothing else may be due, so the next send is this test's email.
        async def idle() -> bool | None:
            busy = [
                n
                for status in ("pending", "retrying", "sending")
                for n in await notifications(stack, client, status=status)
            ]
            return True if not busy else None

        await eventually(idle, what="no delivery under way")
        service.stop()
        service.start(extra_env={"EVENTKIT_CRASH_AT": "notification.after_send"})
        service.wait_ready()
        accepted = await complaint(stack, client, email)

        async def died() -> int | None:
            assert service.proc is not None
            return service.proc.poll()

        assert await eventually(died, timeout_s=60, what="the service dies after the send") == 137
        [mail] = [m for m in smtp.messages if m["To"] == email]
        assert mail["X-CRM-Rule"] == "case_opened"
        notification_id = mail["X-CRM-Notification-Id"]

        service.start()  # no crash point this time
        service.wait_ready()

        async def settled() -> dict[str, Any] | None:
            r = await client.get(f"{service.url}/v1/notifications/{notification_id}")
            item: dict[str, Any] = r.json()
            return item if r.status_code == 200 and item["status"] not in ("sending", "scheduled") else None

        item = await eventually(settled, what="the interrupted send is recovered")
        assert (item["status"], item["reason"]) == ("failed", "outcome_unknown")
        await asyncio.sleep(LEASE_MS / 1000 * 2)  # rounds after the recovery send nothing either
        assert len([m for m in smtp.messages if m["X-CRM-Notification-Id"] == notification_id]) == 1
        assert len([m for m in smtp.messages if m["To"] == email]) == 1
        listed = await notifications(stack, client, customer_id=accepted["customer_id"], status="failed")
        assert [n["dead_letter_reason"] for n in listed] == ["outcome_unknown"]
