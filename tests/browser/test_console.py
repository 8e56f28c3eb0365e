"""The agent console in a real Chromium against the four services as processes.

The page comes from intake on a free port and calls the other services on theirs, which it learns
from intake's /console/config.json (the stack sets CONSOLE_<SERVICE>_URL); the stack is started
with CORS_ALLOW_ORIGINS naming intake's origin.
"""

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from crmtools.devstack import SERVICES, Stack
from crmtools.processes import free_port

from tests import debian
from tests.conftest import ADMIN_KEY, api_client, eventually, running_stack, smtp_env
from tests.e2e.helpers import make_key, post_and_wait
from tests.notification.receivers import SmtpServer

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
MAIL_PAGE = "http://127.0.0.1:8025"  # only linked: the page never calls it
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
    """Debian's Chromium, installed here if missing; a set-up that could install it and did not fails."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: pip install -r requirements-dev.txt")
    if not Path(CHROMIUM).exists():
        cannot = debian.why_apt_cannot_run()
        if cannot:
            pytest.skip(f"no {CHROMIUM} and {cannot} (install Debian's `chromium` package)")
        why = debian.apt_install("chromium", recommends=True)  # recommends: the fonts screenshots need
        if not Path(CHROMIUM).exists():
            pytest.fail(f"could not install Debian's chromium: {why or f'{CHROMIUM} still missing'}")
    return CHROMIUM


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    ports = {name: free_port() for name in SERVICES}
    env = {
        **smtp_env(smtp),  # the customer's messages (a reply among them) are sent, not retried
        "CONSOLE_MAIL_URL": MAIL_PAGE,
        "CORS_ALLOW_ORIGINS": f"http://127.0.0.1:{ports['intake']}",
        "RATE_LIMIT_PER_KEY_RPS": "1000000",
        "RATE_LIMIT_PER_KEY_BURST": "1000000",
        "LOG_LEVEL": "INFO",
    }
    with running_stack(tmp_path_factory.mktemp("console"), env, service_ports=ports) as stack:
        yield stack


def console_url(stack: Stack) -> str:
    return f"{stack.services['intake'].url}/console/"


def interaction(email: str, content: str, direction: str = "inbound") -> dict[str, Any]:
    return by_ref({"email": email}, content, direction)


async def seen_by_case(client: httpx.AsyncClient, stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    """intake's answer to the interaction, once case has applied it (the page reads the timeline
    from case)."""
    return await post_and_wait(client, stack, body, ["case"], timeout_ms=20_000)


def by_ref(customer: dict[str, str], content: str, direction: str = "inbound") -> dict[str, Any]:
    return {
        "customer": customer,
        "channel": "email",
        "direction": direction,
        "kind": "message",
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": content,
    }


async def screenshot(page: Any, name: str) -> None:
    """A full-page screenshot into test-artifacts/, for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_console_signs_in_finds_a_customer_follows_live_and_resolves_a_case(
    chromium: str, console_stack: Stack, smtp: SmtpServer
) -> None:
    from playwright.async_api import async_playwright, expect

    intake = console_stack.services["intake"].url
    email = f"console-{uuid.uuid4().hex[:8]}@example.com"

    async with api_client(timeout=10) as client:
        first = await seen_by_case(client, console_stack, interaction(email, "first contact"))
        customer_id, first_event = first["customer_id"], first["event_id"]

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                page.set_default_timeout(15_000)
                await page.goto(console_url(console_stack))
                await expect(page.get_by_role("link", name="Dev mail")).to_have_attribute("href", f"{MAIL_PAGE}/")

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
                await screenshot(page, "console-1-timeline.png")

                # an interaction posted elsewhere appears without reload, within 2 s
                r = await client.post(f"{intake}/v1/interactions", json=interaction(email, "live hello", "outbound"))
                assert r.status_code == 202, r.text
                live_event = r.json()["event_id"]
                item = page.locator(f'#timeline li[data-event-id="{live_event}"]')
                await expect(item).to_be_visible(timeout=2_000)
                await expect(item).to_contain_text("live hello")
                assert await page.locator("#timeline li").first.get_attribute("data-event-id") == live_event
                await screenshot(page, "console-2-live.png")

                # open a case and walk it to resolved: assign, open, resolved
                await page.get_by_label("Type").select_option("inquiry")
                await page.get_by_label("Title").fill("console case")
                await page.get_by_role("button", name="Open case").click()
                card = page.locator(".case").first
                await expect(card).to_have_attribute("data-status", "new")
                await card.get_by_label("Owner").fill("ada")
                await card.get_by_role("button", name="Assign").click()
                await expect(card.locator(".case-meta")).to_contain_text("owner ada")
                await card.get_by_label("Note").fill("called back, all good")
                await card.get_by_role("button", name="Add note").click()
                await expect(card.locator(".case-meta")).to_contain_text("1 note(s)")
                # a reply from the case: case records it, notification mails it (rule agent_reply)
                await card.get_by_label("Channel").select_option("email")
                await card.get_by_label("Message").fill("we are on it")
                await card.get_by_role("button", name="Send reply").click()
                reply = page.locator('#timeline li[data-type="crm.case.reply_sent.v1"]')
                await expect(reply).to_contain_text('reply via email by bootstrap admin key: "we are on it"')
                await expect(card.get_by_label("Message")).to_have_value("")

                async def mailed() -> list[Any] | None:
                    found = [m for m in smtp.messages if m["To"] == email and m["X-CRM-Rule"] == "agent_reply"]
                    return found or None

                [mail] = await eventually(mailed, what="the reply reaches the customer's mailbox")
                assert mail.get_content().strip() == "we are on it"
                await card.get_by_label("New status").select_option("open")
                await card.get_by_role("button", name="Change status").click()
                await expect(card).to_have_attribute("data-status", "open")
                await card.get_by_label("New status").select_option("resolved")
                await card.get_by_role("button", name="Change status").click()
                await expect(card).to_have_attribute("data-status", "resolved")
                for kind in ("crm.case.opened.v1", "crm.case.assigned.v1", "crm.case.note_added.v1",
                             "crm.case.reply_sent.v1"):  # fmt: skip
                    await expect(page.locator(f'#timeline li[data-type="{kind}"]')).to_have_count(1)
                note = page.locator('#timeline li[data-type="crm.case.note_added.v1"]')
                await expect(note).to_contain_text("note: called back, all good")
                changes = page.locator('#timeline li[data-type="crm.case.status_changed.v1"]')
                await expect(changes).to_have_count(2)
                await expect(changes.first).to_contain_text("open → resolved")
                await expect(page.locator("#error")).to_be_hidden()
                # analytics' insights join the profile once analytics has seen the customer
                await expect(page.locator('#profile dd[data-fact="Risk band"]')).to_be_visible(timeout=10_000)
                # once the stream is quiet every service has intake's digest: four "in sync" at once
                await expect(page.locator("#sync .badge.ok")).to_have_count(len(SERVICES), timeout=20_000)
                for name in SERVICES:
                    await expect(page.locator(f'#sync [data-service="{name}"]')).to_have_text(f"{name}: in sync")
                await screenshot(page, "console-3-resolved.png")

                # the narrow view: nothing wider than the screen
                await page.set_viewport_size({"width": 375, "height": 800})
                await asyncio.sleep(0.2)
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 375, f"page is {width} px wide at 375 px"
                await screenshot(page, "console-4-375px.png")
            finally:
                await browser.close()  # launch() used a fresh temporary profile; closing removes it


