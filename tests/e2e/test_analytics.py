"""analytics end to end: KPIs from a scripted stream whose answers are worked out by hand below,
the same answers after analytics is SIGKILLed mid-stream, and risk changes on every timeline."""

import asyncio
import random
import re
import string
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from crmtools.devstack import Stack
from eventkit.envelope import Envelope, from_kafka, to_kafka

from contracts import notification as n
from contracts.events import EventData
from contracts.topics import ALL_EVENT_TOPICS, ANALYTICS, CASE, INTAKE, NOTIFICATION
from tests.conftest import api_client
from tests.ops.quiet import wait_quiet

pytestmark = pytest.mark.e2e
DAY = datetime(2026, 3, 2, tzinfo=UTC)
TP = "00-" + "4" * 32 + "-" + "5" * 16 + "-01"


def at(hh: int, mm: int = 0, ss: int = 0, day: int = 0, base: datetime = DAY) -> datetime:
    return base + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def ev(type_: str, customer: str, time: datetime, data: dict[str, Any]) -> tuple[str, Envelope]:
    topic = CASE if ".case." in type_ else NOTIFICATION if ".notification." in type_ else INTAKE
    return topic, Envelope(str(uuid.uuid4()), type_, "/test/script", customer, time, data, TP)


class Script:
    """A day at a small contact centre, in region `region`; every KPI below is counted by hand."""

    def __init__(self, region: str, day: datetime = DAY) -> None:
        self.region = region
        self.day = day
        self.c1, self.c2, self.c3 = (f"kpi-{uuid.uuid4().hex[:10]}" for _ in range(3))
        self.events: list[tuple[str, Envelope]] = []

    def interaction(self, customer: str, t: datetime, channel: str, kind: str, **metadata: Any) -> str:
        topic, e = ev("crm.interaction.recorded.v1", customer, t, {
            "customer_id": customer, "channel": channel, "direction": "inbound", "kind": kind,
            "occurred_at": t.isoformat(), "content": None, "metadata": metadata,
        })  # fmt: skip
        self.events.append((topic, e))
        return e.id

    def case(self, type_: str, customer: str, t: datetime, data: dict[str, Any]) -> None:
        self.events.append(ev(type_, customer, t, data))

    def build(self, with_notifications: bool = True) -> list[tuple[str, Envelope]]:
        c1, c2, c3 = self.c1, self.c2, self.c3

        def at(hh: int, mm: int = 0, ss: int = 0, day: int = 0) -> datetime:
            return self.day + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)

        for c in (c1, c2, c3):
            self.events.append(ev("crm.customer.preferences_changed.v1", c, at(8), {
                "customer_id": c, "changed": ["region"], "preferences": {
                    "preferred_channel": None, "language": None, "quiet_hours": None, "vip": False,
                    "region": self.region}}))  # fmt: skip
        complaint = self.interaction(c1, at(9, 10), "chat", "complaint")
        self.interaction(c1, at(9, 20), "chat", "message")
        request = self.interaction(c2, at(10, 5), "email", "request")
        purchase = self.interaction(c3, at(11), "web", "purchase", amount=250)
        self.interaction(c3, at(12), "web", "survey_response", survey="nps", score=10)
        self.interaction(c2, at(12, 30), "email", "survey_response", survey="nps", score=5)
        self.interaction(c1, at(13), "chat", "survey_response", survey="nps", score=8)
        self.interaction(c3, at(13, 30), "web", "survey_response", survey="nps", score=9)

        def opened(case: str, c: str, t: datetime, type_: str, priority: str, by: str | None) -> None:
            self.case("crm.case.opened.v1", c, t, {"case_id": case, "customer_id": c, "type": type_,
                      "priority": priority, "status": "new", "team": "support", "opened_by": by})  # fmt: skip

        def status(case: str, c: str, t: datetime, frm: str, to: str, type_: str, priority: str) -> None:
            self.case("crm.case.status_changed.v1", c, t, {"case_id": case, "customer_id": c, "from_status": frm,
                      "to_status": to, "reason": None, "type": type_, "priority": priority})  # fmt: skip

        def assigned(case: str, c: str, t: datetime, owner: str, team: str) -> None:
            self.case("crm.case.assigned.v1", c, t, {"case_id": case, "customer_id": c, "owner": owner,
                      "previous_owner": None, "team": team})  # fmt: skip

        a, b, cc = (f"case-{uuid.uuid4().hex[:8]}" for _ in range(3))
        # A: complaint, high. First response 30 min, resolved after 2 h, same day, one contact, SLA met.
        # Assigned in support 100 min before its resolution (handle time 6000 s).
        opened(a, c1, at(9, 10, 1), "complaint", "high", complaint)
        assigned(a, c1, at(9, 30, 1), "agent-1", "support")
        status(a, c1, at(9, 40, 1), "new", "open", "complaint", "high")
        status(a, c1, at(11, 10, 1), "open", "resolved", "complaint", "high")
        # B: request, normal. First response 30 min (an agent's reply, before the status moved at 1 h),
        # a second contact, SLA breached, resolved next day after 24 h.
        opened(b, c2, at(10, 5, 1), "request", "normal", request)
        self.case("crm.case.reply_sent.v1", c2, at(10, 35, 1), {"case_id": b, "customer_id": c2, "channel": "email",
                  "author": "agent-3", "body": "on it", "team": "support", "type": "request",
                  "priority": "normal"})  # fmt: skip
        status(b, c2, at(11, 5, 1), "new", "open", "request", "normal")
        self.case("crm.case.interaction_linked.v1", c2, at(12), {"case_id": b, "customer_id": c2,
                  "interaction_event_id": str(uuid.uuid4()), "kind": "message", "channel": "email",
                  "direction": "inbound"})  # fmt: skip
        self.case("crm.case.sla_breached.v1", c2, at(14), {"case_id": b, "customer_id": c2,
                  "target": "resolution", "due_at": at(14).isoformat(), "owner": None, "team": "support",
                  "priority": "normal", "type": "request"})  # fmt: skip
        status(b, c2, at(10, 5, 1, day=1), "open", "resolved", "request", "normal")
        # C: inquiry, normal. First response 10 min, resolved, reopened, resolved again 1.5 h after opening.
        # Handed to the sales team 5 min after opening: handle time 5100 s to its last resolution.
        opened(cc, c3, at(11, 0, 1), "inquiry", "normal", purchase)
        assigned(cc, c3, at(11, 5, 1), "agent-2", "sales")
        status(cc, c3, at(11, 10, 1), "new", "open", "inquiry", "normal")
        status(cc, c3, at(11, 30, 1), "open", "resolved", "inquiry", "normal")
        status(cc, c3, at(12, 0, 1), "resolved", "open", "inquiry", "normal")
        status(cc, c3, at(12, 30, 1), "open", "resolved", "inquiry", "normal")
        # D: opened by an agent, first response 20 min, resolved, reopened and still open: not resolved.
        d = f"case-{uuid.uuid4().hex[:8]}"
        opened(d, c3, at(14), "billing", "low", None)
        status(d, c3, at(14, 20), "new", "open", "billing", "low")
        status(d, c3, at(14, 40), "open", "resolved", "billing", "low")
        status(d, c3, at(15), "resolved", "open", "billing", "low")
        for case, c, score, t in ((a, c1, 9, at(15)), (cc, c3, 6, at(15, 30))):
            self.case("crm.case.survey_recorded.v1", c, t, {"case_id": case, "customer_id": c, "score": score,
                      "interaction_event_id": str(uuid.uuid4())})  # fmt: skip
        if with_notifications:
            # Hand-made with the contracts' models, as notification would publish them: c1's
            # resolution mailed and sent; c2's SMS fails once (retried, not a failure) then for good;
            # c3's webhook sent and delivered, and a later message suppressed (no consent).
            def note(
                model: type[EventData], type_: str, c: str, t: datetime, nid: str, channel: str | None, **fields: Any
            ) -> None:
                data = model.model_validate(
                    {
                        "notification_id": nid,
                        "customer_id": c,
                        "rule": "case_resolved",
                        "channel": channel,
                        "audience": "customer",
                        **fields,
                    }
                )
                self.events.append(ev(type_, c, t, data.model_dump(mode="json")))  # fmt: skip

            def scheduled(c: str, t: datetime, channel: str) -> str:
                nid = str(uuid.uuid4())
                note(n.NotificationScheduled, n.NOTIFICATION_SCHEDULED, c, t, nid, channel,
                     source_event_id=str(uuid.uuid4()), source_event_type="crm.case.status_changed.v1",
                     recipient=f"customer:{c}", purpose="service", critical=True, language="en", deliver_at=t,
                     delayed_reason=None)  # fmt: skip
                return nid

            m1 = scheduled(c1, at(11, 10, 2), "email")
            note(n.NotificationSent, n.NOTIFICATION_SENT, c1, at(11, 10, 3), m1, "email", attempt=1)
            m2 = scheduled(c2, at(10, 5, 2), "sms")
            note(n.NotificationFailed, n.NOTIFICATION_FAILED, c2, at(10, 5, 3), m2, "sms", attempt=1,
                 reason="http_503", final=False, next_attempt_at=at(10, 6))  # fmt: skip
            note(n.NotificationFailed, n.NOTIFICATION_FAILED, c2, at(10, 6, 1), m2, "sms", attempt=2,
                 reason="http_503", final=True, next_attempt_at=None)  # fmt: skip
            m3 = scheduled(c3, at(11, 30, 2), "webhook")
            note(n.NotificationSent, n.NOTIFICATION_SENT, c3, at(11, 30, 3), m3, "webhook", attempt=1)
            note(n.NotificationDelivered, n.NOTIFICATION_DELIVERED, c3, at(11, 30, 4), m3, "webhook", attempt=1)
            note(n.NotificationSuppressed, n.NOTIFICATION_SUPPRESSED, c3, at(12, 30, 2), str(uuid.uuid4()), "email",
                 source_event_id=str(uuid.uuid4()), source_event_type="crm.case.status_changed.v1",
                 recipient=f"customer:{c3}", reason="no_consent")  # fmt: skip
        return self.events


