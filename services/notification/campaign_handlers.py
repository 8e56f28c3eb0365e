"""Campaigns on the database: create, pause/resume/cancel, take in a resolved audience, and the
paced sender that turns targets into messages through notification's own decisions.

Each target becomes one row of `notifications` (idempotency key campaign:<id>:<customer>) that
handlers.decide() schedules or suppresses as it does a rule's message (consent per channel and
purpose, blocked channels, verified addresses, quiet hours, the cap and digests), so the worker
delivers it like any other. A batch of targets is one transaction: its messages, their events
and the targets' `decided` mark commit together, so a restart between batches sends no one twice
and a campaign never holds the database (or other messages) for long.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from eventkit import telemetry
from eventkit.crash_points import crash_point
from eventkit.db import TRANSIENT_ERRORS
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from servicekit.keyring import KeysUnavailable

from contracts import notification as n
from contracts.analytics import CAMPAIGN_AUDIENCE_RESOLVED
from contracts.registry import REGISTRY
from contracts.topics import NOTIFICATION
from notification import campaign_store, campaigns, domain, handlers, store
from notification.context import NotificationContext
from notification.store import Row

log = logging.getLogger(__name__)

AUDIENCE_RESOLVED = CAMPAIGN_AUDIENCE_RESOLVED  # analytics answers a campaign with its audience


class AudiencePart(BaseModel):
    """The fields of an audience part this service reads."""

    model_config = ConfigDict(extra="ignore")
    campaign_id: str = Field(min_length=1, max_length=64)
    part: int = Field(ge=1)
    parts: int = Field(ge=1)
    audience_size: int = Field(ge=0)
    customer_ids: list[str] = Field(max_length=1000)


async def _record(
    conn: asyncpg.Connection, ctx: NotificationContext, campaign_id: str, type_: str, data: dict[str, Any]
) -> Envelope:
    payload = REGISTRY[type_].model.model_validate(data).model_dump(mode="json")
    event = new_event(
        type_, n.campaign_subject(campaign_id), payload, ctx.source, telemetry.current_traceparent(), time=ctx.clock()
    )
    await ctx.events.append(conn, [Append(f"campaign-{campaign_id}", None, [event], NOTIFICATION)])
    return event


async def create(conn: asyncpg.Connection, ctx: NotificationContext, c: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(True, campaign) when made now; (False, the stored one) when the id was taken: the caller
    compares the requests (the same: a retry; different: a conflict)."""
    if not await campaign_store.insert(conn, c):
        found = await campaign_store.get(conn, c["campaign_id"])
        assert found is not None
        return False, found
    created = {k: c[k] for k in ("campaign_id", "name", "audience", "purpose", "templates", "send_at", "created_by")}
    await _record(conn, ctx, c["campaign_id"], n.CAMPAIGN_CREATED, created)
    made = await campaign_store.get(conn, c["campaign_id"])
    assert made is not None
    return True, made


async def _set_status(
    conn: asyncpg.Connection, ctx: NotificationContext, campaign: dict[str, Any], status: str, reason: str | None
) -> None:
    await campaign_store.set_status(conn, campaign["campaign_id"], status, reason, ctx.clock())
    campaign.update(status=status, reason=reason)
    data = {"campaign_id": campaign["campaign_id"], "status": status, "reason": reason}
    await _record(conn, ctx, campaign["campaign_id"], n.CAMPAIGN_STATUS_CHANGED, data)


async def change(conn: asyncpg.Connection, ctx: NotificationContext, campaign_id: str, action: str) -> dict[str, Any]:
    """Pause, resume or cancel; KeyError for an unknown campaign, campaigns.IllegalTransition for
    a change its status does not allow. Waits for a batch in flight (it holds the campaign)."""
    campaign = await campaign_store.get(conn, campaign_id, lock=True)
    if campaign is None:
        raise KeyError(campaign_id)
    status = campaigns.transition(campaign["status"], action)
    if action == "resume" and not campaign["parts_seen"]:
        status = "scheduled"  # paused before its audience came: it waits for it again
    await _set_status(conn, ctx, campaign, status, {"pause": "paused", "cancel": "cancelled"}.get(action, "resumed"))
    await _complete_if_done(conn, ctx, campaign)
    return campaign


async def _complete_if_done(conn: asyncpg.Connection, ctx: NotificationContext, campaign: dict[str, Any]) -> None:
    """Sending, every part of the audience in and every target decided: completed."""
    if campaign["status"] != "sending" or campaign["parts"] is None:
        return
    if len(set(campaign["parts_seen"])) < campaign["parts"]:
        return
    if await campaign_store.pending(conn, campaign["campaign_id"]):
        return
    await _set_status(conn, ctx, campaign, "completed", "all_decided")


