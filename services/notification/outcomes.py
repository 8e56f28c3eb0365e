"""Delivery records: what the worker learns about a send (success, failure, a lost outcome) and
the last checks before it (consent and quiet hours as they are now)."""

from datetime import datetime
from typing import Any

import asyncpg
from eventkit import crypto

from contracts import notification as n
from notification import domain, privacy, store
from notification.context import NotificationContext
from notification.customers import customer_profile
from notification.delivery import Accepted, DeliveryError, Message
from notification.messages import emit, scheduled_fields
from notification.store import Row


async def message_of(ctx: NotificationContext, row: Row) -> Message | None:
    """The message as it goes on the wire, its sealed address and text opened; None when there is
    nothing to send (the customer was erased: the key is gone, or the row already masked)."""
    owner = row.sealed_by
    keys = await ctx.keyring.keys([owner]) if owner is not None else {}
    address, subject, body = (
        privacy.open_column(token, owner, name, keys)
        for name, token in (("address", row.address), ("subject", row.subject), ("body", row.body))
    )
    if not row.channel or address is None or subject is None or body is None:
        return None
    if owner is not None and crypto.ERASED in (address, subject, body):
        return None
    return Message(
        notification_id=row.notification_id,
        rule=row.rule,
        customer_id=row.customer_id,
        channel=row.channel,
        address=address,
        language=row.language or "en",
        subject=subject,
        body=body,
        source_event_id=row.source_event_id,
    )


async def before_send(
    conn: asyncpg.Connection, ctx: NotificationContext, row: Row
) -> tuple[str | None, datetime | None]:
    """Consent and quiet hours may have changed since the message was scheduled (quiet hours can
    delay it for hours): the customer's current answers count. Returns the refusal, if any, and
    else the end of the quiet hours the message now falls in, if it does."""
    if row.audience != "customer" or row.channel is None:
        return None, None
    ids = await store.customer_ids(conn, row.customer_id)
    profile = await customer_profile(conn, ctx, ids, addresses=False)
    refusal = domain.channel_refusal(profile, row.channel, row.purpose)
    quiet = profile.preferences.quiet_hours if ctx.book.quiet_hours_apply(row.rule) else None
    if refusal is not None or quiet is None:
        return refusal, None
    return None, domain.quiet_hours_end(ctx.clock(), quiet)


async def hold_for_quiet_hours(conn: asyncpg.Connection, ctx: NotificationContext, row: Row, until: datetime) -> None:
    """Quiet hours set after the message was scheduled now cover it: it waits until they end, as
    it would have had they been set before, and is scheduled again (a second scheduled event, with
    the new deliver_at) so that whoever follows the message sees when it will go."""
    await store.update(conn, row.notification_id, ctx.clock(), deliver_at=until, next_attempt_at=until)
    scheduled = scheduled_fields(row, row.language or "en", until, "quiet_hours")
    if row.rule == domain.DIGEST_RULE:
        scheduled["digest_id"] = row.notification_id  # as on a digest's first scheduled event
    await emit(conn, ctx, row, [(n.NOTIFICATION_SCHEDULED, scheduled)])


async def record_success(conn: asyncpg.Connection, ctx: NotificationContext, row: Row, accepted: Accepted) -> None:
    now = ctx.clock()
    status = "delivered" if accepted.delivered else "sent"
    await store.update(conn, row.notification_id, now, status=status, sent_at=now, lease_until=None, reason=None)
    drafts: list[tuple[str, dict[str, Any]]] = [(n.NOTIFICATION_SENT, {"attempt": row.attempts})]
    if accepted.delivered:
        drafts.append((n.NOTIFICATION_DELIVERED, {"attempt": row.attempts}))
    await emit(conn, ctx, row, drafts)


async def record_failure(conn: asyncpg.Connection, ctx: NotificationContext, row: Row, error: DeliveryError) -> None:
    """Retry with backoff and jitter, or after the last try (or a permanent refusal) dead-letter it.
    A customer's retry that would fall inside their quiet hours (as they are now) waits until they
    end, like the first try."""
    now = ctx.clock()
    final = error.permanent or row.attempts >= ctx.retry.max_attempts
    next_at: datetime | None = None
    if not final:
        quiet = None
        if row.audience == "customer" and ctx.book.quiet_hours_apply(row.rule):
            ids = await store.customer_ids(conn, row.customer_id)
            quiet = (await customer_profile(conn, ctx, ids, addresses=False)).preferences.quiet_hours
        next_at, _ = domain.retry_at(ctx.retry, row.attempts, now, ctx.rand, quiet)
    if final:
        await store.update(conn, row.notification_id, now, status="failed", reason=error.reason, lease_until=None,
                           next_attempt_at=None)  # fmt: skip
        await store.dead_letter(conn, row.notification_id, error.reason, row.attempts, now)
    else:
        await store.update(conn, row.notification_id, now, status="retrying", reason=error.reason, lease_until=None,
                           next_attempt_at=next_at)  # fmt: skip
    failed = {"attempt": row.attempts, "reason": error.reason, "final": final, "next_attempt_at": next_at}
    await emit(conn, ctx, row, [(n.NOTIFICATION_FAILED, failed)])


OUTCOME_UNKNOWN = "outcome_unknown"


async def recover_interrupted(conn: asyncpg.Connection, ctx: NotificationContext, row: Row) -> None:
    """A send whose lease ran out: the process died between sending and recording (or hung).

    Email is at most once: the SMTP server may have taken it and there is no way to ask, so it
    is never sent again; it is dead-lettered as outcome_unknown for a person to check. Webhooks
    and SMS are at least once: they go again with the same Idempotency-Key, which the signature
    covers, so the receiver drops the copy.
    """
    if row.channel == "email":
        await record_failure(conn, ctx, row, DeliveryError(OUTCOME_UNKNOWN, permanent=True))
    else:
        await record_failure(conn, ctx, row, DeliveryError(OUTCOME_UNKNOWN))