# Worked out by hand from Script.build():
EXPECTED_TOTALS = {
    # 8 interactions, 1 complaint, all inbound
    "interactions": {"volume": 8, "inbound": 8, "complaints": 1},
    "cases": {
        "opened": 4,
        # first responses 1800 s (A), 1800 s (B, its reply), 600 s (C), 1200 s (D): mean 1350;
        # p90 over [600, 1200, 1800, 1800] = 1800
        "first_response_seconds": {"mean": 1350.0, "p90": 1800.0},
        "resolved": 3,  # A, B, C; D was reopened and is open again
        # resolutions 7200 s (A), 86400 s (B), 5400 s (C, to its last resolution): mean 33000;
        # p90 over [5400, 7200, 86400] = 7200 + 0.8 * (86400 - 7200) = 70560
        "resolution_seconds": {"mean": 33000.0, "p90": 70560.0},
        # from the first assignment: 6000 s (A), 5100 s (C); B was never assigned
        # p90 over [5100, 6000] = 5100 + 0.9 * 900 = 5910
        "handle_seconds": {"mean": 5550.0, "p90": 5910.0},
        "closed_same_day": 2,  # A and C; B closed the next day
        "first_contact_resolution_pct": 33.33,  # only A: B had a second contact, C was reopened
        "sla_compliance_pct": 66.67,  # B breached
    },
    # CSAT 9 and 6: mean 7.5, one of two at 8 or more
    "csat": {"responses": 2, "mean": 7.5, "satisfied_pct": 50.0},
    # NPS answers 10, 5, 8, 9: promoters 2, detractors 1, of 4 -> 25
    "nps": {"responses": 4, "score": 25.0},
    # Scheduled c1 email, c2 sms, c3 webhook; sent c1, c3; c3's confirmed; c2's failed for good (its
    # first, retried try is no failure); one suppressed. Delivery: sent / (sent + failed) = 2 / 3;
    # suppression: suppressed / (scheduled + suppressed) = 1 / 4.
    "notifications": {
        "scheduled": 3,
        "sent": 2,
        "delivered": 1,
        "failed": 1,
        "suppressed": 1,
        "delivery_rate_pct": 66.67,
        "suppression_rate_pct": 25.0,
    },
}
# On the email channel: c1's message sent (1 of 1) and c3's suppressed (1 of 1 + 1).
EXPECTED_EMAIL_NOTIFICATIONS = {
    "scheduled": 1, "sent": 1, "delivered": 0, "failed": 0, "suppressed": 1,
    "delivery_rate_pct": 100.0, "suppression_rate_pct": 50.0,
}  # fmt: skip
# Day by day: 2 March resolves A and C (same day, FCR 1 of 2, SLA 2 of 2), 3 March resolves B.
EXPECTED_DAY_1_RESOLVED = {
    "resolved": 2, "closed_same_day": 2, "first_contact_resolution_pct": 50.0,
    "sla_compliance_pct": 100.0, "resolution_seconds": {"mean": 6300.0, "p90": 7020.0},
}  # fmt: skip


