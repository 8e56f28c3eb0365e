"""analytics end to end: KPIs from a scripted stream whose answers are worked out by hand below,
the same answers after analytics is SIGKILLed mid-stream, and risk changes on every timeline."""

import asyncio
import random
import string
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from eventkit.devstack import Stack
from eventkit.envelope import Envelope, to_kafka

from contracts.topics import CASE, INTAKE, NOTIFICATION
from tests.conftest import api_client

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

    def build(self, with_notifications: bool = False) -> list[tuple[str, Envelope]]:
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

        def opened(case: str, c: str, t: datetime, type_: str, priority: str, by: str) -> None:
            self.case("crm.case.opened.v1", c, t, {"case_id": case, "customer_id": c, "type": type_,
                      "priority": priority, "status": "new", "team": "support", "opened_by": by})  # fmt: skip

        def status(case: str, c: str, t: datetime, frm: str, to: str, type_: str, priority: str) -> None:
            self.case("crm.case.status_changed.v1", c, t, {"case_id": case, "customer_id": c, "from_status": frm,
                      "to_status": to, "reason": None, "type": type_, "priority": priority})  # fmt: skip

        a, b, cc = (f"case-{uuid.uuid4().hex[:8]}" for _ in range(3))
        # A: complaint, high. First response 30 min, resolved after 2 h, same day, one contact, SLA met.
        opened(a, c1, at(9, 10, 1), "complaint", "high", complaint)
        status(a, c1, at(9, 40, 1), "new", "open", "complaint", "high")
        status(a, c1, at(11, 10, 1), "open", "resolved", "complaint", "high")
        # B: request, normal. First response 1 h, a second contact, SLA breached, resolved next day after 24 h.
        opened(b, c2, at(10, 5, 1), "request", "normal", request)
        status(b, c2, at(11, 5, 1), "new", "open", "request", "normal")
        self.case("crm.case.interaction_linked.v1", c2, at(12), {"case_id": b, "customer_id": c2,
                  "interaction_event_id": str(uuid.uuid4()), "kind": "message", "channel": "email",
                  "direction": "inbound"})  # fmt: skip
        self.case("crm.case.sla_breached.v1", c2, at(14), {"case_id": b, "customer_id": c2,
                  "target": "resolution", "due_at": at(14).isoformat(), "owner": None, "team": "support",
                  "priority": "normal", "type": "request"})  # fmt: skip
        status(b, c2, at(10, 5, 1, day=1), "open", "resolved", "request", "normal")
        # C: inquiry, normal. First response 10 min, resolved, reopened, resolved again 1.5 h after opening.
        opened(cc, c3, at(11, 0, 1), "inquiry", "normal", purchase)
        status(cc, c3, at(11, 10, 1), "new", "open", "inquiry", "normal")
        status(cc, c3, at(11, 30, 1), "open", "resolved", "inquiry", "normal")
        status(cc, c3, at(12, 0, 1), "resolved", "open", "inquiry", "normal")
        status(cc, c3, at(12, 30, 1), "open", "resolved", "inquiry", "normal")
        for case, c, score, t in ((a, c1, 9, at(15)), (cc, c3, 6, at(15, 30))):
            self.case("crm.case.survey_recorded.v1", c, t, {"case_id": case, "customer_id": c, "score": score,
                      "interaction_event_id": str(uuid.uuid4())})  # fmt: skip
        if with_notifications:  # A's resolution mailed to c1; c3 suppressed (no consent)
            common = {"customer_id": c1, "rule": "case_resolved", "channel": "email", "audience": "customer"}
            nid = str(uuid.uuid4())
            self.events.append(ev("crm.notification.scheduled.v1", c1, at(11, 10, 2), {
                **common, "notification_id": nid, "source_event_id": str(uuid.uuid4()),
                "source_event_type": "crm.case.status_changed.v1", "recipient": f"customer:{c1}",
                "purpose": "service", "critical": True, "language": "en", "deliver_at": at(11, 10, 2).isoformat(),
                "delayed_reason": None}))  # fmt: skip
            self.events.append(ev("crm.notification.sent.v1", c1, at(11, 10, 3), {**common, "notification_id": nid,
                                  "attempt": 1}))  # fmt: skip
            self.events.append(ev("crm.notification.suppressed.v1", c3, at(12, 30, 2), {
                "customer_id": c3, "rule": "case_resolved", "channel": "email", "audience": "customer",
                "notification_id": str(uuid.uuid4()), "source_event_id": str(uuid.uuid4()),
                "source_event_type": "crm.case.status_changed.v1", "recipient": f"customer:{c3}",
                "reason": "no_consent"}))  # fmt: skip
        return self.events


