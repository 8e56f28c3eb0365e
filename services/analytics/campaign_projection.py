"""Campaigns in the KPI stream: the campaigns notification announces, their audience fixed when
due, and the responses attributed to them (audience.py and attribution.py are the rules).

notification's two campaign events are read by name, their data as a dict checked here: their
contract types live on notification's side (contracts/notification.py).

Resolution is once per campaign: the campaign's row is locked, its resolution stored with the
crm.analytics.campaign_audience_resolved.v1 parts (stream `campaign-<id>`, appended at version 0,
so a second writer fails rather than emit another audience) in one transaction.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, EventStore
from eventkit.telemetry import current_traceparent
from servicekit.runtime import Runtime

from analytics import attribution, audience, store
from analytics import campaign_store as cstore
from analytics.settings import AnalyticsSettings
from contracts import analytics as contract
from contracts.events import CONSENT_CHANGED, CUSTOMER_ERASED, CUSTOMER_MERGED, INTERACTION_RECORDED
from contracts.notification import CAMPAIGN_CREATED, CAMPAIGN_STATUS_CHANGED, CAMPAIGN_SUBJECT_PREFIX
from contracts.topics import ANALYTICS

log = logging.getLogger(__name__)

# notification's campaign events (their data read as dicts, checked here).
CAMPAIGN_SUBJECT = CAMPAIGN_SUBJECT_PREFIX
NOTIFICATION_PREFIX = "crm.notification."
PURPOSES = ("marketing", "service")
FORGET_EVERY = timedelta(minutes=1)


def campaign_subject(campaign_id: str) -> str:
    return f"{CAMPAIGN_SUBJECT}{campaign_id}"


def _rfc3339(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise audience.AudienceError(f"{name}: not an RFC 3339 time")
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise audience.AudienceError(f"{name}: needs a UTC offset")
    return t


class CampaignProjection:
    def __init__(self, events: EventStore, source: str, window: timedelta) -> None:
        self._events = events
        self._source = source
        self._window = window

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        # Interactions are the bulk: folded together at the end of the batch, a few statements for
        # all of them, after the batch's decisions (a touch before its answer in the same batch).
        interactions: list[Envelope] = []
        touched: dict[str, datetime] = {}  # customers with a touch in this batch: its earliest time
        for e in events:
            if e.type == CAMPAIGN_CREATED:
                await self._created(conn, e)
            elif e.type == CAMPAIGN_STATUS_CHANGED:
                cid, status = e.data.get("campaign_id"), e.data.get("status")
                if isinstance(cid, str) and isinstance(status, str):
                    await cstore.set_status(conn, cid, status)
            elif e.type == CUSTOMER_MERGED:
                await cstore.merge(conn, e.data["merged_id"], e.data["survivor_id"])
            elif e.type == CUSTOMER_ERASED:
                await cstore.erase(conn, [str(i) for i in e.data.get("erased_ids", [])])
            elif e.type == INTERACTION_RECORDED:
                interactions.append(e)
            elif e.type == CONSENT_CHANGED:
                await self._consent(conn, e)
            elif e.type.startswith(NOTIFICATION_PREFIX) and isinstance(e.data.get("campaign_id"), str):
                touch = await self._decision(conn, e)
                if touch is not None:
                    touched[touch[0]] = min(touch[1], touched.get(touch[0], touch[1]))
        if interactions:
            await self._interactions(conn, interactions)
        if touched:
            # Answers applied before the touch that reached them (another topic, read earlier).
            since = min(touched.values())
            await self._attribute(conn, await cstore.unattributed_inbound(conn, set(touched), since))
            await self._unsubscribes(conn, await cstore.uncounted_withdrawals(conn, set(touched), since))

    async def _created(self, conn: asyncpg.Connection, e: Envelope) -> None:
        d = e.data
        cid = d.get("campaign_id")
        if not isinstance(cid, str) or not cid:
            log.warning("campaign_created %s without a campaign_id: ignored", e.id)
            return
        status = "scheduled"
        try:
            audience.parse(d.get("audience") or {})
            send_at = _rfc3339(d.get("send_at"), "send_at")
            if d.get("purpose") not in PURPOSES:
                raise audience.AudienceError(f"purpose: unknown value {d.get('purpose')!r}")
        except (audience.AudienceError, ValueError) as exc:
            # notification validated it; a campaign analytics cannot read is kept, never resolved
            log.warning("campaign %s cannot be resolved: %s", cid, exc)
            status, send_at = "invalid", e.time
        raw = d.get("audience")
        await cstore.add_campaign(
            conn, cid, str(d.get("name") or cid), raw if isinstance(raw, dict) else {}, str(d.get("purpose")),
            send_at, status, e.time,
        )  # fmt: skip
        await resolve(conn, self._events, self._source, cid, datetime.now(UTC))

    async def _decision(self, conn: asyncpg.Connection, e: Envelope) -> tuple[str, datetime] | None:
        """Record the decision; the customer and time when it is a touch."""
        status = e.type.removeprefix(NOTIFICATION_PREFIX).split(".")[0]
        if status == "failed" and not e.data.get("final", True):
            status = "retried"
        customer = (await store.aliases(conn, {e.subject})).get(e.subject, e.subject)
        channel = str(e.data.get("channel") or "unknown")
        await cstore.add_decision(conn, e.id, e.data["campaign_id"], customer, channel, status, e.time)
        return (customer, e.time) if status in ("sent", "delivered") else None

    async def _interactions(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        aliases = await store.aliases(conn, {e.subject for e in events})
        rows = [(aliases.get(e.subject, e.subject), e) for e in events]
        await cstore.add_channels(conn, {(c, e.data["channel"]) for c, e in rows})
        inbound: list[cstore.Inbound] = []
        for c, e in rows:
            d = e.data
            if d.get("direction") != "inbound":
                continue
            raw = d.get("metadata")
            metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
            named = metadata.get("campaign_id") if isinstance(metadata.get("campaign_id"), str) else None
            at = datetime.fromisoformat(d["occurred_at"])
            i = attribution.Interaction(
                e.id, c, at, d["channel"], d["kind"], "inbound", named, attribution.amount_of(metadata)
            )
            inbound.append((i, e.time))
        if inbound:
            await cstore.add_inbound(conn, inbound)
            await self._attribute(conn, inbound)

    async def _attribute(self, conn: asyncpg.Connection, inbound: Sequence[cstore.Inbound]) -> None:
        """Attribute these inbound interactions; publish a response for each newly attributed one."""
        if not inbound:
            return
        named_ids = {i.campaign_id for i, _ in inbound if i.campaign_id}
        since = min(i.at for i, _ in inbound) - self._window
        touches = await cstore.touches(conn, {i.customer_id for i, _ in inbound}, since, named_ids)
        known = await cstore.known_campaigns(conn, sorted(named_ids)) if named_ids else set()
        if not touches and not known:
            return
        by_customer: dict[str, list[attribution.Touch]] = {}
        for t in touches:
            by_customer.setdefault(t.customer_id, []).append(t)
        found = [
            (i, t, r)
            for i, t in inbound
            if (r := attribution.attribute(i, by_customer.get(i.customer_id, []), self._window, known)) is not None
        ]
        if not found:
            return
        new = await cstore.add_responses(conn, [(r, i.at) for i, _, r in found])
        appends = [
            Append(f"campaign-responses-{r.customer_id}", None, [self._response_event(t, r)], ANALYTICS)
            for _, t, r in found
            if r.interaction_event_id in new
        ]
        if appends:
            await self._events.append(conn, appends)

    def _response_event(self, interaction_time: datetime, r: attribution.Response) -> Envelope:
        data = contract.CampaignResponse.model_validate(
            {
                "campaign_id": r.campaign_id,
                "channel": r.channel,
                "interaction_event_id": r.interaction_event_id,
                "kind": r.kind,
                "amount": r.amount,
                "attributed_by": r.attributed_by,
            }
        ).model_dump(mode="json")
        # After the interaction in every timeline's order, and the same on a replay (as insights).
        return new_event(
            contract.CAMPAIGN_RESPONSE, r.customer_id, data, self._source, current_traceparent(),
            time=interaction_time + timedelta(microseconds=1),
        )  # fmt: skip

    async def _consent(self, conn: asyncpg.Connection, e: Envelope) -> None:
        d = e.data
        if d.get("purpose") != "marketing" or d.get("granted", True):
            return
        customer = (await store.aliases(conn, {e.subject})).get(e.subject, e.subject)
        await cstore.add_withdrawal(conn, e.id, customer, e.time)
        await self._unsubscribes(conn, [(e.id, customer, e.time)])

    async def _unsubscribes(self, conn: asyncpg.Connection, withdrawals: Sequence[tuple[str, str, datetime]]) -> None:
        """Count each withdrawal against the campaign of the customer's last touch within the window."""
        if not withdrawals:
            return
        since = min(at for _, _, at in withdrawals) - self._window
        touches = await cstore.touches(conn, {c for _, c, _ in withdrawals}, since)
        for event_id, customer, at in withdrawals:
            touch = attribution.unsubscribed(customer, "marketing", False, at, touches, self._window)
            if touch is not None:
                await cstore.add_unsubscribe(conn, event_id, touch, at)


