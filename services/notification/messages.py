"""A message's events: every change of a message's row is written with its event, in the
caller's transaction, and the events go out through the outbox."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append
from prometheus_client import Counter

from contracts import notification as n
from contracts.registry import REGISTRY
from contracts.topics import NOTIFICATION
from notification import store
from notification.context import NotificationContext
from notification.store import Row

NOTIFICATIONS = Counter(
    "crm_notifications_total", "Notification decisions and outcomes", ["service", "rule", "channel", "outcome"]
)


async def emit(
    conn: asyncpg.Connection, ctx: NotificationContext, row: Row, drafts: Sequence[tuple[str, dict[str, Any]]]
) -> list[Envelope]:
    """Append the message's events to its own stream (one microsecond apart, to keep their order)."""
    now = ctx.clock()
    common = {
        "notification_id": row.notification_id,
        "customer_id": row.customer_id,
        "rule": row.rule,
        "channel": row.channel,
        "audience": row.audience,
    }
    if row.campaign_id is not None:
        common["campaign_id"] = row.campaign_id
    envelopes = []
    for i, (type_, extra) in enumerate(drafts):
        data = REGISTRY[type_].model.model_validate({**common, **extra}).model_dump(mode="json")
        envelopes.append(
            new_event(type_, row.customer_id, data, ctx.source, row.traceparent, time=now + timedelta(microseconds=i))
        )
        NOTIFICATIONS.labels(ctx.service, row.rule, row.channel or "none", type_.split(".")[2]).inc()
    await ctx.events.append(conn, [Append(f"notification-{row.notification_id}", None, envelopes, NOTIFICATION)])
    return envelopes


def source_fields(row: Row) -> dict[str, Any]:
    return {
        "source_event_id": row.source_event_id,
        "source_event_type": row.source_event_type,
        "recipient": row.recipient,
    }


async def suppress(
    conn: asyncpg.Connection, ctx: NotificationContext, row: Row, reason: str, channel: str | None
) -> None:
    row.status, row.reason, row.channel = "suppressed", reason, channel
    await store.update(conn, row.notification_id, ctx.clock(), status="suppressed", reason=reason, channel=channel,
                       next_attempt_at=None)  # fmt: skip
    await emit(conn, ctx, row, [(n.NOTIFICATION_SUPPRESSED, {**source_fields(row), "reason": reason})])


def scheduled_fields(row: Row, language: str, deliver_at: datetime, delayed_reason: str | None) -> dict[str, Any]:
    """The data of a message's own scheduled event (those folded into a digest get theirs in fold_into_digest)."""
    return {
        **source_fields(row),
        "purpose": row.purpose,
        "critical": row.critical,
        "language": language,
        "deliver_at": deliver_at,
        "delayed_reason": delayed_reason,
    }
