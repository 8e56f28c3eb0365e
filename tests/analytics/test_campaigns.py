"""Campaigns in analytics' KPI fold, on a real PostgreSQL: audiences fixed once when due (the
SQL agreeing with audience.py), responses attributed and results counted."""

import json
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from analytics import audience, campaign_projection, campaign_store
from analytics.audience import Audience, CustomerRow
from analytics.campaign_projection import CAMPAIGN_CREATED, CAMPAIGN_STATUS_CHANGED, CampaignProjection
from analytics.projections import KpiProjection
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import EventStore

from contracts import analytics as contract
from contracts.events import (
    CONSENT_CHANGED,
    CUSTOMER_ERASED,
    CUSTOMER_MERGED,
    INTERACTION_RECORDED,
    PREFERENCES_CHANGED,
)
from tests.conftest import fresh_database

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "analytics" / "migrations"
NOW = datetime.now(UTC)
TP = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
WEEK = timedelta(days=7)


@pytest.fixture
async def conn_pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    dsn = await fresh_database(postgres, [MIGRATIONS])
    async with await db.create_pool(dsn, 3) as p:
        yield p


class Fold:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        store = EventStore("analytics")
        self.subscribers = [KpiProjection(store, "analytics"), CampaignProjection(store, "analytics", WEEK)]
        self.store = store

    async def apply(self, *events: Envelope) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for s in self.subscribers:
                await s.apply(conn, list(events))

    async def emitted(self, type_: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT subject, data::text AS data FROM events WHERE type = $1 ORDER BY position", type_
            )
        return [{"subject": r["subject"], **json.loads(r["data"])} for r in rows]


def ev(type_: str, subject: str, data: dict[str, Any], at: datetime = NOW) -> Envelope:
    return new_event(type_, subject, data, "test", TP, time=at)


def prefs(cid: str, region: str | None, vip: bool = False) -> Envelope:
    return ev(
        PREFERENCES_CHANGED, cid, {"customer_id": cid, "preferences": {"region": region, "vip": vip}, "changed": []}
    )


def interaction(
    cid: str, at: datetime, channel: str = "web", kind: str = "message", direction: str = "inbound", **metadata: Any
) -> Envelope:
    data = {
        "customer_id": cid, "channel": channel, "direction": direction, "kind": kind,
        "occurred_at": at.isoformat(), "metadata": metadata,
    }  # fmt: skip
    return ev(INTERACTION_RECORDED, cid, data, at)


def created(campaign_id: str, aud: dict[str, Any], send_at: datetime) -> Envelope:
    data = {
        "campaign_id": campaign_id, "name": campaign_id, "audience": aud, "purpose": "marketing",
        "templates": {"en": {"subject": "Hi", "body": "Spring sale"}}, "send_at": send_at.isoformat(),
        "created_by": "k1",
    }  # fmt: skip
    return ev(CAMPAIGN_CREATED, f"campaign:{campaign_id}", data)


def ids_of(parts: Sequence[dict[str, Any]], campaign_id: str) -> list[str]:
    return [i for p in parts if p["campaign_id"] == campaign_id for i in p["customer_ids"]]


async def test_a_due_campaign_resolves_once_merged_customers_under_the_survivor_and_erased_never(
    conn_pool: asyncpg.Pool,
) -> None:
    fold = Fold(conn_pool)
    await fold.apply(
        prefs("de-1", "DE"), prefs("de-2", "DE"), prefs("de-3", "DE"), prefs("de-4", "DE"), prefs("fr-1", "FR"),
        interaction("de-1", NOW - timedelta(days=1), channel="sms"),
        interaction("de-2", NOW - timedelta(days=1), channel="email"),
        interaction("de-3", NOW - timedelta(days=1), channel="sms"),
        interaction("fr-1", NOW - timedelta(days=1), channel="sms"),
    )  # fmt: skip
    merged = {"survivor_id": "de-2", "merged_id": "de-3", "linked_by": {"kind": "email", "value": "x"}, "reason": "r"}
    await fold.apply(ev(CUSTOMER_MERGED, "de-3", merged))
    await fold.apply(ev(CUSTOMER_ERASED, "de-4", {"customer_id": "de-4", "erased_ids": ["de-4"]}))

    spring = created("spring", {"region": "DE", "channel_used": "sms"}, NOW - timedelta(seconds=1))
    await fold.apply(spring)
    await fold.apply(spring)  # redelivered: the audience is on record, nothing new
    parts = await fold.emitted(contract.CAMPAIGN_AUDIENCE_RESOLVED)
    # de-3's sms is de-2's now; de-4 is erased; fr-1 is elsewhere
    assert [(p["subject"], p["part"], p["parts"], p["audience_size"]) for p in parts] == [("campaign:spring", 1, 1, 2)]
    assert ids_of(parts, "spring") == ["de-1", "de-2"]

    everyone = created("everyone", {}, NOW - timedelta(seconds=1))
    await fold.apply(everyone)
    assert ids_of(await fold.emitted(contract.CAMPAIGN_AUDIENCE_RESOLVED), "everyone") == ["de-1", "de-2", "fr-1"]


