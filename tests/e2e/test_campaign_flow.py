"""A campaign through the whole real stack (issue 28's "Done when"): customers made through intake
in a region of their own (some consenting, one not, one in quiet hours, one merged pair, one
erased), a campaign created on notification, its audience resolved by analytics, each decision
on all four timelines with equal digests, a purchase attributed and counted in the results; and
a notification killed mid-send sends nobody twice."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from contracts import analytics as contract
from tests.conftest import api_client, eventually, running_stack, smtp_env
from tests.e2e.conftest import digests
from tests.e2e.helpers import interaction_body, post_and_wait, wait_applied
from tests.e2e.test_analytics import region_code
from tests.e2e.test_campaign_results import campaign_results
from tests.notification.receivers import SmtpServer

pytestmark = pytest.mark.e2e
DECISIONS = ("scheduled", "sent", "delivered", "failed", "suppressed")
RATE_PER_S = 5  # slow enough that a campaign of a few dozen is still sending when killed


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    env = {**smtp_env(smtp), "CAMPAIGN_RATE_PER_S": str(RATE_PER_S)}
    with running_stack(tmp_path_factory.mktemp("campaign-stack"), env) as s:
        yield s


class People:
    """Customers made through intake, each event they caused remembered so that every service
    can be waited on before the campaign is due."""

    def __init__(self, stack: Stack, client: httpx.AsyncClient, region: str) -> None:
        self.stack, self.client, self.region = stack, client, region
        self.intake = stack.services["intake"].url
        self.last: dict[str, str] = {}  # customer -> the last event id they caused

    async def new(self, identifiers: dict[str, str], consent: bool) -> str:
        posted = await post_and_wait(self.client, self.stack, interaction_body("x", customer=identifiers))
        customer: str = posted["customer_id"]
        await self.put(customer, "preferences", {"region": self.region})
        if consent:
            await self.consent(customer)
        return customer

    async def put(self, customer: str, what: str, body: dict[str, Any]) -> None:
        r = await self.client.put(f"{self.intake}/v1/customers/{customer}/{what}", json=body)
        assert r.status_code == 200, r.text
        if r.json()["event_ids"]:
            self.last[customer] = r.json()["event_ids"][-1]

    async def consent(self, customer: str) -> None:
        await self.put(
            customer, "consent", {"consents": [{"purpose": "marketing", "channel": "email", "granted": True}]}
        )

    async def settled(self) -> None:
        for customer, event_id in self.last.items():
            await wait_applied(self.client, self.stack, customer, event_id, timeout_ms=15_000)


async def wait_campaign(client: httpx.AsyncClient, url: str, campaign_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"{url}/v1/campaigns/{campaign_id}")
        body: dict[str, Any] = r.json()
        return body if r.status_code == 200 and body["status"] == status else None

    return await eventually(probe, 90, f"campaign {campaign_id} {status}")


async def decisions(client: httpx.AsyncClient, url: str, customer: str, campaign_id: str) -> list[dict[str, Any]]:
    """The campaign's notification events on the customer's timeline (notification's), oldest first."""
    r = await client.get(f"{url}/v1/customers/{customer}/timeline", params={"limit": 100})
    assert r.status_code == 200, r.text
    found = [
        e
        for e in r.json()["events"]
        if e["type"] in {f"crm.notification.{d}.v1" for d in DECISIONS} and e["data"].get("campaign_id") == campaign_id
    ]
    return list(reversed(found))


async def test_a_campaign_reaches_exactly_the_right_customers_everywhere(stack: Stack, smtp: SmtpServer) -> None:
    notification, analytics = stack.services["notification"].url, stack.services["analytics"].url
    region, tag = region_code(), uuid.uuid4().hex[:8]
    async with api_client(timeout=20) as client:
        people = People(stack, client, region)
        reached = [await people.new({"email": f"cmp-{n}-{tag}@example.com"}, consent=True) for n in range(2)]
        refused = await people.new({"email": f"cmp-no-{tag}@example.com"}, consent=False)
        quiet = await people.new({"email": f"cmp-quiet-{tag}@example.com"}, consent=True)
        now = datetime.now(UTC)
        hours = {"start": f"{(now - timedelta(hours=1)):%H:%M}", "end": f"{(now + timedelta(hours=2)):%H:%M}"}
        await people.put(quiet, "preferences", {"region": region, "quiet_hours": {**hours, "time_zone": "UTC"}})

        # two customers in the region (by email, by phone), then one contact naming both: a merge
        email, phone = f"cmp-merge-{tag}@example.com", f"+1415555{int(tag[:4], 16) % 9000 + 1000}"
        survivor = await people.new({"email": email}, consent=False)
        merged = await people.new({"phone": phone}, consent=False)
        both = await post_and_wait(client, stack, interaction_body("x", customer={"email": email, "phone": phone}))
        assert both["customer_id"] == survivor
        people.last.pop(merged)
        people.last[survivor] = both["event_id"]
        await people.consent(survivor)

        erased = await people.new({"email": f"cmp-erased-{tag}@example.com"}, consent=True)
        r = await client.post(f"{people.intake}/v1/customers/{erased}/erasure")
        assert r.status_code == 202, r.text
        people.last[erased] = r.json()["event_id"]
        await people.settled()

        r = await client.post(
            f"{notification}/v1/campaigns",
            json={
                "name": "Spring offer",
                "audience": {"region": region},
                "purpose": "marketing",
                "templates": {"en": {"subject": "{campaign_name}", "body": "Hello {customer_id}"}},
            },
        )
        assert r.status_code == 201, r.text
        campaign_id = r.json()["campaign_id"]
        done = await wait_campaign(client, notification, campaign_id, "completed")
        assert done["audience_size"] == 5  # the merged pair once, the erased not at all
        assert (done["counts"]["pending"], done["counts"]["suppressed"]) == (0, {"no_consent": 1})
        # every target is decided; the worker still sends what was scheduled for now
        counts = {"scheduled": 1, "sent": 3, "delivered": 0, "failed": 0, "suppressed": {"no_consent": 1}, "pending": 0}

        async def all_sent() -> dict[str, Any] | None:
            got = (await client.get(f"{notification}/v1/campaigns/{campaign_id}")).json()
            return (
                got if got["counts"]["scheduled"] + got["counts"]["sent"] == 4 and got["counts"]["sent"] == 3 else None
            )

        assert (await eventually(all_sent, 30, "the three sent"))["counts"] == counts

        # exactly one message each: sent (after its scheduled), delayed by quiet hours, or suppressed
        sent = ["scheduled", "sent"]
        expected = {c: sent for c in [*reached, survivor]} | {quiet: ["scheduled"], refused: ["suppressed"]}
        for customer, kinds in expected.items():

            async def decided(customer: str = customer, n: int = len(kinds)) -> list[dict[str, Any]] | None:
                found = await decisions(client, notification, customer, campaign_id)
                return found if len(found) >= n else None

            found = await eventually(decided, 30, f"{customer}'s decisions")
            assert [e["type"] for e in found] == [f"crm.notification.{k}.v1" for k in kinds], customer
            assert len({e["data"]["notification_id"] for e in found}) == 1
            first = found[0]["data"]
            assert (first["rule"], first["customer_id"]) == ("campaign_marketing", customer)
            if customer == refused:
                assert first["reason"] == "no_consent"
            else:
                assert first["delayed_reason"] == ("quiet_hours" if customer == quiet else None)
            if customer == quiet:  # later, not dropped: once the quiet hours are over
                assert datetime.fromisoformat(first["deliver_at"]) > now + timedelta(hours=1)
            # on every service's timeline, and the four timelines the same
            for event in found:
                await wait_applied(client, stack, customer, event["event_id"], timeout_ms=15_000)
            sums = await digests(stack, customer, client)
            assert len(set(sums.values())) == 1, (customer, sums)
        assert await decisions(client, notification, erased, campaign_id) == []
        # the merged id now names the survivor, who got the pair's one message above
        r = await client.get(f"{notification}/v1/customers/{merged}/timeline", follow_redirects=False)
        assert r.status_code == 308 and r.headers["location"].startswith(f"/v1/customers/{survivor}/")

        mails = [m for m in smtp.messages if m["X-CRM-Rule"] == "campaign_marketing"]
        assert sorted(m["To"] for m in mails if m["Subject"] == "Spring offer") == sorted(
            [f"cmp-0-{tag}@example.com", f"cmp-1-{tag}@example.com", email]
        )

        # the one the campaign did not reach buys: not the campaign's response
        unreached = interaction_body("x", kind="purchase", customer={"id": refused}, metadata={"amount": 99})
        await post_and_wait(client, stack, unreached)
        got = await eventually(lambda: campaign_results(client, analytics, campaign_id, sent=3), 30, "sent counted")
        assert (got["responded"], got["revenue"]) == (0, 0.0)
        # a reached customer buys something: attributed to the campaign, counted in its results
        purchase = interaction_body("x", kind="purchase", customer={"id": reached[0]}, metadata={"amount": 42.5})
        bought = await post_and_wait(client, stack, purchase)

        async def response() -> dict[str, Any] | None:
            r = await client.get(f"{analytics}/v1/customers/{reached[0]}/timeline")
            found = [e for e in r.json()["events"] if e["type"] == contract.CAMPAIGN_RESPONSE]
            return found[0] if found else None

        event = await eventually(response, 30, "the campaign_response on the buyer's timeline")
        assert (event["data"]["campaign_id"], event["data"]["interaction_event_id"]) == (
            campaign_id,
            bought["event_id"],
        )
        await wait_applied(client, stack, reached[0], event["event_id"], timeout_ms=15_000)
        assert len(set((await digests(stack, reached[0], client)).values())) == 1
        got = await eventually(
            lambda: campaign_results(client, analytics, campaign_id, responded=1), 30, "the response counted"
        )
        assert (got["audience_size"], got["sent"], got["responded"]) == (5, 3, 1)
        assert (got["conversions"], got["revenue"]) == (1, 42.5)
        assert (got["status"], got["response_rate"], list(got["by_channel"])) == ("completed", 0.3333, ["email"])


async def test_notification_killed_mid_send_sends_nobody_twice(stack: Stack, smtp: SmtpServer) -> None:
    service = stack.services["notification"]
    region, tag, size = region_code(), uuid.uuid4().hex[:8], 20
    async with api_client(timeout=20) as client:
        people = People(stack, client, region)
        customers = []
        for n in range(size):
            body = interaction_body("x", customer={"email": f"cmp-kill-{n}-{tag}@example.com"})
            r = await client.post(f"{people.intake}/v1/interactions", json=body)
            assert r.status_code == 202, r.text
            customers.append(r.json()["customer_id"])
            await people.put(customers[-1], "preferences", {"region": region})
            await people.consent(customers[-1])
        await people.settled()

        r = await client.post(
            f"{service.url}/v1/campaigns",
            json={
                "name": f"Restart {tag}",
                "audience": {"region": region},
                "purpose": "marketing",
                "templates": {"en": {"subject": "{campaign_name}", "body": "Hello"}},
            },
        )
        assert r.status_code == 201, r.text
        campaign_id = r.json()["campaign_id"]

        async def under_way() -> dict[str, Any] | None:
            got: dict[str, Any] = (await client.get(f"{service.url}/v1/campaigns/{campaign_id}")).json()
            return got if got["status"] == "sending" and 0 < got["counts"]["pending"] < size - 2 else None

        await eventually(under_way, 60, "the campaign half sent")
        service.kill()  # SIGKILL: no graceful end of the batch in flight
        service.start()
        service.wait_ready()

        done = await wait_campaign(client, service.url, campaign_id, "completed")
        assert (done["audience_size"], done["counts"]["pending"]) == (size, 0)

        async def all_out() -> dict[str, Any] | None:
            got: dict[str, Any] = (await client.get(f"{service.url}/v1/campaigns/{campaign_id}")).json()
            return got if got["counts"]["sent"] + got["counts"]["failed"] == size else None

        await eventually(all_out, 60, "every target sent (or dead-lettered as outcome unknown)")
        for customer in customers:
            found = await decisions(client, service.url, customer, campaign_id)
            assert len({e["data"]["notification_id"] for e in found}) == 1, customer
            await wait_applied(client, stack, customer, found[-1]["event_id"], timeout_ms=15_000)
            assert len(set((await digests(stack, customer, client)).values())) == 1, customer
        mails = [m["To"] for m in smtp.messages if m["Subject"] == f"Restart {tag}"]
        assert len(mails) == len(set(mails))  # nobody twice
        assert len(mails) >= size - 1  # at most the one in flight at the kill is unknown
        sent = (await client.get(f"{service.url}/v1/campaigns/{campaign_id}")).json()["counts"]["sent"]
        analytics = stack.services["analytics"].url
        await eventually(lambda: campaign_results(client, analytics, campaign_id, sent=sent), 30, "sent counted")


async def test_a_campaign_cancelled_mid_send_sends_no_more(stack: Stack, smtp: SmtpServer) -> None:
    url = stack.services["notification"].url
    region, tag, size = region_code(), uuid.uuid4().hex[:8], 20
    async with api_client(timeout=20) as client:
        people = People(stack, client, region)
        for n in range(size):
            body = interaction_body("x", customer={"email": f"cmp-cancel-{n}-{tag}@example.com"})
            r = await client.post(f"{people.intake}/v1/interactions", json=body)
            assert r.status_code == 202, r.text
            await people.put(r.json()["customer_id"], "preferences", {"region": region})
            await people.consent(r.json()["customer_id"])
        await people.settled()
        body = {
            "name": f"Cancel {tag}",
            "audience": {"region": region},
            "purpose": "marketing",
            "templates": {"en": {"subject": "{campaign_name}", "body": "Hello"}},
        }
        r = await client.post(f"{url}/v1/campaigns", json=body)
        assert r.status_code == 201, r.text
        campaign_id = r.json()["campaign_id"]

        async def under_way() -> dict[str, Any] | None:
            got: dict[str, Any] = (await client.get(f"{url}/v1/campaigns/{campaign_id}")).json()
            return got if got["status"] == "sending" and 0 < got["counts"]["pending"] < size - 2 else None

        await eventually(under_way, 60, "the campaign half sent")
        r = await client.post(f"{url}/v1/campaigns/{campaign_id}:cancel")
        assert (r.status_code, r.json()["status"]) == (200, "cancelled"), r.text
        pending = r.json()["counts"]["pending"]
        assert pending > 0
        # the cancel waited for the batch in flight: once what was decided before it is out, the
        # undecided targets are still undecided and got no mail
        await eventually(lambda: _sent_settled(client, url, campaign_id, size - pending), 30, "in-flight sent")
        got = (await client.get(f"{url}/v1/campaigns/{campaign_id}")).json()
        assert (got["status"], got["counts"]["pending"]) == ("cancelled", pending)
        mails = [m["To"] for m in smtp.messages if m["Subject"] == f"Cancel {tag}"]
        assert len(mails) == len(set(mails)) == size - pending
        analytics = stack.services["analytics"].url
        results = await eventually(
            lambda: campaign_results(client, analytics, campaign_id, status="cancelled", sent=size - pending),
            30,
            "analytics sees the cancel",
        )
        assert results["audience_size"] == size


async def _sent_settled(client: httpx.AsyncClient, url: str, campaign_id: str, decided: int) -> bool | None:
    counts = (await client.get(f"{url}/v1/campaigns/{campaign_id}")).json()["counts"]
    return True if counts["sent"] + counts["failed"] == decided and counts["scheduled"] == 0 else None
