"""Campaigns on analytics' side, on the real stack: a campaign announced on crm.notification.v1
(raw CloudEvents until notification publishes them) gets its audience fixed from analytics' own
projections, a reached customer's purchase is attributed, and the results count it."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from crmtools.devstack import Stack
from eventkit.envelope import Envelope, from_kafka

from contracts import analytics as contract
from contracts.events import INTERACTION_RECORDED, PREFERENCES_CHANGED
from contracts.notification import CAMPAIGN_CREATED, NOTIFICATION_SENT
from contracts.topics import ANALYTICS, INTAKE, NOTIFICATION
from tests.conftest import api_client, auth_headers, eventually
from tests.e2e.helpers import interaction_body, make_key, post_and_wait
from tests.e2e.test_analytics import TP, publish, region_code


class CampaignScript:
    """A campaign to one customer of `region` as raw events: announced and sent by SMS, then answered
    with a purchase of 20 (the dashboard test uses it for the campaign gauges)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.customer = f"cmp-c-{uuid.uuid4().hex[:10]}"
        self.campaign_id = f"cmp-{uuid.uuid4().hex[:8]}"
        self.now = datetime.now(UTC)

    def announce(self) -> list[tuple[str, Envelope]]:
        c, now = self.customer, self.now
        prefs = {"region": self.region, "vip": False, "preferred_channel": None, "language": None, "quiet_hours": None}
        return [
            (INTAKE, Envelope(str(uuid.uuid4()), PREFERENCES_CHANGED, "/test", c, now - timedelta(minutes=5),
                              {"customer_id": c, "changed": ["region"], "preferences": prefs}, TP)),
            (NOTIFICATION, Envelope(str(uuid.uuid4()), CAMPAIGN_CREATED, "/test",
                                    f"campaign:{self.campaign_id}", now - timedelta(minutes=4), {
                "campaign_id": self.campaign_id, "name": "dashboard", "audience": {"region": self.region},
                "purpose": "service", "templates": {"en": {"subject": "Hi", "body": "Hello"}},
                "send_at": (now - timedelta(minutes=4)).isoformat(), "created_by": "test"}, TP)),
            (NOTIFICATION, Envelope(str(uuid.uuid4()), NOTIFICATION_SENT, "/test", c, now - timedelta(minutes=3), {
                "notification_id": f"n-{uuid.uuid4().hex[:8]}", "customer_id": c, "rule": "campaign",
                "channel": "sms", "audience": "customer", "attempt": 1, "campaign_id": self.campaign_id}, TP)),
        ]  # fmt: skip

    def respond(self) -> list[tuple[str, Envelope]]:
        c, at = self.customer, self.now - timedelta(minutes=1)
        return [
            (INTAKE, Envelope(str(uuid.uuid4()), INTERACTION_RECORDED, "/test", c, at, {
                "customer_id": c, "channel": "web", "direction": "inbound", "kind": "purchase",
                "occurred_at": at.isoformat(), "content": None, "metadata": {"amount": 20}}, TP)),
        ]  # fmt: skip


async def campaign_results(
    client: httpx.AsyncClient, url: str, campaign_id: str, **expect: Any
) -> dict[str, Any] | None:
    """The campaign's results from analytics once they show `expect`, else None."""
    r = await client.get(f"{url}/v1/campaigns/{campaign_id}/results")
    body: dict[str, Any] = r.json()
    return body if r.status_code == 200 and all(body[k] == v for k, v in expect.items()) else None