async def test_a_campaign_for_later_is_resolved_by_the_timer_when_due_and_a_cancelled_one_never(
    conn_pool: asyncpg.Pool,
) -> None:
    fold = Fold(conn_pool)
    await fold.apply(prefs("c1", "DE"), prefs("c2", "DE"))
    later = NOW + timedelta(hours=1)
    await fold.apply(created("later", {"region": "DE"}, later), created("off", {"region": "DE"}, later))
    await fold.apply(ev(CAMPAIGN_STATUS_CHANGED, "campaign:off", {"campaign_id": "off", "status": "cancelled"}))
    assert await fold.emitted(contract.CAMPAIGN_AUDIENCE_RESOLVED) == []

    async with conn_pool.acquire() as conn:
        assert await campaign_store.due_campaigns(conn, NOW) == []
        due = await campaign_store.due_campaigns(conn, later)
        assert due == ["later"]
        for _ in range(2):  # a second timer run (a restart) finds it resolved
            async with conn.transaction():
                await campaign_projection.resolve(conn, fold.store, "analytics", "later", later)
    parts = await fold.emitted(contract.CAMPAIGN_AUDIENCE_RESOLVED)
    assert [(p["campaign_id"], p["customer_ids"]) for p in parts] == [("later", ["c1", "c2"])]


async def test_an_audience_over_1000_comes_in_parts(conn_pool: asyncpg.Pool) -> None:
    fold = Fold(conn_pool)
    await fold.apply(*(prefs(f"c{i:04d}", "DE") for i in range(1001)))
    await fold.apply(created("big", {"region": "DE"}, NOW - timedelta(seconds=1)))
    parts = await fold.emitted(contract.CAMPAIGN_AUDIENCE_RESOLVED)
    assert [(p["part"], p["parts"], p["audience_size"], len(p["customer_ids"])) for p in parts] == [
        (1, 2, 1001, 1000),
        (2, 2, 1001, 1),
    ]
    assert ids_of(parts, "big") == [f"c{i:04d}" for i in range(1001)]


async def test_the_audience_sql_selects_what_audience_py_selects(conn_pool: asyncpg.Pool) -> None:
    rnd = random.Random(28)
    times = [NOW - timedelta(days=d) for d in (1, 5, 10, 30)]
    population = [
        CustomerRow(
            customer_id=f"c{i:03d}",
            segment=rnd.choice(["vip", "loyal", "at_risk", "regular"]),
            risk_band=rnd.choice(["low", "medium", "high"]),
            region=rnd.choice([None, "DE", "FR"]),
            vip=rnd.random() < 0.3,
            last_contact=rnd.choice([None, *times]),
            channels=frozenset(c for c in ("sms", "email", "web") if rnd.random() < 0.4),
            erased=rnd.random() < 0.1,
        )
        for i in range(200)
    ]
    async with conn_pool.acquire() as conn:
        for c in population:
            await conn.execute(
                "INSERT INTO analytics_customers (customer_id, first_seen, region, vip, last_interaction_at,"
                " risk_band, segment, as_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $2)",
                c.customer_id, NOW - timedelta(days=400), c.region, c.vip, c.last_contact, c.risk_band, c.segment,
            )  # fmt: skip
        await campaign_store.add_channels(conn, {(c.customer_id, ch) for c in population for ch in c.channels})
        await campaign_store.erase(conn, [c.customer_id for c in population if c.erased])
        audiences = [
            Audience(),
            Audience(segment="vip"),
            Audience(risk_band="high", region="DE"),
            Audience(channel_used="sms"),
            Audience(vip=True, channel_used="email"),
            Audience(vip=False, region="FR"),
            Audience(last_contact_before=times[1]),
            Audience(last_contact_after=times[2]),
            Audience(segment="loyal", last_contact_after=times[3], last_contact_before=times[0]),
        ]
        for a in audiences:
            expected = audience.select(a, population)
            assert await campaign_store.audience_ids(conn, a) == expected, a