async def resolve(conn: asyncpg.Connection, events: EventStore, source: str, campaign_id: str, now: datetime) -> bool:
    """Fix the campaign's audience when it is due and was not fixed before; True when it was now."""
    row = await cstore.campaign_for_update(conn, campaign_id)
    if row is None or row["resolved_at"] is not None or row["status"] in ("cancelled", "invalid"):
        return False
    if row["send_at"] > now:
        return False  # the timer (run_campaign_timer) resolves it when it is due
    ids = await cstore.audience_ids(conn, audience.parse(row["audience"]))
    await cstore.fix_audience(conn, campaign_id, ids, now)
    chunks = audience.parts(ids, contract.MAX_AUDIENCE_PART)
    out = [
        new_event(
            contract.CAMPAIGN_AUDIENCE_RESOLVED,
            campaign_subject(campaign_id),
            contract.CampaignAudienceResolved(
                campaign_id=campaign_id,
                part=n,
                parts=len(chunks),
                audience_size=len(ids),
                customer_ids=chunk,
                resolved_at=now.isoformat(),
            ).model_dump(mode="json"),
            source,
            current_traceparent(),
            time=now,
        )
        for n, chunk in enumerate(chunks, start=1)
    ]
    await events.append(conn, [Append(f"campaign-{campaign_id}", 0, out, ANALYTICS)])
    return True