def region_code() -> str:
    return "Q" + random.choice(string.ascii_uppercase) + "-" + "".join(random.choices(string.ascii_uppercase, k=3))


async def publish(bootstrap: str, events: list[tuple[str, Envelope]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        for topic, e in events:
            key, value, headers = to_kafka(e)
            await producer.send(topic, value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def kpis(client: httpx.AsyncClient, url: str, **params: Any) -> dict[str, Any]:
    r = await client.get(
        f"{url}/v1/kpis", params={"from": DAY.isoformat(), "to": (DAY + timedelta(days=2)).isoformat(), **params}
    )
    assert r.status_code == 200, r.text
    return r.json()


async def wait_for_totals(client: httpx.AsyncClient, url: str, region: str, expected: dict[str, Any]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for _ in range(150):
        got = await kpis(client, url, region=region)
        if got["totals"] == expected:
            return got
        await asyncio.sleep(0.2)
    return got


async def test_kpis_of_a_scripted_day_match_the_hand_worked_answers(stack: Stack) -> None:
    script = Script(region_code())
    await publish(stack.broker.bootstrap, script.build())
    url = stack.services["analytics"].url
    async with api_client(timeout=10) as client:
        got = await wait_for_totals(client, url, script.region, EXPECTED_TOTALS)
        assert got["totals"] == EXPECTED_TOTALS
        day1, day2 = got["series"]
        assert day1["start"].startswith("2026-03-02") and day2["start"].startswith("2026-03-03")
        assert {k: day1["cases"][k] for k in EXPECTED_DAY_1_RESOLVED} == EXPECTED_DAY_1_RESOLVED
        assert (day2["cases"]["resolved"], day2["cases"]["closed_same_day"], day2["cases"]["sla_compliance_pct"]) == (
            1,
            0,
            0.0,
        )
        assert day1["notifications"] == EXPECTED_TOTALS["notifications"]  # all on 2 March

        chat = await kpis(client, url, region=script.region, channel="chat")
        assert chat["totals"]["interactions"]["volume"] == 3  # c1: complaint, message, NPS answer
        assert chat["totals"]["cases"]["opened"] == 1  # A was opened by the chat complaint
        assert chat["totals"]["notifications"]["scheduled"] == 0  # no notification goes by chat
        email = await kpis(client, url, region=script.region, channel="email")
        assert email["totals"]["notifications"] == EXPECTED_EMAIL_NOTIFICATIONS
        sales = (await kpis(client, url, region=script.region, team="sales"))["totals"]
        assert (sales["cases"]["opened"], sales["cases"]["resolved"]) == (1, 1)  # C, handed to sales
        assert sales["cases"]["handle_seconds"] == {"mean": 5100.0, "p90": 5100.0}
        assert sales["cases"]["first_response_seconds"]["mean"] == 600.0
        assert (sales["csat"]["responses"], sales["csat"]["mean"]) == (1, 6.0)
        assert sales["interactions"]["volume"] == 0 and sales["notifications"]["scheduled"] == 0  # no team of their own
        support = (await kpis(client, url, region=script.region, team="support"))["totals"]
        assert (support["cases"]["opened"], support["cases"]["resolved"]) == (3, 2)  # A, B, D; A and B resolved
        assert support["cases"]["handle_seconds"] == {"mean": 6000.0, "p90": 6000.0}  # B was never assigned
        high = await kpis(client, url, region=script.region, priority="high")
        assert (high["totals"]["cases"]["opened"], high["totals"]["cases"]["resolution_seconds"]["mean"]) == (1, 7200.0)
        hourly = await kpis(client, url, region=script.region, window="hour")
        assert sum(h["interactions"]["volume"] for h in hourly["series"]) == 8
        assert [h["start"][11:13] for h in hourly["series"] if h["interactions"]["volume"]] == [
            "09",
            "10",
            "11",
            "12",
            "13",
        ]
        # 10:00 c2's SMS scheduled, failed for good; 11:00 c1's and c3's scheduled and sent; 12:00 suppressed
        by_hour = {
            h["start"][11:13]: (h["notifications"]["delivery_rate_pct"], h["notifications"]["suppression_rate_pct"])
            for h in hourly["series"]
            if any(h["notifications"][k] for k in ("scheduled", "suppressed"))
        }
        assert by_hour == {"10": (0.0, 0.0), "11": (100.0, 0.0), "12": (None, 100.0)}

        bad = await client.get(f"{url}/v1/kpis", params={"from": DAY.isoformat(), "to": DAY.isoformat()})
        assert bad.status_code == 422
        insights = (await client.get(f"{url}/v1/customers/{script.c2}/insights")).json()
        assert insights["complaints"] == 0 and insights["rfm"]["frequency"] == 2
        # (the case service also opened a real case for c2's request, so other reasons may join)
        assert "sla_breached" in [r["code"] for r in insights["risk"]["reasons"]]


class Scenario:
    """Scripted days (each its own region) and a filler crowd of VIP customers in a region of
    their own. Each filler customer is classified once, as vip, and nothing else happens to them
    (messages and purchases open no case), so exactly one crm.analytics.* event each, however
    the stream is cut into batches."""

    FILLER_CUSTOMERS = 40

    def __init__(self, scripts: int, filler: int) -> None:
        self.scripts = [Script(region_code()) for _ in range(scripts)]
        self.filler_region = region_code()
        self.filler_customers = [f"fill-{uuid.uuid4().hex[:8]}" for _ in range(self.FILLER_CUSTOMERS)]
        self.filler: list[tuple[str, Envelope]] = [
            ev("crm.customer.preferences_changed.v1", c, at(7), {"customer_id": c, "changed": ["region", "vip"],
               "preferences": {"vip": True, "region": self.filler_region}})
            for c in self.filler_customers
        ]  # fmt: skip
        for i in range(filler):
            c = self.filler_customers[i % self.FILLER_CUSTOMERS]
            t = at(16, i % 60, i % 50)
            kind, metadata = ("purchase", {"amount": 10}) if i % 10 == 0 else ("message", {})
            self.filler.append(ev("crm.interaction.recorded.v1", c, t, {"customer_id": c, "channel": "sms",
                               "direction": "inbound", "kind": kind, "occurred_at": t.isoformat(),
                               "metadata": metadata}))  # fmt: skip
        self.script_events = [s.build() for s in self.scripts]
        self.event_ids = [e.id for _, e in self.filler] + [e.id for events in self.script_events for _, e in events]

    def expected_filler(self) -> dict[str, int]:
        interactions = len(self.filler) - self.FILLER_CUSTOMERS
        return {"volume": interactions, "inbound": interactions, "complaints": 0}

    def customers(self) -> dict[str, str]:
        """customer id -> its role, the same in every Scenario."""
        roles = {c: f"filler-{i}" for i, c in enumerate(self.filler_customers)}
        for n_, s in enumerate(self.scripts):
            roles |= {s.c1: f"script-{n_}-c1", s.c2: f"script-{n_}-c2", s.c3: f"script-{n_}-c3"}
        return roles


async def applied_count(dsn: str, event_ids: list[str]) -> int:
    """How many of these events analytics' consumer has applied (the timeline and the KPI fold, in one
    transaction), from its dedup record."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM applied_events WHERE event_id = ANY($1::uuid[])",
                                       event_ids))  # fmt: skip
    finally:
        await conn.close()


async def published_insights(bootstrap: str, customers: set[str]) -> dict[str, list[Envelope]]:
    """The crm.analytics.v1 events about these customers, in log order, one per event id (the
    outbox relay may legitimately send an id twice after a SIGKILL; consumers skip the copy)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # metadata, so partitions_for_topic knows the topic
        tps = [TopicPartition(ANALYTICS, p) for p in sorted(consumer.partitions_for_topic(ANALYTICS) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        seen: set[str] = set()
        out: dict[str, list[Envelope]] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    e = from_kafka(r.key, r.value, r.headers)
                    if e.subject in customers and e.id not in seen:
                        seen.add(e.id)
                        out.setdefault(e.subject, []).append(e)
        return out
    finally:
        await consumer.stop()


LAG_LINE = re.compile(r"^crm_consumer_lag\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)


async def kpi_stream_lag(client: httpx.AsyncClient, url: str) -> dict[tuple[str, int], float]:
    """crm_consumer_lag{service="analytics"} from analytics' /metrics, by (topic, partition): the
    one consumer's, which the KPI fold rides on."""
    text = (await client.get(f"{url}/metrics")).text
    lag = {}
    for m in LAG_LINE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if labels["service"] == "analytics":
            lag[(labels["topic"], int(labels["partition"]))] = float(m["value"])
    return lag


async def topic_partitions(bootstrap: str, topics: Iterable[str]) -> list[tuple[str, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()
        return [(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
    finally:
        await consumer.stop()


async def outcome(client: httpx.AsyncClient, url: str, bootstrap: str, sc: Scenario) -> dict[str, Any]:
    """Everything analytics answers about a Scenario, with its ids and regions replaced by roles."""
    roles = sc.customers()
    regions = {s.region: f"region-{i}" for i, s in enumerate(sc.scripts)} | {sc.filler_region: "filler"}
    result: dict[str, Any] = {}
    for region, role in regions.items():
        for window in ("day", "hour"):
            body = await kpis(client, url, region=region, window=window)
            result[f"kpis {role} {window}"] = {k: v for k, v in body.items() if k != "filters"}
    for customer, role in roles.items():
        body = (await client.get(f"{url}/v1/customers/{customer}/insights")).json()
        # as_of is the latest event's time: for customers the case and notification services
        # reacted to, that is the wall clock of their reaction, different in every run.
        body = {k: v for k, v in body.items() if k not in ("customer_id", "as_of")}
        # recency_days counts whole days from the last interaction to the wall clock: two runs a
        # minute apart read 273 and 274 when the clock passed that interaction's time of day
        # between them. It is compared on its own, allowing that one day (same_recency).
        rfm = dict(body["rfm"])
        result.setdefault("recency_days", {})[role] = rfm.pop("recency_days")
        body["rfm"] = rfm
        result[f"insights {role}"] = {**body, "region": regions.get(body.get("region", ""), body.get("region"))}
    published = await published_insights(bootstrap, set(roles))
    # Filler customers: exactly one event each, whatever the batching (see Scenario).
    result["filler analytics events"] = sorted(
        (roles[c], e.type, e.data.get("segment")) for c, events in published.items() for e in events
        if c in sc.filler_customers
    )  # fmt: skip
    # Scripted customers: how many bands and segments they pass through depends on the batching and
    # on when the case and notification services' reactions arrive, so not the count but the chain:
    # each event starts where the previous one ended (a second publication of one change breaks
    # it) and the last one ends where the insights are.
    for customer, role in roles.items():
        if customer in sc.filler_customers:
            continue
        events = published.get(customer, [])
        insight = result[f"insights {role}"]
        for type_, field, final in (
            ("crm.analytics.risk_changed.v1", "band", insight["risk"]["band"]),
            ("crm.analytics.segment_changed.v1", "segment", insight["segment"]),
        ):
            chain = [(e.data[f"previous_{field}"], e.data[field]) for e in events if e.type == type_]
            # The first may start from an ordinary first classification, which is not published.
            unpublished = {None, "low"} if field == "band" else {None, "new", "regular"}
            result[f"{role} {field} chain starts where the last ended"] = all(
                frm in unpublished if i == 0 else frm == chain[i - 1][1] for i, (frm, _) in enumerate(chain)
            )
            result[f"{role} {field} chain ends at the insight"] = not chain or chain[-1][1] == final
    return result


async def settled_outcome(stack: Stack, client: httpx.AsyncClient, sc: Scenario, dsn: str) -> dict[str, Any]:
    """The outcome once every event of the Scenario is applied, the other services' reactions to
    it (cases, notifications) are too (no lag, no backlog anywhere), and two reads agree."""
    url, bootstrap = stack.services["analytics"].url, stack.broker.bootstrap
    for _ in range(300):
        if await applied_count(dsn, sc.event_ids) == len(sc.event_ids):
            break
        await asyncio.sleep(0.2)
    await wait_quiet(stack, client, 90)
    previous = await outcome(client, url, bootstrap, sc)
    for _ in range(30):
        await asyncio.sleep(1)
        await wait_quiet(stack, client, 90)
        current = await outcome(client, url, bootstrap, sc)
        if current == previous:
            return current
        previous = current
    return previous


async def test_a_restart_mid_stream_neither_loses_nor_double_counts(stack: Stack) -> None:
    analytics = stack.services["analytics"]
    dsn = analytics.env["DATABASE_URL"]
    bootstrap = stack.broker.bootstrap
    # The uninterrupted run: the same Scenario, other customers and regions.
    reference = Scenario(scripts=2, filler=3000)
    await publish(bootstrap, reference.filler + [e for events in reference.script_events for e in events])
    async with api_client(timeout=10) as client:
        expected = await settled_outcome(stack, client, reference, dsn)
    for i in range(len(reference.scripts)):
        assert expected[f"kpis region-{i} day"]["totals"] == EXPECTED_TOTALS
    assert expected["kpis filler day"]["totals"]["interactions"] == reference.expected_filler()
    assert len(expected["filler analytics events"]) == Scenario.FILLER_CUSTOMERS
    assert {segment for _, _, segment in expected["filler analytics events"]} == {"vip"}

    sc = Scenario(scripts=2, filler=3000)
    first = sc.filler[:2500] + sc.script_events[0]
    second = sc.filler[2500:] + sc.script_events[1]

    async def kill_mid_stream() -> int:
        """SIGKILL analytics as soon as its KPI stream has applied some of the events, not all."""
        while True:
            applied = await applied_count(dsn, sc.event_ids)
            if 0 < applied < len(sc.event_ids):
                analytics.kill()
                return applied
            await asyncio.sleep(0.005)

    publishing = asyncio.create_task(publish(bootstrap, first))
    seen_applied = await asyncio.wait_for(kill_mid_stream(), 60)
    await publishing
    applied_at_kill = await applied_count(dsn, sc.event_ids)  # what the dead process had committed
    assert seen_applied <= applied_at_kill < len(first), "the kill did not land mid-stream"
    await publish(bootstrap, second)
    # One event per batch while it catches up, slow enough for its lag to be seen.
    analytics.start({"CONSUMER_MAX_BATCH": "1"})
    await asyncio.to_thread(analytics.wait_ready, 90)

    async with api_client(timeout=10) as client:
        behind: dict[tuple[str, int], float] = {}
        zero_while_behind = []
        for _ in range(600):
            lag = await kpi_stream_lag(client, analytics.url)
            applied = await applied_count(dsn, sc.event_ids)  # read after the gauge: never fewer
            if applied == len(sc.event_ids):
                break
            behind |= {tp: n for tp, n in lag.items() if n}
            if lag and not any(lag.values()):
                zero_while_behind.append(applied)
            await asyncio.sleep(0.1)
        # Reported per partition by the KPI stream while it catches up...
        assert behind and {topic for topic, _ in behind} <= set(ALL_EVENT_TOPICS)
        # ...and never 0 while it is behind: everything was published before the restart, so a
        # gauge at 0 means all of it was applied when the gauge was read.
        assert not zero_while_behind, f"lag read 0 with {zero_while_behind[0]} of {len(sc.event_ids)} applied"
        got = await settled_outcome(stack, client, sc, dsn)
        # ...and back to zero on every partition of every topic once it has.
        partitions = await topic_partitions(bootstrap, ALL_EVENT_TOPICS)
        assert await kpi_stream_lag(client, analytics.url) == dict.fromkeys(partitions, 0.0)
    assert await applied_count(dsn, sc.event_ids) == len(sc.event_ids)
    assert same_recency(expected.pop("recency_days"), got.pop("recency_days"))
    assert got == expected


def same_recency(earlier: dict[str, int | None], later: dict[str, int | None]) -> bool:
    """The same customers with the same days since their last interaction, read later: the
    same number, or one more if the wall clock passed that interaction's time of day meanwhile."""
    return earlier.keys() == later.keys() and all(
        (a is None and b is None) or (a is not None and b is not None and 0 <= b - a <= 1)
        for a, b in ((earlier[role], later[role]) for role in earlier)
    )


async def test_risk_changes_reach_every_timeline(stack: Stack) -> None:
    customer = f"risk-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    events = [
        ev("crm.interaction.recorded.v1", customer, now + timedelta(microseconds=i), {
            "customer_id": customer, "channel": "phone", "direction": "inbound", "kind": "complaint",
            "occurred_at": (now - timedelta(days=3 - i)).isoformat(), "metadata": {}})
        for i in range(3)
    ]  # fmt: skip
    await publish(stack.broker.bootstrap, events)
    async with api_client(timeout=10) as client:
        types: dict[str, list[str]] = {}
        for _ in range(100):
            for name, svc in stack.services.items():
                page = (await client.get(f"{svc.url}/v1/customers/{customer}/timeline")).json()
                types[name] = [e["type"] for e in page["events"]]
            if all("crm.analytics.risk_changed.v1" in t for t in types.values()):
                break
            await asyncio.sleep(0.2)
        assert all("crm.analytics.risk_changed.v1" in t for t in types.values()), types
        insights = (await client.get(f"{stack.services['analytics'].url}/v1/customers/{customer}/insights")).json()
    assert insights["risk"]["band"] == "medium"  # repeated complaints: 25 points
    assert [r["code"] for r in insights["risk"]["reasons"]] == ["repeated_complaints"]