async def test_responses_are_attributed_and_counted_in_the_results(conn_pool: asyncpg.Pool) -> None:
    fold = Fold(conn_pool)
    t0 = NOW - timedelta(days=2)
    await fold.apply(prefs("c1", "DE"), prefs("c2", "DE"), prefs("c3", "DE"))
    await fold.apply(created("spring", {"region": "DE"}, t0 - timedelta(minutes=1)))

    def decision(status: str, cid: str, channel: str, at: datetime) -> Envelope:
        return ev(
            f"crm.notification.{status}.v1", cid, {"customer_id": cid, "channel": channel, "campaign_id": "spring"}, at
        )

    await fold.apply(
        decision("scheduled", "c1", "email", t0), decision("sent", "c1", "email", t0),
        decision("delivered", "c1", "email", t0), decision("sent", "c2", "sms", t0),
        decision("suppressed", "c3", "email", t0),
    )  # fmt: skip
    purchase = interaction("c1", t0 + timedelta(hours=1), kind="purchase", amount=49.5)
    await fold.apply(purchase)
    await fold.apply(purchase)  # redelivered: one response
    # c2 answers nothing but withdraws marketing consent within the window
    await fold.apply(
        ev(
            CONSENT_CHANGED,
            "c2",
            {"customer_id": "c2", "purpose": "marketing", "granted": False},
            t0 + timedelta(hours=2),
        )
    )
    # c3 was not reached (suppressed): no response; c1 outbound: no response
    await fold.apply(interaction("c3", t0 + timedelta(hours=1)), interaction("c1", t0, direction="outbound"))
    responses = await fold.emitted(contract.CAMPAIGN_RESPONSE)
    assert responses == [
        {
            "subject": "c1", "campaign_id": "spring", "channel": "email", "interaction_event_id": purchase.id,
            "kind": "purchase", "amount": 49.5, "attributed_by": "window",
        }
    ]  # fmt: skip
    # c3 names the campaign in metadata, a week later: attributed by metadata
    await fold.apply(interaction("c3", NOW + timedelta(days=8), kind="purchase", amount=10, campaign_id="spring"))
    async with conn_pool.acquire() as conn:
        results = await campaign_store.results(conn, "spring")
    assert results == {
        # c3 responds by metadata without having been sent it: a response, not in the rate (1 of 2)
        "sent": 2, "delivered": 1, "responded": 2, "response_rate": 0.5, "conversions": 2, "revenue": 59.5,
        "unsubscribed": 1,
        "by_channel": {
            "email": {"sent": 1, "delivered": 1, "responded": 1, "response_rate": 1.0, "conversions": 1,
                      "revenue": 49.5, "unsubscribed": 0},
            "sms": {"sent": 1, "delivered": 0, "responded": 0, "response_rate": 0.0, "conversions": 0,
                    "revenue": 0.0, "unsubscribed": 1},
            "web": {"sent": 0, "delivered": 0, "responded": 1, "response_rate": None, "conversions": 1,
                    "revenue": 10.0, "unsubscribed": 0},
        },
    }  # fmt: skip
    # and the campaign's own events are about the campaign, not a customer
    async with conn_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM analytics_customers WHERE customer_id LIKE 'campaign:%'") == 0


async def test_a_batch_with_the_touch_and_two_answers_attributes_both_once(conn_pool: asyncpg.Pool) -> None:
    fold = Fold(conn_pool)
    t0 = NOW - timedelta(hours=3)
    await fold.apply(prefs("c1", "DE"), created("flash", {"region": "DE"}, t0 - timedelta(minutes=1)))
    sent = ev("crm.notification.sent.v1", "c1", {"customer_id": "c1", "channel": "sms", "campaign_id": "flash"}, t0)
    first = interaction("c1", t0 + timedelta(minutes=5), kind="message")
    second = interaction("c1", t0 + timedelta(minutes=9), kind="purchase", amount=12.5)
    # the answers before the touch in the batch: topics interleave so
    await fold.apply(first, second, sent)
    await fold.apply(first, second)  # redelivered
    responses = await fold.emitted(contract.CAMPAIGN_RESPONSE)
    assert [(r["subject"], r["interaction_event_id"], r["kind"]) for r in responses] == [
        ("c1", first.id, "message"),
        ("c1", second.id, "purchase"),
    ]
    async with conn_pool.acquire() as conn:
        got = await campaign_store.results(conn, "flash")
    assert (got["sent"], got["responded"], got["conversions"], got["revenue"]) == (1, 1, 1, 12.5)


async def test_answers_and_unsubscribes_applied_before_their_touch_count_when_the_touch_comes(
    conn_pool: asyncpg.Pool,
) -> None:
    fold = Fold(conn_pool)
    t0 = NOW - timedelta(hours=3)
    await fold.apply(prefs("c1", "DE"), created("late", {"region": "DE"}, t0 - timedelta(minutes=1)))
    answer = interaction("c1", t0 + timedelta(minutes=5), kind="purchase", amount=7)
    too_early = interaction("c1", t0 - timedelta(minutes=5))  # before the message: no answer to it
    withdrawn = ev(CONSENT_CHANGED, "c1", {"customer_id": "c1", "purpose": "marketing", "granted": False},
                   t0 + timedelta(minutes=6))  # fmt: skip
    await fold.apply(answer, too_early, withdrawn)  # intake's topic was read first
    assert await fold.emitted(contract.CAMPAIGN_RESPONSE) == []
    sent = ev("crm.notification.sent.v1", "c1", {"customer_id": "c1", "channel": "email", "campaign_id": "late"}, t0)
    await fold.apply(sent)
    await fold.apply(ev("crm.notification.delivered.v1", "c1", {"customer_id": "c1", "channel": "email",
                                                                "campaign_id": "late"}, t0))  # fmt: skip
    responses = await fold.emitted(contract.CAMPAIGN_RESPONSE)
    assert [(r["interaction_event_id"], r["amount"], r["channel"]) for r in responses] == [(answer.id, 7.0, "email")]
    async with conn_pool.acquire() as conn:
        got = await campaign_store.results(conn, "late")
    assert (got["sent"], got["delivered"], got["responded"], got["revenue"], got["unsubscribed"]) == (1, 1, 1, 7.0, 1)
