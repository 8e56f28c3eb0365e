"""Campaigns in the console, in a real Chromium against the real stack: a campaign's message and
the customer's answer on the timeline, named by the campaign; and the Campaigns page listing
campaigns with their status, counts and analytics' results (a dash where analytics has none).
"""

import uuid
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
from tests.e2e.test_analytics import region_code

pytestmark = pytest.mark.e2e
NO_RESULT = "\u2013"  # an en dash: the page shows it where analytics has no results


async def region_known(client: httpx.AsyncClient, analytics: str, customer_id: str, region: str) -> bool | None:
    r = await client.get(f"{analytics}/v1/customers/{customer_id}/insights")
    return True if r.status_code == 200 and r.json()["region"] == region else None


async def timeline_has(client: httpx.AsyncClient, case: str, customer_id: str, type_: str) -> dict[str, Any] | None:
    r = await client.get(f"{case}/v1/customers/{customer_id}/timeline", params={"limit": 100})
    found = [e for e in r.json()["events"] if e["type"] == type_ and e["data"].get("campaign_id")]
    return found[0] if found else None


async def test_campaign_messages_and_answers_show_on_the_timeline_and_the_campaigns_page_lists_them(
    chromium: str,  # noqa: F811
    console_stack: Stack,  # noqa: F811
) -> None:
    from playwright.async_api import Route, expect

    intake, case = console_stack.services["intake"].url, console_stack.services["case"].url
    notification, analytics = console_stack.services["notification"].url, console_stack.services["analytics"].url
    email, region = f"campaign-{uuid.uuid4().hex[:8]}@example.com", region_code()
    name = f"Spring {uuid.uuid4().hex[:6]}"
    async with api_client(timeout=20) as client:
        first = await seen_by_case(client, console_stack, by_ref({"email": email}, "hello"))
        customer_id = first["customer_id"]
        r = await client.put(f"{intake}/v1/customers/{customer_id}/preferences", json={"region": region})
        assert r.status_code == 200, r.text
        await eventually(lambda: region_known(client, analytics, customer_id, region), 30, "analytics knows the region")

        # a service campaign (no marketing consent needed) to this customer's region alone, due now
        body = {
            "name": name,
            "audience": {"region": region},
            "purpose": "service",
            "templates": {"en": {"subject": "{campaign_name}", "body": "Hello {customer_id}"}},
        }
        r = await client.post(f"{notification}/v1/campaigns", json=body)
        assert r.status_code == 201, r.text
        campaign_id = r.json()["campaign_id"]
        sent = await eventually(
            lambda: timeline_has(client, case, customer_id, "crm.notification.sent.v1"), 60, "the campaign's message"
        )
        assert sent["data"]["campaign_id"] == campaign_id
        purchase = {**by_ref({"email": email}, "bought it"), "channel": "web", "kind": "purchase"}
        purchase["metadata"] = {"amount": 25}
        await seen_by_case(client, console_stack, purchase)
        await eventually(
            lambda: timeline_has(client, case, customer_id, "crm.analytics.campaign_response.v1"), 60, "the answer"
        )

        async def settled() -> bool | None:  # the page reads once: wait for what it is to show
            done = (await client.get(f"{notification}/v1/campaigns/{campaign_id}")).json()["status"] == "completed"
            r = await client.get(f"{analytics}/v1/campaigns/{campaign_id}/results")
            return True if done and r.status_code == 200 and r.json()["conversions"] == 1 else None

        await eventually(settled, 60, "the campaign completed and its purchase attributed")

        # a second campaign, cancelled before it is due; the page is told analytics has no results for it
        later = {**body, "name": f"{name} later", "send_at": "2099-01-01T09:00:00+00:00"}
        r = await client.post(f"{notification}/v1/campaigns", json=later)
        assert r.status_code == 201, r.text
        cancelled_id = r.json()["campaign_id"]
        r = await client.post(f"{notification}/v1/campaigns/{cancelled_id}:cancel")
        assert r.status_code == 200, r.text

    async with console_page(chromium, console_stack) as page:
        await page.get_by_label("Search by").select_option("email")
        await page.get_by_label("Value").fill(email)
        await page.get_by_role("button", name="Find").click()
        await expect(page.locator("#customer-id")).to_have_text(customer_id)

        # the campaign by its name, once notification has told it
        message = page.locator('#timeline li[data-type="crm.notification.sent.v1"]').first
        await expect(message.locator(".label")).to_have_text(f"Email to customer — sent (campaign {name})")
        await expect(message).to_have_attribute("data-campaign-id", campaign_id)
        answer = page.locator('#timeline li[data-type="crm.analytics.campaign_response.v1"]').first
        await expect(answer.locator(".label")).to_have_text(f"Answered campaign {name} by purchase")
        await expect(answer.locator(".summary")).to_contain_text("amount 25")
        # by id where the name is not known; a message (not a purchase) answers without "by"
        said = await page.evaluate(
            """() => [
              labelOf({type: "crm.notification.suppressed.v1",
                       data: {channel: "sms", audience: "customer", reason: "no_consent", campaign_id: "spring_26"}}),
              labelOf({type: "crm.analytics.campaign_response.v1", data: {campaign_id: "spring_26", kind: "message"}}),
              labelOf({type: "crm.notification.sent.v1", data: {channel: "email", audience: "customer"}}),
            ]"""
        )
        assert said == [
            "SMS to customer — suppressed: no consent (campaign spring_26)",
            "Answered campaign spring_26",
            "Email to customer — sent",
        ]
        await screenshot(page, "console-campaign-timeline.png")

        async def no_results(route: Route) -> None:
            await route.fulfill(status=404, json={"error": "campaign_not_found", "message": "not yet"})

        await page.route(f"{analytics}/v1/campaigns/{cancelled_id}/results", no_results)
        await page.get_by_role("button", name="Campaigns").click()
        await expect(page.locator("#campaigns")).to_be_visible()
        await expect(page.locator("#work")).to_be_hidden()
        await expect(page.get_by_role("button", name="Campaigns")).to_have_attribute("aria-current", "page")

        row = page.locator(f'#campaign-rows tr[data-campaign-id="{campaign_id}"]')
        await expect(row.locator('[data-col="campaign"]')).to_contain_text(name)
        await expect(row.locator('[data-col="status"] .status')).to_have_text("completed")
        await expect(row.locator('[data-col="audience_size"]')).to_have_text("1")
        await expect(row.locator('[data-col="sent"]')).to_have_text("1")
        await expect(row.locator('[data-col="responded"]')).to_have_text("1")
        await expect(row.locator('[data-col="response_rate"]')).to_have_text("100.0 %")
        await expect(row.locator('[data-col="conversions"]')).to_have_text("1")
        await expect(row.locator('[data-col="revenue"]')).to_have_text("25.00")

        other = page.locator(f'#campaign-rows tr[data-campaign-id="{cancelled_id}"]')
        await expect(other.locator('[data-col="status"] .status')).to_have_text("cancelled")
        await expect(other.locator('[data-col="audience_size"]')).to_have_text("not fixed yet")
        for col in ("responded", "response_rate", "conversions", "revenue"):
            await expect(other.locator(f'[data-col="{col}"]')).to_have_text(NO_RESULT)
        # newest first
        order = await page.locator("#campaign-rows tr").evaluate_all("(rows) => rows.map((r) => r.dataset.campaignId)")
        assert order.index(cancelled_id) < order.index(campaign_id)
        await expect(page.locator("#error")).to_be_hidden()
        await screenshot(page, "console-campaigns.png")

        # back to the desk: the customer is still open
        await page.get_by_role("button", name="Customers and cases").click()
        await expect(page.locator("#customer-id")).to_have_text(customer_id)
