"""Campaigns against a real PostgreSQL, the real batch applier (audience parts arrive as events
through it) and the real decisions and delivery loop, under a controllable clock.

Analytics' campaign_audience_resolved type is analytics' contract (not on this branch yet): the
test accepts it with a local model of its agreed fields.
"""

import asyncio
import base64
import dataclasses
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.acceptance import Acceptance
from eventkit.consumer import BatchApplier, Waiters
from eventkit.envelope import Envelope, new_event
from notification import campaign_handlers, campaign_store, campaigns, domain, worker
from notification.policies import ErasurePolicy, RulesPolicy
from notification.projections import ProfileProjection
from pydantic import Field
from servicekit.keyring import ErasedKeyEviction
from servicekit.timeline import TimelineProjection

from contracts import notification as n
from contracts.analytics import CAMPAIGN_AUDIENCE_RESOLVED
from contracts.events import EventData
from contracts.topics import DEADLETTER
from tests.conftest import SCHEMAS, fresh_database
from tests.notification.receivers import SmtpServer, WebhookServer
from tests.notification.test_delivery import (  # noqa: F401  (fixtures)
    KEYS,
    MIGRATIONS,
    TP,
    Harness,
    consent,
    created,
    hooks,
    intake,
    preferences,
)

ROOT = Path(__file__).resolve().parents[2]  # the worktree: the sender process runs its code
SOON = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


class AudienceResolved(EventData):
    """The agreed payload of crm.analytics.campaign_audience_resolved.v1 (analytics' contract)."""

    campaign_id: str
    part: int = Field(ge=1)
    parts: int = Field(ge=1)
    audience_size: int = Field(ge=0)
    customer_ids: list[str] = Field(max_length=1000)
    resolved_at: datetime