async def audience_parts(bootstrap: str, campaign_id: str) -> list[dict[str, Any]] | None:
    """The campaign's audience_resolved parts on crm.analytics.v1 once all are there, by part."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(ANALYTICS, p) for p in sorted(consumer.partitions_for_topic(ANALYTICS) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        parts: dict[int, dict[str, Any]] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    e = from_kafka(r.key, r.value, r.headers)
                    if e.type == contract.CAMPAIGN_AUDIENCE_RESOLVED and e.data["campaign_id"] == campaign_id:
                        assert e.subject == f"campaign:{campaign_id}"
                        parts[e.data["part"]] = e.data
    finally:
        await consumer.stop()
    if not parts or len(parts) < next(iter(parts.values()))["parts"]:
        return None
    return [parts[n] for n in sorted(parts)]


async def test_a_campaign_reaches_its_audience_and_a_purchase_shows_in_its_results(stack: Stack) -> None:
    intake, analytics = stack.services["intake"].url, stack.services["analytics"].url
    region, campaign_id = region_code(), f"cmp-{uuid.uuid4().hex[:8]}"
    async with api_client(timeout=20) as client:
        customers = {}
        for name, channel in (("a", "sms"), ("b", "sms"), ("c", "web")):  # c never used sms
            body = interaction_body(f"{name}-{uuid.uuid4().hex[:8]}@example.com", channel=channel)
            customers[name] = (await post_and_wait(client, stack, body, readers=["analytics"]))["customer_id"]
            r = await client.put(f"{intake}/v1/customers/{customers[name]}/preferences", json={"region": region})
            assert r.status_code == 200, r.text

        async def regions_known() -> bool | None:
            for cid in customers.values():
                r = await client.get(f"{analytics}/v1/customers/{cid}/insights")
                if r.status_code != 200 or r.json()["region"] != region:
                    return None
            return True

        await eventually(regions_known, 30, "analytics has every customer's region")

        now = datetime.now(UTC)
        created = Envelope(
            str(uuid.uuid4()), CAMPAIGN_CREATED, "/test/notification", f"campaign:{campaign_id}",
            now, {
                "campaign_id": campaign_id, "name": "spring sale",
                "audience": {"region": region, "channel_used": "sms"}, "purpose": "marketing",
                "templates": {"en": {"subject": "Spring", "body": "Our spring sale"}},
                "send_at": (now - timedelta(seconds=1)).isoformat(), "created_by": "test",
            }, TP,
        )  # fmt: skip
        await publish(stack.broker.bootstrap, [(NOTIFICATION, created)])
        parts = await eventually(lambda: audience_parts(stack.broker.bootstrap, campaign_id), 30, "audience parts")
        assert [(p["part"], p["parts"], p["audience_size"]) for p in parts] == [(1, 1, 2)]
        assert parts[0]["customer_ids"] == sorted([customers["a"], customers["b"]])

        # notification sends to a by SMS, then a buys something
        a = customers["a"]
        sent = Envelope(
            str(uuid.uuid4()), NOTIFICATION_SENT, "/test/notification", a, datetime.now(UTC), {
                "notification_id": f"n-{uuid.uuid4().hex[:8]}", "customer_id": a, "rule": f"campaign:{campaign_id}",
                "channel": "sms", "audience": "customer", "attempt": 1, "campaign_id": campaign_id,
            }, TP,
        )  # fmt: skip
        await publish(stack.broker.bootstrap, [(NOTIFICATION, sent)])

        await eventually(lambda: campaign_results(client, analytics, campaign_id, sent=1), 30, "sent counted")
        purchase = interaction_body("unused@example.com", kind="purchase", channel="web", metadata={"amount": 30})
        purchase["customer"] = {"id": a}
        posted = await post_and_wait(client, stack, purchase, readers=["analytics"])
        got = await eventually(lambda: campaign_results(client, analytics, campaign_id, responded=1), 30, "response")
        assert {k: got[k] for k in ("campaign_id", "status", "audience_size")} == {
            "campaign_id": campaign_id, "status": "scheduled", "audience_size": 2,
        }  # fmt: skip
        totals = {"sent": 1, "delivered": 0, "responded": 1, "response_rate": 1.0, "conversions": 1, "revenue": 30.0,
                  "unsubscribed": 0}  # fmt: skip
        assert {k: got[k] for k in totals} == totals
        assert got["by_channel"] == {"sms": totals}

        async def response_on_timeline() -> dict[str, Any] | None:
            page = await client.get(f"{analytics}/v1/customers/{a}/timeline")
            found = [e for e in page.json()["events"] if e["type"] == contract.CAMPAIGN_RESPONSE]
            return found[0] if found else None

        event = await eventually(response_on_timeline, 30, "campaign_response on a's timeline")
        assert event["data"] == {
            "campaign_id": campaign_id, "channel": "sms", "interaction_event_id": posted["event_id"],
            "kind": "purchase", "amount": 30.0, "attributed_by": "window",
        }  # fmt: skip

        # b was not reached but names the campaign: intake keeps metadata.campaign_id readable
        named = interaction_body(
            "unused@example.com", kind="message", channel="chat", metadata={"campaign_id": campaign_id}
        )
        named["customer"] = {"id": customers["b"]}
        await post_and_wait(client, stack, named, readers=["analytics"])
        got = await eventually(lambda: campaign_results(client, analytics, campaign_id, responded=2), 30, "named")
        assert got["by_channel"]["chat"]["responded"] == 1 and got["conversions"] == 1

        missing = await client.get(f"{analytics}/v1/campaigns/cmp-none/results")
        assert (missing.status_code, missing.json()["error"]) == (404, "campaign_not_found")
        for bad in ("x" * 65, "a%00b"):  # too long; a control character
            r = await client.get(f"{analytics}/v1/campaigns/{bad}/results")
            assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("path"), (bad, r.text)

    # campaign owners and agents read results (counts only); a channel's key does not
    key = await make_key(stack, "campaigner", ["campaigns"], readers=["analytics"])
    agent = await make_key(stack, "agent", ["agent"], readers=["analytics"])
    channel = await make_key(stack, "web shop", ["channel:web"], readers=["analytics"])
    async with httpx.AsyncClient(timeout=10) as plain:
        for reader in (key, agent):
            ok = await plain.get(f"{analytics}/v1/campaigns/{campaign_id}/results", headers=auth_headers(reader["key"]))
            assert ok.status_code == 200
        no = await plain.get(f"{analytics}/v1/campaigns/{campaign_id}/results", headers=auth_headers(channel["key"]))
        assert no.status_code == 403


async def test_a_campaign_for_later_is_resolved_by_analytics_timer_once_due(stack: Stack) -> None:
    script = CampaignScript(region_code())
    analytics = stack.services["analytics"].url
    await publish(stack.broker.bootstrap, script.announce()[:1])  # the customer's region
    async with api_client(timeout=10) as client:

        async def region_known() -> bool | None:
            r = await client.get(f"{analytics}/v1/customers/{script.customer}/insights")
            return True if r.status_code == 200 and r.json()["region"] == script.region else None

        await eventually(region_known, 30, "the customer's region")
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    created = Envelope(
        str(uuid.uuid4()), CAMPAIGN_CREATED, "/test", f"campaign:{script.campaign_id}",
        datetime.now(UTC), {
            "campaign_id": script.campaign_id, "name": "later", "audience": {"region": script.region},
            "purpose": "service", "templates": {"en": {"subject": "Hi", "body": "Hello"}},
            "send_at": send_at.isoformat(), "created_by": "test"}, TP,
    )  # fmt: skip
    await publish(stack.broker.bootstrap, [(NOTIFICATION, created)])
    parts = await eventually(lambda: audience_parts(stack.broker.bootstrap, script.campaign_id), 30, "resolved")
    assert [(p["customer_ids"], p["audience_size"]) for p in parts] == [([script.customer], 1)]
    # fixed when due, not when announced
    assert datetime.fromisoformat(parts[0]["resolved_at"]) >= send_at
