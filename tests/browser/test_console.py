"""The agent console in a real Chromium against the four services as processes.

The page comes from intake on a free port and calls the other services on theirs; the stack is
started with CORS_ALLOW_ORIGINS naming intake's origin, so no service code changes for the test.
"""

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from eventkit.devstack import SERVICES, Stack, free_port

from tests.conftest import ADMIN_KEY, api_client

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("no /usr/bin/chromium and cannot apt-get install it (not root or no apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
                pytest.skip(f"could not install Debian chromium ({' '.join(cmd)} failed)")
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (requirements-dev.txt)")
    return CHROMIUM


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = {name: free_port() for name in SERVICES}
    env = {
        "CORS_ALLOW_ORIGINS": f"http://127.0.0.1:{ports['intake']}",
        "RATE_LIMIT_PER_KEY_RPS": "1000000",
        "RATE_LIMIT_PER_KEY_BURST": "1000000",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOG_LEVEL": "INFO",
    }
    stack = Stack(tmp_path_factory.mktemp("console"), pg_port=0, kafka_port=0, service_ports=ports, env=env)
    stack.start_infra()
    try:
        stack.start_services()
        yield stack
    finally:
        stack.stop()


def console_url(stack: Stack) -> str:
    query = urlencode({name: svc.url for name, svc in stack.services.items()})
    return f"{stack.services['intake'].url}/console/?{query}"


def interaction(email: str, content: str, direction: str = "inbound") -> dict[str, Any]:
    return {
        "customer": {"email": email},
        "channel": "email",
        "direction": direction,
        "kind": "message",
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": content,
    }


async def test_console_signs_in_finds_a_customer_follows_live_and_resolves_a_case(
    chromium: str, console_stack: Stack
) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    intake = console_stack.services["intake"].url
    case = console_stack.services["case"].url
    email = f"console-{uuid.uuid4().hex[:8]}@example.com"

    async with api_client(timeout=10) as client:
        r = await client.post(f"{intake}/v1/interactions", json=interaction(email, "first contact"))
        assert r.status_code == 202, r.text
        customer_id = r.json()["customer_id"]
        first_event = r.json()["event_id"]
        # The page reads the timeline from case: wait until case has applied the first event.
        r = await client.get(
            f"{case}/v1/customers/{customer_id}/timeline", params={"wait_for": first_event, "timeout_ms": 20_000}
        )
        assert r.status_code == 200, r.text

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                page.set_default_timeout(15_000)
                await page.goto(console_url(console_stack))

                # a wrong key is refused in words
                await page.get_by_label("API key").fill("not-a-key")
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.locator("#error")).to_contain_text("401")

                await page.get_by_label("API key").fill(ADMIN_KEY)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.locator("#workspace")).to_be_visible()

                await page.get_by_label("Search by").select_option("email")
                await page.get_by_label("Value").fill(email)
                await page.get_by_role("button", name="Find").click()
                await expect(page.locator("#customer-id")).to_have_text(customer_id)
                await expect(page.locator(f'#timeline li[data-event-id="{first_event}"]')).to_be_visible()
                await expect(page.locator("#live")).to_have_text("live")
                await expect(page.locator('#sync [data-service="case"]')).to_contain_text("in sync")
                await page.screenshot(path=str(ARTIFACTS / "console-1-timeline.png"), full_page=True)

                # an interaction posted elsewhere appears without reload, within 2 s
                r = await client.post(f"{intake}/v1/interactions", json=interaction(email, "live hello", "outbound"))
                assert r.status_code == 202, r.text
                live_event = r.json()["event_id"]
                item = page.locator(f'#timeline li[data-event-id="{live_event}"]')
                await expect(item).to_be_visible(timeout=2_000)
                await expect(item).to_contain_text("live hello")
                assert await page.locator("#timeline li").first.get_attribute("data-event-id") == live_event
                await page.screenshot(path=str(ARTIFACTS / "console-2-live.png"), full_page=True)

                # open a case and walk it to resolved: assign, open, resolved
                await page.get_by_label("Type").select_option("inquiry")
                await page.get_by_label("Title").fill("console case")
                await page.get_by_role("button", name="Open case").click()
                card = page.locator(".case").first
                await expect(card).to_have_attribute("data-status", "new")
                await card.get_by_label("Owner").fill("ada")
                await card.get_by_role("button", name="Assign").click()
                await expect(card.locator(".case-meta")).to_contain_text("owner ada")
                await card.get_by_label("New status").select_option("open")
                await card.get_by_role("button", name="Change status").click()
                await expect(card).to_have_attribute("data-status", "open")
                await card.get_by_label("New status").select_option("resolved")
                await card.get_by_role("button", name="Change status").click()
                await expect(card).to_have_attribute("data-status", "resolved")
                for kind in ("crm.case.opened.v1", "crm.case.assigned.v1"):
                    await expect(page.locator(f'#timeline li[data-type="{kind}"]')).to_have_count(1)
                changes = page.locator('#timeline li[data-type="crm.case.status_changed.v1"]')
                await expect(changes).to_have_count(2)
                await expect(changes.first).to_contain_text("open → resolved")
                await expect(page.locator("#error")).to_be_hidden()
                # analytics' insights join the profile once analytics has seen the customer
                await expect(page.locator('#profile dd[data-fact="Risk band"]')).to_be_visible(timeout=10_000)
                await page.screenshot(path=str(ARTIFACTS / "console-3-resolved.png"), full_page=True)

                # the narrow view: nothing wider than the screen
                await page.set_viewport_size({"width": 375, "height": 800})
                await asyncio.sleep(0.2)
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 375, f"page is {width} px wide at 375 px"
                await page.screenshot(path=str(ARTIFACTS / "console-4-375px.png"), full_page=True)
            finally:
                await browser.close()  # launch() used a fresh temporary profile; closing removes it