class CampaignHarness(Harness):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.clock.now = SOON
        self.applier = BatchApplier(
            service="notification-test",
            pool=self.pool,
            producer=args[1],
            subscribers=[
                TimelineProjection(),
                ErasedKeyEviction(self.keyring),
                ProfileProjection(self.keyring),
                RulesPolicy(self.ctx),
                campaign_handlers.AudiencePolicy(self.ctx),
                ErasurePolicy(self.ctx),
            ],
            acceptance=Acceptance({**SCHEMAS, CAMPAIGN_AUDIENCE_RESOLVED: AudienceResolved}),
            deadletter_topic=DEADLETTER,
            waiters=Waiters(),
        )

    async def create(self, purpose: str = "marketing", **extra: Any) -> str:
        campaign_id = f"camp-{uuid.uuid4().hex[:8]}"
        c = {
            "campaign_id": campaign_id,
            "name": "Spring offer",
            "request": {"name": "Spring offer"},
            "audience": {"segment": "vip"},
            "purpose": purpose,
            "templates": {"en": {"subject": "{campaign_name}", "body": "Hello {customer_id}"}},
            "send_at": self.clock.now,
            "created_by": "test-key",
            "status": "scheduled",
            "created_at": self.clock.now,
            **extra,
        }
        async with self.pool.acquire() as conn, conn.transaction():
            made, _ = await campaign_handlers.create(conn, self.ctx, c)
        assert made
        return campaign_id

    def audience(
        self, campaign_id: str, customers: list[str], part: int = 1, parts: int = 1, size: int = 0
    ) -> Envelope:
        data = {
            "campaign_id": campaign_id,
            "part": part,
            "parts": parts,
            "audience_size": size or len(customers),
            "customer_ids": customers,
            "resolved_at": self.clock.now.isoformat(),
        }
        return new_event(CAMPAIGN_AUDIENCE_RESOLVED, n.campaign_subject(campaign_id), data, "/crm/analytics", TP)

    async def send_all(self, limit: int = 2) -> int:
        total = 0
        while worked := await campaign_handlers.send_batch(self.pool, self.ctx, limit):
            total += worked
        return total

    async def campaign(self, campaign_id: str) -> dict[str, Any]:
        found = await campaign_store.get(self.pool, campaign_id)  # type: ignore[arg-type]
        assert found is not None
        return found

    async def counts(self, campaign_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            rows = await campaign_store.message_counts(conn, campaign_id)
            pending = await campaign_store.pending(conn, campaign_id)
        return campaigns.counts(rows, pending).out()

    async def statuses(self, campaign_id: str) -> list[tuple[str, str | None]]:
        rows = await self.pool.fetch(
            "SELECT data FROM events WHERE stream_id = $1 AND type = $2 ORDER BY version",
            f"campaign-{campaign_id}",
            n.CAMPAIGN_STATUS_CHANGED,
        )
        return [(r["data"]["status"], r["data"]["reason"]) for r in rows]


@pytest.fixture
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fresh_database(postgres, MIGRATIONS)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(dsn, 10)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def harness(pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer, hooks: WebhookServer) -> Harness:  # noqa: F811
    return CampaignHarness(pool, producer, smtp, hooks)


def _customer(tag: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"cust-{tag}-{suffix}", f"{tag}-{suffix}@example.com"


async def _four_customers(h: Harness) -> dict[str, str]:
    """reached (marketing consent), no_consent, quiet (consent, in quiet hours now), no_address."""
    people = {tag: _customer(tag) for tag in ("reached", "no_consent", "quiet", "no_address")}
    quiet = {"start": "13:00", "end": "18:00", "time_zone": "UTC"}
    for tag, (customer, email) in people.items():
        await h.deliver(created(customer, None if tag == "no_address" else email))
        if tag != "no_consent":
            await h.deliver(consent(customer, "marketing", True))
    await h.deliver(preferences(people["quiet"][0], quiet_hours=quiet))
    return {tag: customer for tag, (customer, _) in people.items()}


async def test_a_campaign_decides_every_target_through_the_usual_decisions(harness: CampaignHarness) -> None:
    people = await _four_customers(harness)
    campaign_id = await harness.create()
    assert (await harness.campaign(campaign_id))["status"] == "scheduled"
    targets = list(people.values())
    first = harness.audience(campaign_id, targets[:2], part=1, parts=2, size=4)
    await harness.deliver(first)
    await harness.deliver(first)  # redelivered: nothing twice
    assert (await harness.campaign(campaign_id))["status"] == "sending"
    assert await harness.send_all() == 2
    assert (await harness.campaign(campaign_id))["status"] == "sending"  # a part is still to come
    await harness.deliver(harness.audience(campaign_id, targets[2:], part=2, parts=2, size=4))
    assert await harness.send_all() == 2
    found = await harness.campaign(campaign_id)
    assert (found["status"], found["audience_size"]) == ("completed", 4)
    assert await harness.statuses(campaign_id) == [("sending", "audience_resolved"), ("completed", "all_decided")]

    rows = {r["customer_id"]: r for r in await harness.pool.fetch(
        "SELECT * FROM notifications WHERE campaign_id = $1", campaign_id)}  # fmt: skip
    assert {c: (r["status"], r["reason"]) for c, r in rows.items()} == {
        people["reached"]: ("scheduled", None),
        people["no_consent"]: ("suppressed", "no_consent"),
        people["quiet"]: ("scheduled", None),
        people["no_address"]: ("suppressed", "no_address"),
    }
    assert rows[people["quiet"]]["deliver_at"] == datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
    # Every decision is an event on the customer's timeline, carrying the campaign.
    for customer in people.values():
        timeline = await harness.pool.fetch(
            "SELECT type, data FROM events WHERE subject = $1 AND stream_id LIKE 'notification-%'", customer
        )
        assert [r["data"]["campaign_id"] for r in timeline] == [campaign_id]
    quiet_event = await harness.events(str(rows[people["quiet"]]["notification_id"]))
    assert quiet_event[0][1]["delayed_reason"] == "quiet_hours"

    await harness.run_loop()
    counts = await harness.counts(campaign_id)
    assert counts == {
        "scheduled": 1,
        "sent": 1,
        "delivered": 0,
        "failed": 0,
        "suppressed": {"no_consent": 1, "no_address": 1},
        "pending": 0,
    }


async def test_a_batch_looks_up_its_customers_keys_at_once(harness: CampaignHarness) -> None:
    people = await _four_customers(harness)
    campaign_id = await harness.create()
    await harness.deliver(harness.audience(campaign_id, list(people.values()), part=1, parts=1, size=4))
    source = harness.keyring.source
    calls: list[list[str]] = []

    async def counted(customer_ids: Sequence[str], create: bool) -> tuple[dict[str, bytes], set[str]]:
        calls.append(list(customer_ids))
        return await source.lookup(customer_ids, create)

    harness.keyring.forget(people.values())
    harness.keyring.source = SimpleNamespace(lookup=counted)  # type: ignore[assignment]
    try:
        assert await harness.send_all(limit=4) == 4
    finally:
        harness.keyring.source = source
    assert sorted(calls[0]) == sorted(people.values())
    assert all(set(call) <= set(people.values()) for call in calls)
    assert len(calls) == 1, calls


async def test_the_campaigns_own_events_are_on_no_timeline(harness: CampaignHarness) -> None:
    campaign_id = await harness.create()
    stored = await harness.pool.fetch("SELECT * FROM events WHERE stream_id = $1", f"campaign-{campaign_id}")
    assert [r["subject"] for r in stored] == [n.campaign_subject(campaign_id)]
    envelope = new_event(
        n.CAMPAIGN_CREATED, n.campaign_subject(campaign_id), stored[0]["data"], "/crm/notification", TP
    )
    await harness.deliver(envelope, harness.audience(campaign_id, []))
    on_timeline = await harness.pool.fetchval(
        "SELECT count(*) FROM timeline WHERE customer_id = $1", n.campaign_subject(campaign_id)
    )
    assert on_timeline == 0
    # An empty audience completes at once.
    assert (await harness.campaign(campaign_id))["status"] == "completed"


async def test_pause_holds_the_sender_between_batches_and_resume_finishes(harness: CampaignHarness) -> None:
    people = await _four_customers(harness)
    campaign_id = await harness.create()
    await harness.deliver(harness.audience(campaign_id, list(people.values())))
    assert await campaign_handlers.send_batch(harness.pool, harness.ctx, 1) == 1
    async with harness.pool.acquire() as conn, conn.transaction():
        await campaign_handlers.change(conn, harness.ctx, campaign_id, "pause")
    assert await harness.send_all() == 0
    assert (await harness.counts(campaign_id))["pending"] == 3
    async with harness.pool.acquire() as conn, conn.transaction():
        await campaign_handlers.change(conn, harness.ctx, campaign_id, "resume")
    assert await harness.send_all() == 3
    assert (await harness.campaign(campaign_id))["status"] == "completed"
    assert [s for s, _ in await harness.statuses(campaign_id)] == ["sending", "paused", "sending", "completed"]


async def test_cancel_leaves_the_rest_undecided_and_allows_nothing_after(harness: CampaignHarness) -> None:
    people = await _four_customers(harness)
    campaign_id = await harness.create()
    await harness.deliver(harness.audience(campaign_id, list(people.values())))
    assert await campaign_handlers.send_batch(harness.pool, harness.ctx, 1) == 1
    async with harness.pool.acquire() as conn, conn.transaction():
        await campaign_handlers.change(conn, harness.ctx, campaign_id, "cancel")
    assert await harness.send_all() == 0
    assert (await harness.campaign(campaign_id))["status"] == "cancelled"
    assert (await harness.counts(campaign_id))["pending"] == 3
    async with harness.pool.acquire() as conn, conn.transaction():
        with pytest.raises(campaigns.IllegalTransition):
            await campaign_handlers.change(conn, harness.ctx, campaign_id, "resume")


async def test_a_batch_cut_off_midway_leaves_nothing_and_the_rerun_sends_each_once(
    harness: CampaignHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash inside a batch (here: an error at its third target) rolls back the whole batch:
    no message, no event, no target marked; the next run decides every target exactly once. A
    target set back to pending (as if its mark were lost) finds its message by its key."""
    people = await _four_customers(harness)
    campaign_id = await harness.create()
    await harness.deliver(harness.audience(campaign_id, list(people.values())))
    real = campaign_handlers.handlers.decide
    calls = 0

    async def dying(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionResetError("killed mid-batch")
        await real(*args)

    monkeypatch.setattr(campaign_handlers.handlers, "decide", dying)
    with pytest.raises(ConnectionResetError):
        await campaign_handlers.send_batch(harness.pool, harness.ctx, 4)
    assert await harness.pool.fetchval("SELECT count(*) FROM notifications WHERE campaign_id = $1", campaign_id) == 0
    monkeypatch.setattr(campaign_handlers.handlers, "decide", real)
    assert await harness.send_all(4) == 4
    await harness.pool.execute("UPDATE campaign_targets SET state = 'pending' WHERE campaign_id = $1", campaign_id)
    await harness.pool.execute("UPDATE campaigns SET status = 'sending' WHERE campaign_id = $1", campaign_id)
    assert await harness.send_all(4) == 4
    messages = await harness.pool.fetch("SELECT customer_id FROM notifications WHERE campaign_id = $1", campaign_id)
    assert sorted(r["customer_id"] for r in messages) == sorted(people.values())
    decided = await harness.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id IN (SELECT 'notification-' || notification_id"
        " FROM notifications WHERE campaign_id = $1)",
        campaign_id,
    )
    assert decided == 4


async def test_a_merged_target_gets_one_message_under_the_survivor(harness: CampaignHarness) -> None:
    survivor, email = _customer("survivor")
    merged, _ = _customer("merged")
    await harness.deliver(created(survivor, email), consent(survivor, "marketing", True), created(merged))
    merge = intake(
        "crm.customer.merged.v1", survivor, survivor_id=survivor, merged_id=merged,
        linked_by={"kind": "email", "value": email}, reason="same email",
    )  # fmt: skip
    await harness.deliver(merge)
    campaign_id = await harness.create()
    await harness.deliver(harness.audience(campaign_id, [survivor, merged]))
    await harness.send_all()
    rows = await harness.pool.fetch("SELECT customer_id, status FROM notifications WHERE campaign_id = $1", campaign_id)
    assert [(r["customer_id"], r["status"]) for r in rows] == [(survivor, "scheduled")]
    assert (await harness.campaign(campaign_id))["status"] == "completed"


async def test_service_campaigns_need_no_marketing_consent(harness: CampaignHarness) -> None:
    customer, email = _customer("service")
    await harness.deliver(created(customer, email))
    campaign_id = await harness.create(purpose="service", send_at=harness.clock.now - timedelta(seconds=1))
    await harness.deliver(harness.audience(campaign_id, [customer]))
    await harness.send_all()
    await harness.run_loop()
    [row] = await harness.pool.fetch("SELECT status, rule FROM notifications WHERE campaign_id = $1", campaign_id)
    assert (row["status"], row["rule"]) == ("sent", "campaign_service")


async def test_a_sender_killed_between_batches_sends_nobody_twice(harness: CampaignHarness, dsn: str) -> None:
    """A real process deciding one target per batch dies (os._exit, as SIGKILL) right after its
    second batch commits; the next sender decides the other two, and every target has exactly
    one message with exactly one decision event."""
    people = await _four_customers(harness)
    campaign_id = await harness.create()
    await harness.deliver(harness.audience(campaign_id, list(people.values())))
    root = ROOT
    keys = {c: base64.b64encode(k).decode() for c, k in KEYS.stored.items() if c in people.values()}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("services", ".")),
        "EVENTKIT_CRASH_AT": "notification.campaign_batch@2",
        "CAMPAIGN_DSN": dsn,
        "CAMPAIGN_KEYS": orjson.dumps(keys).decode(),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.notification.campaign_crash", cwd=root, env=env
    )
    assert await proc.wait() == 137
    assert (await harness.counts(campaign_id))["pending"] == 2
    assert (await harness.campaign(campaign_id))["status"] == "sending"
    assert await harness.send_all() == 2
    assert (await harness.campaign(campaign_id))["status"] == "completed"
    per_customer = await harness.pool.fetch(
        "SELECT n.customer_id, count(*) AS events FROM notifications n JOIN events e"
        " ON e.stream_id = 'notification-' || n.notification_id WHERE n.campaign_id = $1 GROUP BY 1",
        campaign_id,
    )
    assert {r["customer_id"]: r["events"] for r in per_customer} == dict.fromkeys(people.values(), 1)


async def test_over_the_cap_a_campaign_message_goes_into_the_digest_with_its_own_text(
    harness: CampaignHarness, smtp: SmtpServer
) -> None:
    customer, email = _customer("capped")
    await harness.deliver(created(customer, email), consent(customer, "marketing", True))
    capped = dataclasses.replace(harness.ctx, customer_cap=domain.Cap(0, timedelta(days=1)))
    campaign_id = await harness.create()
    await harness.deliver(harness.audience(campaign_id, [customer]))
    assert await campaign_handlers.send_batch(harness.pool, capped, 10) == 1
    [row] = await harness.pool.fetch("SELECT * FROM notifications WHERE campaign_id = $1", campaign_id)
    assert row["status"] == "digested" and row["digest_id"] is not None
    [(kind, data)] = await harness.events(str(row["notification_id"]))
    assert (kind, data["campaign_id"]) == (n.NOTIFICATION_SCHEDULED, campaign_id)
    assert data["digest_id"] == str(row["digest_id"])
    harness.clock.now = SOON + timedelta(hours=1, seconds=1)  # the digest window has ended
    for _ in range(3):
        await worker.deliver_due(harness.pool, capped, harness.sender)
    [mail] = smtp.with_header("X-CRM-Notification-Id", str(row["digest_id"]))
    assert f"Hello {customer}" in mail.get_content() and "Spring offer" in mail.get_content()