@asynccontextmanager
async def console_page(
    chromium: str, stack: Stack, height: int = 900, query: str = "", watch: Callable[[Any], None] | None = None
) -> AsyncIterator[Any]:
    """A signed-in console page in a fresh headless Chromium. `query`: appended to the console's
    URL; `watch`: called with the page before it loads (to listen to its requests, say)."""
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": height})).new_page()
            page.set_default_timeout(15_000)
            if watch is not None:
                watch(page)
            await page.goto(console_url(stack) + (f"?{query}" if query else ""))
            await page.get_by_label("API key").fill(ADMIN_KEY)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#workspace")).to_be_visible()
            yield page
        finally:
            await browser.close()


async def test_console_finds_by_name_and_phone_from_the_keyboard_and_scrolls_to_older_events(
    chromium: str, console_stack: Stack
) -> None:
    from playwright.async_api import expect

    intake = console_stack.services["intake"].url
    case = console_stack.services["case"].url
    phone = f"+49151{random.randrange(10**7, 10**8)}"
    seeded = 45  # more than two pages of 20

    async with api_client(timeout=30) as client:
        items = [by_ref({"phone": phone}, f"message {n}") for n in range(seeded)]
        r = await client.post(f"{intake}/v1/interactions:batch", json={"items": items})
        assert r.status_code == 202, r.text
        answers = r.json()["items"]
        ada = answers[0]["customer_id"]
        other = by_ref({"email": f"{uuid.uuid4().hex[:8]}@example.com"}, "hi")
        r = await client.post(f"{intake}/v1/interactions", json=other)
        assert r.status_code == 202, r.text
        byron = r.json()["customer_id"]
        for customer_id, name in ((ada, "Ada Lovelace"), (byron, "Ada Byron")):
            r = await client.put(f"{intake}/v1/customers/{customer_id}/profile", json={"name": name})
            assert r.status_code == 200, r.text
        last = r.json()["event_ids"][0]
        r = await client.put(f"{intake}/v1/customers/{ada}/profile", json={"name": "Ada Lovelace"})
        ada_named = r.json()["event_ids"]
        assert ada_named == []  # the same name again changes nothing
        # The page reads the timeline from case: wait until case has the newest events of both.
        for customer_id, event_id in ((ada, answers[-1]["event_id"]), (byron, last)):
            r = await client.get(
                f"{case}/v1/customers/{customer_id}/timeline", params={"wait_for": event_id, "timeout_ms": 20_000}
            )
            assert r.status_code == 200, r.text

    async with console_page(chromium, console_stack, height=700) as page:
        # by phone, written as people write it
        await page.get_by_label("Search by").select_option("phone")
        await page.get_by_label("Value").fill(f"{phone[:3]} {phone[3:6]} {phone[6:]}")
        await page.get_by_role("button", name="Find").click()
        await expect(page.locator("#customer-id")).to_have_text(ada)
        await expect(page.locator('#profile dd[data-fact="Name"]')).to_have_text("Ada Lovelace")

        # by the whole name, any case: one customer, opened at once
        await page.get_by_label("Search by").select_option("name")
        await page.get_by_label("Value").fill("ADA byron")
        await page.get_by_role("button", name="Find").click()
        await expect(page.locator("#customer-id")).to_have_text(byron)
        await expect(page.locator('#profile dd[data-fact="Name"]')).to_have_text("Ada Byron")

        # keyboard only: after a reload (still signed in for this tab) focus is in the search box;
        # Tab to the search type, Home picks "name"; type a first name, Enter; Tab to a result, Enter
        await page.reload()
        await expect(page.get_by_label("Value")).to_be_focused()
        await page.keyboard.press("Shift+Tab")
        await expect(page.get_by_label("Search by")).to_be_focused()
        await page.keyboard.press("Home")
        await expect(page.get_by_label("Search by")).to_have_value("name")
        await page.keyboard.press("Tab")
        await page.keyboard.type("ada")
        await page.keyboard.press("Enter")
        await expect(page.locator("#results button")).to_have_count(2)
        for _ in range(4):
            await page.keyboard.press("Tab")
            if "Lovelace" in await page.evaluate("document.activeElement.textContent"):
                break
        await expect(page.locator("#results button", has_text="Ada Lovelace")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page.locator("#customer-id")).to_have_text(ada)
        await expect(page.locator("#profile-h")).to_be_focused()
        await screenshot(page, "console-5-keyboard.png")

        # infinite scroll: one page at first, older pages as the end of the list comes into view
        timeline = page.locator("#timeline li")
        created = page.locator('#timeline li[data-type="crm.customer.created.v1"]')
        await expect(timeline.nth(19)).to_be_attached()
        await expect(page.locator("#load-more")).to_be_visible()  # the keyboard's way to the same
        assert await timeline.count() < seeded  # (live items may have joined the first page)
        await expect(created).to_have_count(0)
        for _ in range(10):
            await page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
            if await page.locator("#timeline-end").text_content() == "start of the timeline":
                break
            await asyncio.sleep(0.3)
        await expect(page.locator("#timeline-end")).to_have_text("start of the timeline")
        await expect(created).to_have_count(1)
        assert await timeline.count() >= seeded + 2  # every message, the customer's creation and name
        for n in (0, seeded // 2, seeded - 1):
            await expect(page.locator("#timeline li", has_text=f'"message {n}"')).to_have_count(1)
        await expect(page.locator('#timeline li[data-type="crm.customer.profile_changed.v1"]')).to_contain_text(
            "name Ada Lovelace"
        )
        await expect(page.locator("#error")).to_be_hidden()
        await screenshot(page, "console-6-scrolled.png")

        # the badge compares digests, not counts: case answering intake's count with another
        # digest is not in sync; with fewer events it is behind by the difference
        # (all four in sync first: every service applied the name change without parking it)
        await expect(page.locator("#sync .badge.ok")).to_have_count(len(SERVICES), timeout=20_000)
        badge = page.locator('#sync [data-service="case"]')
        await expect(badge).to_have_text("case: in sync")

        def case_digest(digest: str, events_delta: int) -> Any:
            async def handler(route: Any) -> None:
                real = await route.fetch()
                body = await real.json()
                body["digest"], body["events"] = digest, body["events"] + events_delta
                await route.fulfill(response=real, json=body)

            return handler

        case_digest_url = f"{case}/v1/customers/{ada}/timeline/digest"
        await page.route(case_digest_url, case_digest("0" * 64, 0))
        await expect(badge).to_have_text("case: differs", timeout=5_000)
        await page.unroute(case_digest_url)
        await page.route(case_digest_url, case_digest("0" * 64, -3))
        await expect(badge).to_have_text("case: behind by 3", timeout=5_000)
        await page.unroute(case_digest_url)
        await expect(badge).to_have_text("case: in sync", timeout=5_000)


async def test_a_hostile_link_gets_no_key_and_the_stream_url_holds_none(chromium: str, console_stack: Stack) -> None:
    """/console/?intake=http://evil... : every request goes to the configured services, the key in
    headers only; the live stream opens with a ticket; the page runs under its CSP without a report."""
    from playwright.async_api import expect

    case = console_stack.services["case"].url
    evil = "http://evil.invalid:9"
    email = f"hostile-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        customer_id = (await seen_by_case(client, console_stack, interaction(email, "hostile link")))["customer_id"]

    requests: list[tuple[str, dict[str, str]]] = []
    csp_reports: list[str] = []

    def watch(page: Any) -> None:
        page.on("request", lambda req: requests.append((req.url, req.headers)))
        page.on("console", lambda msg: csp_reports.append(msg.text) if "Content Security Policy" in msg.text else None)

    hostile = urlencode({name: evil for name in SERVICES})
    async with console_page(chromium, console_stack, query=hostile, watch=watch) as page:
        await page.get_by_label("Search by").select_option("email")
        await page.get_by_label("Value").fill(email)
        await page.get_by_role("button", name="Find").click()
        await expect(page.locator("#customer-id")).to_have_text(customer_id)
        await expect(page.locator("#live")).to_have_text("live")
        await expect(page.locator("#sync .badge")).to_have_count(len(SERVICES))
        await expect(page.locator("#error")).to_be_hidden()

    allowed = tuple(svc.url + "/" for svc in console_stack.services.values())
    assert requests
    strays = [url for url, _ in requests if not url.startswith(allowed)]
    assert not strays, f"requests outside the configured services: {strays}"
    with_key = [url for url, headers in requests if ADMIN_KEY in headers.get("authorization", "")]
    assert any(url.startswith(f"{case}/") for url in with_key)  # the key does go, in the header
    assert not [url for url, _ in requests if ADMIN_KEY in url or "access_token" in url]
    streams = [url for url, _ in requests if url.startswith(f"{case}/v1/customers/{customer_id}/timeline/stream")]
    assert streams and all("?ticket=" in url for url in streams)
    assert not csp_reports, csp_reports


async def test_console_lists_merge_suggestions_and_an_agent_accepts_one(chromium: str, console_stack: Stack) -> None:
    """Two customers named together by a channel key are not merged: the console lists the
    suggestion, the agent accepts it, and the merged id then redirects to the survivor."""
    from playwright.async_api import expect

    intake = console_stack.services["intake"].url
    a_mail, b_mail = (f"pair-{uuid.uuid4().hex[:8]}@example.com" for _ in range(2))
    key = (await make_key(console_stack, "web", ["channel:web"], ["intake"]))["key"]
    async with api_client(key, timeout=20) as web:

        async def post(customer: dict[str, str]) -> str:
            r = await web.post(f"{intake}/v1/interactions", json={**by_ref(customer, "hello"), "channel": "web"})
            assert r.status_code == 202, r.text
            return str(r.json()["customer_id"])

        older, younger = await post({"email": a_mail}), await post({"email": b_mail})
        assert await post({"email": b_mail, "id": older}) == older  # a claim: no merge
    async with api_client(timeout=20) as agent:
        r = await agent.get(f"{intake}/v1/merge-suggestions", params={"customer_id": younger})
        [suggestion] = r.json()["items"]

    async with console_page(chromium, console_stack) as page:
        item = page.locator(f'#suggestions li[data-suggestion="{suggestion["suggestion_id"]}"]')
        await expect(item).to_contain_text(f"{younger} into {older}")
        await expect(item).to_contain_text(b_mail)
        await screenshot(page, "console-merge-suggestions.png")
        await item.get_by_role("button", name=f"Accept merging {younger} into {older}").click()
        await expect(item).to_have_count(0)
        await expect(page.locator("#error")).to_be_hidden()

    async with api_client(timeout=20) as agent:
        r = await agent.get(f"{intake}/v1/customers/{younger}", follow_redirects=False)
        assert r.status_code == 308
        r = await agent.get(f"{intake}/v1/merge-suggestions", params={"customer_id": older, "status": "accepted"})
        assert [s["suggestion_id"] for s in r.json()["items"]] == [suggestion["suggestion_id"]]


async def test_console_work_queues_show_mine_and_unassigned_live_after_the_agent_goes_online(
    chromium: str, console_stack: Stack
) -> None:
    """An agent signs in with a key named as their agent id, goes online from the console; a
    complaint opens a case in team support that auto-assignment gives them, and it appears under
    Mine without a reload; with no capacity left the next one appears under Unassigned."""
    from playwright.async_api import async_playwright, expect

    case = console_stack.services["case"].url
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    key = (await make_key(console_stack, agent_id, ["agent"], ["case"]))["key"]
    profile = {"name": f"Agent {agent_id}", "teams": ["support"], "capacity": 2}
    async with api_client(timeout=20) as admin:
        r = await admin.put(f"{case}/v1/agents/{agent_id}", json=profile)
        assert r.status_code == 201 and r.json()["status"] == "offline", r.text

        async def complaint(email: str) -> str:
            body = {**interaction(email, "my parcel never came"), "kind": "complaint"}
            return str((await seen_by_case(admin, console_stack, body))["customer_id"])

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                page.set_default_timeout(15_000)
                await page.goto(console_url(console_stack))
                await page.get_by_label("API key").fill(key)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.locator("#workspace")).to_be_visible()
                await expect(page.get_by_role("textbox", name="Team")).to_have_value("support")
                await page.get_by_label("Your agent id").fill(agent_id)
                await page.get_by_role("button", name="Show queue").click()
                await expect(page.locator("#agent-state")).to_contain_text("offline, 0 of 2 open case(s)")
                await page.get_by_label("Your status").select_option("online")
                await page.get_by_role("button", name="Set status").click()
                await expect(page.locator("#agent-state")).to_contain_text("online, 0 of 2 open case(s)")
                await expect(page.locator("#error")).to_be_hidden()

                # a complaint through intake: a case in support, auto-assigned to the online agent
                first = await complaint(f"mine-{uuid.uuid4().hex[:8]}@example.com")
                mine = page.locator(f'#queue-mine li[data-customer-id="{first}"]')
                await expect(mine).to_be_visible(timeout=30_000)  # no reload: the page polls
                await expect(mine).to_contain_text("complaint")
                await expect(page.get_by_role("tab", name="Mine")).to_have_text("Mine (1)")
                await expect(page.locator("#agent-state")).to_contain_text("online, 1 of 2 open case(s)")
                await page.get_by_role("tab", name="Team").click()
                owner = page.locator(f'#queue-team li.owner[data-owner="{agent_id}"]')
                await expect(owner).to_contain_text(f"{agent_id} (Agent {agent_id}): online, 1 of 2")
                await expect(owner.locator(f'li[data-customer-id="{first}"]')).to_be_visible()

                # capacity 1 instead: no room left, so the next complaint waits in Unassigned
                r = await admin.put(f"{case}/v1/agents/{agent_id}", json={**profile, "capacity": 1})
                assert r.status_code == 200 and r.json()["capacity"] == 1, r.text
                second = await complaint(f"waits-{uuid.uuid4().hex[:8]}@example.com")
                await page.get_by_role("tab", name="Unassigned").click()
                await expect(page.locator("#panel-mine")).to_be_hidden()
                waiting = page.locator(f'#queue-unassigned li[data-customer-id="{second}"]')
                await expect(waiting).to_be_visible(timeout=30_000)
                await expect(page.locator("#agent-state")).to_contain_text("online, 1 of 1 open case(s)")
                await screenshot(page, "console-work-queues.png")

                # a case in a queue opens its customer
                await waiting.get_by_role("button").click()
                await expect(page.locator("#customer-id")).to_have_text(second)
                await page.get_by_role("tab", name="Mine").click()
                await page.locator(f'#queue-mine li[data-customer-id="{first}"]').get_by_role("button").click()
                await expect(page.locator("#customer-id")).to_have_text(first)
                await expect(page.locator("#error")).to_be_hidden()

                r = await admin.get(f"{case}/v1/cases", params={"customer_id": second})
                assert [c["owner"] for c in r.json()["cases"]] == [None]

                # another team's queue: a hostile title is text, never markup
                other = f"hostile-{uuid.uuid4().hex[:8]}"
                title = '<img src=x id=pwned onerror="document.title=1">'
                r = await admin.post(
                    f"{case}/v1/cases", json={"customer_id": first, "type": "repair", "team": other, "title": title}
                )
                assert r.status_code == 201, r.text
                await page.get_by_role("textbox", name="Team").fill(other)
                await page.get_by_role("button", name="Show queue").click()
                await page.get_by_role("tab", name="Unassigned").click()
                hostile = page.locator(f'#queue-unassigned li[data-case-id="{r.json()["case_id"]}"]')
                await expect(hostile).to_contain_text(title)
                await expect(page.locator("#pwned")).to_have_count(0)
                await expect(page.get_by_role("tab", name="Mine")).to_have_text("Mine (0)")

                # signing out stops the polling (the page's own state: no waiting for silence)
                assert await page.evaluate("state.queueTimer") is not None
                await page.get_by_role("button", name="Sign out").click()
                await expect(page.locator("#signin")).to_be_visible()
                assert await page.evaluate("state.queueTimer") is None
                await expect(page.locator("#queue-mine li")).to_have_count(0)
            finally:
                await browser.close()