# Worked out by hand from Script.build():
EXPECTED_TOTALS = {
    # 8 interactions, 1 complaint, all inbound
    "interactions": {"volume": 8, "inbound": 8, "complaints": 1},
    "cases": {
        "opened": 3,
        # first responses 1800 s, 3600 s, 600 s: mean 2000; p90 = 1800 + 0.8 * (3600 - 1800) = 3240
        "first_response_seconds": {"mean": 2000.0, "p90": 3240.0},
        "resolved": 3,
        # resolutions 7200 s (A), 86400 s (B), 5400 s (C, to its last resolution): mean 33000;
        # p90 over [5400, 7200, 86400] = 7200 + 0.8 * (86400 - 7200) = 70560
        "resolution_seconds": {"mean": 33000.0, "p90": 70560.0},
        "closed_same_day": 2,  # A and C; B closed the next day
        "first_contact_resolution_pct": 33.33,  # only A: B had a second contact, C was reopened
        "sla_compliance_pct": 66.67,  # B breached
    },
    # CSAT 9 and 6: mean 7.5, one of two at 8 or more
    "csat": {"responses": 2, "mean": 7.5, "satisfied_pct": 50.0},
    # NPS answers 10, 5, 8, 9: promoters 2, detractors 1, of 4 -> 25
    "nps": {"responses": 4, "score": 25.0},
}
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


def without_notifications(totals: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in totals.items() if k != "notifications"}


async def wait_for_totals(client: httpx.AsyncClient, url: str, region: str, expected: dict[str, Any]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for _ in range(150):
        got = await kpis(client, url, region=region)
        if without_notifications(got["totals"]) == expected:
            return got
        await asyncio.sleep(0.2)
    return got


async def test_kpis_of_a_scripted_day_match_the_hand_worked_answers(stack: Stack) -> None:
    script = Script(region_code())
    await publish(stack.broker.bootstrap, script.build())
    url = stack.services["analytics"].url
    async with api_client(timeout=10) as client:
        got = await wait_for_totals(client, url, script.region, EXPECTED_TOTALS)
        assert without_notifications(got["totals"]) == EXPECTED_TOTALS
        day1, day2 = got["series"]
        assert day1["start"].startswith("2026-03-02") and day2["start"].startswith("2026-03-03")
        assert {k: day1["cases"][k] for k in EXPECTED_DAY_1_RESOLVED} == EXPECTED_DAY_1_RESOLVED
        assert (day2["cases"]["resolved"], day2["cases"]["closed_same_day"], day2["cases"]["sla_compliance_pct"]) == (
            1,
            0,
            0.0,
        )

        chat = await kpis(client, url, region=script.region, channel="chat")
        assert chat["totals"]["interactions"]["volume"] == 3  # c1: complaint, message, NPS answer
        assert chat["totals"]["cases"]["opened"] == 1  # A was opened by the chat complaint
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

        bad = await client.get(f"{url}/v1/kpis", params={"from": DAY.isoformat(), "to": DAY.isoformat()})
        assert bad.status_code == 422
        insights = (await client.get(f"{url}/v1/customers/{script.c2}/insights")).json()
        assert insights["complaints"] == 0 and insights["rfm"]["frequency"] == 2
        # (the case service also opened a real case for c2's request, so other reasons may join)
        assert "sla_breached" in [r["code"] for r in insights["risk"]["reasons"]]


async def test_a_restart_mid_stream_neither_loses_nor_double_counts(stack: Stack) -> None:
    scripts = [Script(region_code()) for _ in range(4)]
    filler_region = region_code()
    filler_customers = [f"fill-{uuid.uuid4().hex[:8]}" for _ in range(40)]
    filler: list[tuple[str, Envelope]] = []
    for n in range(1500):
        c = filler_customers[n % 40]
        t = at(16, n % 60, n % 50)
        if n < 40:
            filler.append(ev("crm.customer.preferences_changed.v1", c, at(7), {"customer_id": c, "changed": ["region"],
                          "preferences": {"vip": False, "region": filler_region}}))  # fmt: skip
        filler.append(ev("crm.interaction.recorded.v1", c, t, {"customer_id": c, "channel": "sms",
                      "direction": "inbound", "kind": "complaint" if n % 10 == 0 else "message",
                      "occurred_at": t.isoformat(), "metadata": {}}))  # fmt: skip
    first, second = filler[: len(filler) // 2], filler[len(filler) // 2 :]
    await publish(stack.broker.bootstrap, first + [e for s in scripts[:2] for e in s.build()])
    analytics = stack.services["analytics"]
    await asyncio.sleep(0.3)  # part of it folded, part not yet
    analytics.kill()
    await publish(stack.broker.bootstrap, second + [e for s in scripts[2:] for e in s.build()])
    analytics.start()
    await asyncio.to_thread(analytics.wait_ready, 90)

    async with api_client(timeout=10) as client:
        for s in scripts:
            got = await wait_for_totals(client, analytics.url, s.region, EXPECTED_TOTALS)
            assert without_notifications(got["totals"]) == EXPECTED_TOTALS, s.region
        expected_filler = {"volume": 1500, "inbound": 1500, "complaints": 150}
        for _ in range(150):
            got = await kpis(client, analytics.url, region=filler_region)
            if got["totals"]["interactions"] == expected_filler:
                break
            await asyncio.sleep(0.2)
        assert got["totals"]["interactions"] == expected_filler


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
