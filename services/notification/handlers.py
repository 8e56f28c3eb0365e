"""notification's use cases on the database: plan messages for an event and decide them; and
the agents' listing, readable.

Every state change of a message is written with its event in one transaction, the caller's
(messages.py). A customer's addresses and messages are stored sealed under their data key
(privacy.py) and opened only to decide, to deliver and for agents' reads. Beside this module:
digests.py (messages over the cap), outcomes.py (what the worker records about a send),
erasure.py (an erased customer's messages).
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from eventkit.envelope import Envelope
from servicekit.keyring import KeyRing

from contracts import notification as n
from notification import domain, privacy, store
from notification.context import NotificationContext
from notification.customers import customer_profile, readable_data, writing_key
from notification.digests import fold_into_digest
from notification.messages import emit, scheduled_fields, source_fields, suppress
from notification.store import Row


async def plan(conn: asyncpg.Connection, ctx: NotificationContext, event: Envelope) -> None:
    """Make the rows for every (rule, recipient) of this event and decide each; runs in the
    consumer's transaction, so the rows and their first events commit with the applied event."""
    rules = ctx.book.matching(event.type, event.data)
    if not rules:
        return
    ids = await store.customer_ids(conn, event.data["customer_id"])
    now = ctx.clock()
    for rule in rules:
        if rule.audience == "customer":
            targets = [domain.StaffTarget(f"customer:{ids[0]}", None, None)]
        else:
            targets = domain.staff_targets(rule, event.data, ctx.directory)
        repeated = domain.duplicates(targets)
        for index, target in enumerate(targets):
            key = domain.idempotency_key(rule.name, event.id, target.recipient)
            row = Row(
                notification_id=domain.notification_id_for(key),
                idempotency_key=key,
                rule=rule.name,
                source_event_id=event.id,
                source_event_type=event.type,
                customer_id=ids[0],
                audience=rule.audience,
                recipient=target.recipient,
                purpose=rule.purpose,
                critical=rule.critical,
                data=event.data,
                traceparent=event.traceparent,
                channel=target.channel,
                address=target.address,
                status="pending",
                created_at=now,
            )
            if index in repeated:
                # Owner and team reach the same address: one message, the other recorded as a duplicate.
                row.notification_id = domain.notification_id_for(key + "|duplicate")
                row.idempotency_key = None
                row.status, row.reason = "suppressed", "duplicate"
                if await store.insert(conn, row, None):
                    suppressed = {**source_fields(row), "reason": "duplicate"}
                    await emit(conn, ctx, row, [(n.NOTIFICATION_SUPPRESSED, suppressed)])
                continue
            if await store.insert(conn, row, now):
                await decide(conn, ctx, row)


async def decide(conn: asyncpg.Connection, ctx: NotificationContext, row: Row) -> None:
    """Schedule or suppress a pending row; a customer not yet known here is waited for a while
    (their profile events travel on another topic and may arrive after the case event). A
    customer's message is stored sealed under their data key; an erased customer gets none."""
    now = ctx.clock()
    rule = ctx.rule(row.rule)
    decision: domain.Schedule | domain.Suppress | domain.ToDigest
    key: bytes | None = None
    if row.audience == "customer":
        key = await writing_key(ctx, row.customer_id)
        if key is None:
            await suppress(conn, ctx, row, "no_address", None)
            return
        profile = await customer_profile(conn, ctx, await store.customer_ids(conn, row.customer_id))
        if not profile.known and now < row.created_at + ctx.profile_wait:
            await store.update(conn, row.notification_id, now, next_attempt_at=now + timedelta(seconds=1))
            return
        recent = await store.recent_customer_messages(
            conn, row.recipient, now - ctx.customer_cap.window, row.notification_id
        )
        not_before = _instant(row.data.get(rule.not_before)) if rule.not_before else None
        only = row.data.get(rule.channel_from) if rule.channel_from else None
        decision = domain.decide_customer(
            rule, profile, now, recent, ctx.customer_cap, not_before, ctx.digest, None if only is None else str(only)
        )
        language = profile.preferences.language
        if isinstance(decision, domain.ToDigest):
            await fold_into_digest(conn, ctx, row, decision, language, key)
            return
    else:
        target = domain.StaffTarget(row.recipient, row.channel, row.address)
        recent = await store.recent_staff_messages(
            conn, row.address or "", now - ctx.staff_cap.window, row.notification_id
        )
        decision = domain.decide_staff(target, now, recent, ctx.staff_cap, critical=rule.critical)
        language = ctx.directory.language
    if isinstance(decision, domain.Suppress):
        await suppress(conn, ctx, row, decision.reason, decision.channel)
        return
    # Staff messages are rendered from the data as it travels (personal fields sealed), so no
    # personal value of the customer ever reaches them.
    data = await readable_data(ctx, row.data) if key is not None else row.data
    text = domain.render(ctx.book, rule.name, language, data)
    if key is not None:
        stored = privacy.seal_columns(key, row.customer_id, address=decision.address, subject=text.subject,
                                      body=text.body)  # fmt: skip
        row.sealed_by = row.customer_id
    else:
        stored = {"address": decision.address, "subject": text.subject, "body": text.body}
    row.channel, row.address, row.status = decision.channel, stored["address"], "scheduled"
    await store.update(
        conn,
        row.notification_id,
        now,
        status="scheduled",
        channel=decision.channel,
        language=text.language,
        deliver_at=decision.deliver_at,
        next_attempt_at=decision.deliver_at,
        sealed_by=row.sealed_by,
        **stored,
    )
    scheduled = scheduled_fields(row, text.language, decision.deliver_at, decision.delayed_reason)
    await emit(conn, ctx, row, [(n.NOTIFICATION_SCHEDULED, scheduled)])


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


async def readable_listing(keyring: KeyRing, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Listed messages with their subject opened ("[erased]" where the key is gone)."""
    owners = privacy.owners(items)
    keys = await keyring.keys(owners) if owners else {}
    out = []
    for item in items:
        item = dict(item)
        owner = item.pop("sealed_by", None)
        item["subject"] = privacy.open_column(item.get("subject"), owner, "subject", keys)
        out.append(item)
    return out