async def resolve_due(rt: Runtime[AnalyticsSettings, None], now: datetime) -> int:
    """Resolve every campaign whose send_at has passed; how many were resolved."""
    done = 0
    async with rt.db.acquire() as conn:
        due = await cstore.due_campaigns(conn, now)
    for campaign_id in due:
        async with rt.db.acquire() as conn, conn.transaction():
            done += await resolve(conn, rt.events, rt.settings.source, campaign_id, now)
    return done


async def run_campaign_timer(rt: Runtime[AnalyticsSettings, None]) -> None:
    """The campaigns scheduled for later: resolved when their send_at passes."""
    interval_s = rt.settings.campaign_timer_interval_ms / 1000
    window = timedelta(seconds=rt.settings.campaign_attribution_window_s)
    forgotten_at: datetime | None = None
    while True:
        try:
            now = datetime.now(UTC)
            await resolve_due(rt, now)
            # Kept rows older than the window are only garbage: cleared once a minute, not every tick.
            if forgotten_at is None or now - forgotten_at >= FORGET_EVERY:
                async with rt.db.acquire() as conn:
                    await cstore.forget_inbound(conn, now - window)
                forgotten_at = now
        except (asyncpg.PostgresError, OSError):
            log.exception("resolving due campaigns failed; retrying")
        await asyncio.sleep(interval_s)
