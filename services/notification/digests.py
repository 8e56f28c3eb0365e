"""Digests: a customer's non-critical messages over the cap go out together, once per window."""

import uuid

import asyncpg

from contracts import notification as n
from notification import domain, privacy, store
from notification.context import NotificationContext
from notification.customers import customer_profile, readable_data, writing_key
from notification.messages import emit, source_fields, suppress
from notification.store import Row


async def fold_into_digest(
    conn: asyncpg.Connection,
    ctx: NotificationContext,
    row: Row,
    decision: domain.ToDigest,
    language: str | None,
    key: bytes,
) -> None:
    """Put the message into the one digest of its (recipient, window), making the digest on first
    use. The digest's idempotency key is unique, so two instances (or a replay after a restart)
    meet at the same row; its text is rendered when it is claimed for sending. Both are sealed
    under the customer's data key (`key`)."""
    now = ctx.clock()
    key_text = domain.digest_key(row.recipient, decision.window_start)
    [address] = privacy.seal_columns(key, row.customer_id, address=decision.address).values()
    digest = Row(
        notification_id=domain.notification_id_for(key_text),
        idempotency_key=key_text,
        rule=domain.DIGEST_RULE,
        source_event_id=row.source_event_id,  # the first message's event: the digest's trigger
        source_event_type=row.source_event_type,
        customer_id=row.customer_id,
        audience="customer",
        recipient=row.recipient,
        purpose="service",
        critical=False,
        data={"window_start": decision.window_start.isoformat()},
        traceparent=row.traceparent,
        channel=decision.channel,
        address=address,
        status="scheduled",
        created_at=now,
        sealed_by=row.customer_id,
    )
    created = await store.insert(conn, digest, decision.deliver_at)
    current = await store.lock(conn, digest.notification_id)
    assert current is not None
    if current.status != "scheduled":
        # Cannot happen while clocks agree (a window's digest is due only after it ends), but a
        # digest already on its way takes no more messages: the cap applies as without digests.
        await suppress(conn, ctx, row, "cap", decision.channel)
        return
    text = domain.render(ctx.book, row.rule, language, await readable_data(ctx, row.data))
    planned = {
        "purpose": row.purpose,
        "critical": row.critical,
        "language": text.language,
        "deliver_at": decision.deliver_at,
        "delayed_reason": decision.delayed_reason,
        "digest_id": digest.notification_id,
    }
    if created:
        await store.update(conn, digest.notification_id, now, language=text.language, deliver_at=decision.deliver_at)
        own = {**source_fields(digest), **planned, "purpose": "service", "critical": False}
        await emit(conn, ctx, digest, [(n.NOTIFICATION_SCHEDULED, own)])
    else:
        # The latest choice of channel and address is the one the digest goes to.
        await store.update(conn, digest.notification_id, now, channel=decision.channel, address=address,
                           sealed_by=row.customer_id)  # fmt: skip
    stored = privacy.seal_columns(key, row.customer_id, address=decision.address, subject=text.subject,
                                  body=text.body)  # fmt: skip
    row.channel, row.address, row.status, row.digest_id, row.sealed_by = (
        decision.channel,
        stored["address"],
        "digested",
        digest.notification_id,
        row.customer_id,
    )
    await store.update(
        conn, row.notification_id, now, status="digested", channel=decision.channel, language=text.language,
        deliver_at=decision.deliver_at, next_attempt_at=None, digest_id=uuid.UUID(digest.notification_id),
        sealed_by=row.customer_id, **stored,
    )  # fmt: skip
    await emit(conn, ctx, row, [(n.NOTIFICATION_SCHEDULED, {**source_fields(row), **planned})])


async def prepare_digest(conn: asyncpg.Connection, ctx: NotificationContext, digest: Row) -> bool:
    """Right before a digest goes out: drop the messages consent no longer allows (each gets its
    suppressed event) and render the rest in the customer's current language. False when nothing
    is left, and the digest itself is then suppressed."""
    now = ctx.clock()
    profile = await customer_profile(conn, ctx, await store.customer_ids(conn, digest.customer_id), addresses=False)
    key = await writing_key(ctx, digest.customer_id)
    kept: list[Row] = []
    first_refusal: str | None = None
    for item in await store.digest_items(conn, digest.notification_id):
        if key is None:
            refusal: str | None = "no_address"  # erased meanwhile
        else:
            refusal = domain.channel_refusal(profile, digest.channel or "", item.purpose) if digest.channel else None
        if refusal is None:
            kept.append(item)
            continue
        first_refusal = first_refusal or refusal
        await suppress(conn, ctx, item, refusal, digest.channel)
    if not kept or key is None:
        await suppress(conn, ctx, digest, first_refusal or "no_consent", digest.channel)
        return False
    datas = await ctx.keyring.unseal([i.data for i in kept])
    text = domain.render_digest(ctx.book, profile.preferences.language,
                                [(i.rule, d) for i, d in zip(kept, datas, strict=True)])  # fmt: skip
    stored = privacy.seal_columns(key, digest.customer_id, subject=text.subject, body=text.body)
    digest.language, digest.subject, digest.body = text.language, stored["subject"], stored["body"]
    digest.sealed_by = digest.customer_id
    await store.update(conn, digest.notification_id, now, language=text.language, sealed_by=digest.sealed_by,
                       **stored)  # fmt: skip
    return True