async def take_audience(conn: asyncpg.Connection, ctx: NotificationContext, event: Envelope) -> None:
    """One part of a resolved audience: its targets stored (once: a redelivered part changes
    nothing); the first part starts sending a scheduled campaign. A paused campaign keeps its
    targets for when it resumes; a cancelled one takes none."""
    try:
        part = AudiencePart.model_validate(event.data)
    except ValidationError:
        log.warning("audience part of a campaign not understood; ignored")
        return
    campaign = await campaign_store.get(conn, part.campaign_id, lock=True)
    if campaign is None:
        log.warning("audience for an unknown campaign %s; ignored", part.campaign_id)
        return
    now = ctx.clock()
    if not await campaign_store.record_part(conn, part.campaign_id, part.part, part.parts, part.audience_size, now):
        return
    campaign.update(parts=part.parts, audience_size=part.audience_size, parts_seen=[*campaign["parts_seen"], part.part])
    if campaign["status"] == "cancelled":
        return
    await campaign_store.add_targets(conn, part.campaign_id, part.customer_ids)
    if campaign["status"] == "scheduled":
        await _set_status(conn, ctx, campaign, "sending", "audience_resolved")
    await _complete_if_done(conn, ctx, campaign)


class AudiencePolicy:
    """Takes analytics' resolved audiences, in the consumer's transaction."""

    def __init__(self, ctx: NotificationContext) -> None:
        self.ctx = ctx

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            if e.type == AUDIENCE_RESOLVED:
                await take_audience(conn, self.ctx, e)


async def _decide_target(
    conn: asyncpg.Connection, ctx: NotificationContext, campaign: dict[str, Any], customer_id: str, now: datetime
) -> None:
    ids = await store.customer_ids(conn, customer_id)
    survivor = ids[0]  # merged since the audience was resolved: the survivor, once
    key = campaigns.target_key(campaign["campaign_id"], survivor)
    row = Row(
        notification_id=campaigns.target_notification_id(campaign["campaign_id"], survivor),
        idempotency_key=key,
        rule=domain.campaign_rule(campaign["purpose"]),
        source_event_id=campaigns.source_event_id(campaign["campaign_id"]),
        source_event_type=n.CAMPAIGN_CREATED,
        customer_id=survivor,
        audience="customer",
        recipient=f"customer:{survivor}",
        purpose=campaign["purpose"],
        critical=False,
        data=campaigns.message_data(campaign, survivor),
        traceparent=telemetry.current_traceparent(),
        channel=None,
        address=None,
        status="pending",
        created_at=now,
        campaign_id=campaign["campaign_id"],
    )
    if await store.insert(conn, row, now):
        await handlers.decide(conn, ctx, row)


async def send_batch(pool: asyncpg.Pool, ctx: NotificationContext, limit: int) -> int:
    """Decide up to `limit` targets of the oldest sending campaign, in one transaction; returns
    how many (0: nothing to do)."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            now = ctx.clock()
            campaign = await campaign_store.sending_campaign(conn, now)
            if campaign is None:
                return 0
            targets = await campaign_store.take_targets(conn, campaign["campaign_id"], limit)
            # One key lookup for the batch, not one round trip to intake per target (each
            # decision seals its message under the customer's key; the ring then has them all).
            await ctx.keyring.keys(targets, create=True)
            for customer_id in targets:
                await _decide_target(conn, ctx, campaign, customer_id, now)
            await campaign_store.mark_decided(conn, campaign["campaign_id"], targets)
        crash_point("notification.campaign_batch")  # recovery tests: die between two batches
        async with conn.transaction():
            current = await campaign_store.get(conn, campaign["campaign_id"], lock=True)
            if current is not None:
                await _complete_if_done(conn, ctx, current)
    return len(targets)


async def run(ctx: NotificationContext, pool: asyncpg.Pool, rate_per_s: float, idle_s: float) -> None:
    """Forever: a batch at a time, paced to `rate_per_s` targets a second overall."""
    size, interval = campaigns.pacing(rate_per_s)
    while True:
        started = time.monotonic()
        try:
            worked = await send_batch(pool, ctx, size)
        except TRANSIENT_ERRORS as exc:
            log.warning("database unavailable for campaigns: %s", type(exc).__name__)
            worked = 0
        except KeysUnavailable as exc:
            log.warning("key vault unavailable for campaigns: %s", exc)
            worked = 0
        wait = interval - (time.monotonic() - started) if worked else idle_s
        await asyncio.sleep(max(0.0, wait))
