"""The console's timeline in the agent's language, in a real Chromium against the real stack:
human labels instead of event type names, when an interaction happened on its channel (the
recording time on hover), and what became of each message notification decided to send.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.browser.test_console import (  # noqa: F401 (fixtures)
    by_ref,
    chromium,
    console_page,
    console_stack,
    screenshot,
    seen_by_case,
)
from tests.conftest import api_client, eventually

pytestmark = pytest.mark.e2e


async def resolve(client: httpx.AsyncClient, case: str, case_id: str) -> None:
    """Walk the case to resolved the way an agent may (through open when it must)."""
    for _ in range(3):
        view = (await client.get(f"{case}/v1/cases/{case_id}")).json()
        if view["status"] == "resolved":
            return
        step = "resolved" if "resolved" in view["allowed_transitions"] else "open"
        r = await client.post(
            f"{case}/v1/cases/{case_id}/status", json={"status": step}, headers={"If-Match": f'"{view["version"]}"'}
        )
        assert r.status_code == 200, r.text
    raise AssertionError(f"case {case_id} not resolved")


async def test_timeline_shows_labels_the_time_it_happened_and_notification_outcomes(
    chromium: str,  # noqa: F811
    console_stack: Stack,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    case = console_stack.services["case"].url
    email = f"labels-{uuid.uuid4().hex[:8]}@example.com"
    # two hours before it reaches us: the page must show this time, not the recording time
    occurred = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    async with api_client(timeout=20) as client:
        earlier = {**by_ref({"email": email}, "where is my order"), "occurred_at": occurred.isoformat()}
        message = await seen_by_case(client, console_stack, earlier)
        customer_id = message["customer_id"]
        complaint = await seen_by_case(
            client, console_stack, {**by_ref({"email": email}, "it came broken"), "kind": "complaint"}
        )

        async def opened() -> str | None:
            r = await client.get(f"{case}/v1/cases", params={"customer_id": customer_id})
            return str(r.json()["cases"][0]["case_id"]) if r.json()["cases"] else None

        case_id = await eventually(opened, what="the complaint opens a case")
        await resolve(client, case, case_id)

    async with console_page(chromium, console_stack) as page:
        await page.get_by_label("Search by").select_option("email")
        await page.get_by_label("Value").fill(email)
        await page.get_by_role("button", name="Find").click()
        await expect(page.locator("#customer-id")).to_have_text(customer_id)

        first = page.locator(f'#timeline li[data-event-id="{message["event_id"]}"]')
        await expect(first.locator(".label")).to_have_text("Inbound email")
        await expect(first).to_contain_text('"where is my order"')
        shown = first.locator("time")
        assert datetime.fromisoformat(str(await shown.get_attribute("datetime"))) == occurred
        local = await page.evaluate("(t) => new Date(t).toLocaleString()", occurred.isoformat())
        await expect(shown).to_have_text(local)
        title = str(await shown.get_attribute("title"))
        assert title.startswith("recorded ") and title != f"recorded {local}", title

        labels = {
            f'li[data-event-id="{complaint["event_id"]}"]': "Inbound email complaint",
            'li[data-type="crm.customer.created.v1"]': "Customer created",
            'li[data-type="crm.case.opened.v1"]': "Complaint case opened",
            'li[data-type="crm.case.status_changed.v1"]': "Case resolved",  # newest first
        }
        for selector, label in labels.items():
            await expect(page.locator(f"#timeline {selector}").first.locator(".label")).to_have_text(label)

        # the case's messages to the customer mail through the stack's SMTP server: scheduled, sent
        # (a relay's acceptance, not a delivery), and said as channel, audience and outcome
        sent = page.locator('#timeline li[data-type="crm.notification.sent.v1"]')
        await expect(sent.first.locator(".label")).to_have_text("Email to customer — sent", timeout=30_000)
        await expect(sent.first.locator(".summary")).to_contain_text("try 1")
        scheduled = page.locator('#timeline li[data-type="crm.notification.scheduled.v1"]')
        await expect(scheduled.first.locator(".label")).to_have_text("Email to customer — scheduled")
        await expect(page.locator("#timeline li", has_text="rule case_opened").first).to_be_visible()

        # no raw type name anywhere on the timeline; an unknown type still reads as words
        for text in await page.locator("#timeline .label").all_text_contents():
            assert text and "crm." not in text and ".v1" not in text, text
        unknown = await page.evaluate("labelOf({type: 'crm.billing.invoice_overdue.v2', data: {}})")
        assert unknown == "Billing invoice overdue"
        sms = {"channel": "sms", "audience": "customer"}
        decisions: list[Any] = [
            ["crm.notification.failed.v1", {"channel": "webhook", "audience": "staff", "reason": "connection_error"}],
            ["crm.notification.suppressed.v1", {**sms, "reason": "no_consent"}],
            ["crm.notification.scheduled.v1", {"channel": None, "audience": "customer", "delayed_reason": None}],
            ["crm.notification.scheduled.v1", {**sms, "delayed_reason": "quiet_hours"}],
            ["crm.analytics.segment_changed.v1", {"segment": "vip"}],
            ["crm.consent.changed.v1", {"purpose": "marketing", "channel": None, "granted": False}],
        ]
        said = await page.evaluate("(items) => items.map(([type, data]) => labelOf({type, data}))", decisions)
        assert said == [
            "Webhook to staff — failed: connection error",
            "SMS to customer — suppressed: no consent",
            "Message to customer — scheduled",
            "SMS to customer — scheduled, held for quiet hours",
            "Segment changed to VIP",
            "Marketing consent withdrawn",
        ]
        await expect(page.locator("#error")).to_be_hidden()
        await screenshot(page, "console-labels.png")
