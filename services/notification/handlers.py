"""notification's use cases on the database: plan messages for an event, decide them, record outcomes.

Every state change of a message and its event (scheduled, sent, delivered, failed, suppressed)
are written in one transaction (the caller's), and the events go out through the outbox.

A customer's addresses and messages are stored sealed under their data key (privacy.py) and
opened only to decide, to deliver and for agents' reads; an erased customer's messages are
masked, and those not sent yet end suppressed (no_address).
"""

import dataclasses
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from eventkit import crypto
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, EventStore
from prometheus_client import Counter
from servicekit.keyring import KeyErased, KeyRing

from contracts import notification as n
from contracts.case import CASE_PERSONAL_FIELDS
from contracts.events import PERSONAL_FIELDS
from contracts.registry import REGISTRY
from contracts.topics import NOTIFICATION
from notification import domain, privacy, store
from notification.delivery import Accepted, DeliveryError, Message
from notification.store import Row

NOTIFICATIONS = Counter(
    "crm_notifications_total", "Notification decisions and outcomes", ["service", "rule", "channel", "outcome"]
)


@dataclass(frozen=True)
class NotificationContext:
    """Configuration, the clock and randomness: everything besides the database."""

    source: str
    events: EventStore
    book: domain.RuleBook
    keyring: KeyRing  # the customers' data keys (the runtime's ring: rt.keyring)
    directory: domain.StaffDirectory = field(default_factory=domain.StaffDirectory)
    customer_cap: domain.Cap = field(default_factory=lambda: domain.Cap(5, timedelta(days=1)))
    staff_cap: domain.Cap = field(default_factory=lambda: domain.Cap(60, timedelta(hours=1)))
    digest: domain.DigestPolicy = field(default_factory=domain.DigestPolicy)
    retry: domain.RetryPolicy = field(default_factory=domain.RetryPolicy)
    profile_wait: timedelta = timedelta(seconds=30)
    send_lease: timedelta = timedelta(seconds=60)
    clock: domain.Clock = domain.system_clock
    rand: Callable[[], float] = random.random
    service: str = "notification"

    def rule(self, name: str) -> domain.Rule:
        return next(r for r in self.book.rules if r.name == name)


# --- events ----------------------------------------------------------------------------------------


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
    envelopes = []
    for i, (type_, extra) in enumerate(drafts):
        data = REGISTRY[type_].model.model_validate({**common, **extra}).model_dump(mode="json")
        envelopes.append(
            new_event(type_, row.customer_id, data, ctx.source, row.traceparent, time=now + timedelta(microseconds=i))
        )
        NOTIFICATIONS.labels(ctx.service, row.rule, row.channel or "none", type_.split(".")[2]).inc()
    await ctx.events.append(conn, [Append(f"notification-{row.notification_id}", None, envelopes, NOTIFICATION)])
    return envelopes


def _source(row: Row) -> dict[str, Any]:
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
    await emit(conn, ctx, row, [(n.NOTIFICATION_SUPPRESSED, {**_source(row), "reason": reason})])


# --- planning: an event matched rules ----------------------------------------------------------------


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
                    await emit(conn, ctx, row, [(n.NOTIFICATION_SUPPRESSED, {**_source(row), "reason": "duplicate"})])
                continue
            if await store.insert(conn, row, now):
                await decide(conn, ctx, row)


# --- the customer's keys and profile ------------------------------------------------------------------


async def writing_key(ctx: NotificationContext, customer_id: str) -> bytes | None:
    """The key a customer's message is sealed with; None for an erased customer. KeysUnavailable
    (the vault not answering) goes up: waiting is right, reading it as an erasure is not."""
    try:
        return await ctx.keyring.key_for_writing(customer_id)
    except KeyErased:
        return None


async def customer_profile(
    conn: asyncpg.Connection, ctx: NotificationContext, ids: Sequence[str], addresses: bool = True
) -> domain.Profile:
    """The profile with its addresses opened (most recent first); addresses under a destroyed key
    are left out. Consent checks alone pass addresses=False and need no key."""
    profile, contacts = await store.profile(conn, ids)
    if not addresses or not contacts:
        return profile
    owners = {c.owner for c in contacts if c.owner is not None}
    keys = await ctx.keyring.keys(owners) if owners else {}
    # Only addresses messages may go to (docs/identity-trust.md); claimed ones are never chosen.
    opened = [(c, privacy.open_contact(c.value, c.owner, keys)) for c in contacts if c.deliverable]
    readable = sorted(((c, v) for c, v in opened if v is not None), key=lambda cv: cv[1])
    readable.sort(key=lambda cv: cv[0].added_at, reverse=True)  # stable: equal instants by address
    return dataclasses.replace(
        profile,
        emails=tuple(v for c, v in readable if c.kind == "email"),
        phones=tuple(v for c, v in readable if c.kind == "phone"),
    )


async def readable_data(ctx: NotificationContext, data: Mapping[str, Any]) -> dict[str, Any]:
    """The source event's data with its sealed fields opened, for a customer's own message."""
    return (await ctx.keyring.unseal([data]))[0]


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
        decision = domain.decide_customer(rule, profile, now, recent, ctx.customer_cap, not_before, ctx.digest)
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
    scheduled = _scheduled(row, text.language, decision.deliver_at, decision.delayed_reason)
    await emit(conn, ctx, row, [(n.NOTIFICATION_SCHEDULED, scheduled)])


def _scheduled(row: Row, language: str, deliver_at: datetime, delayed_reason: str | None) -> dict[str, Any]:
    """The data of a message's own scheduled event (those folded into a digest get theirs in fold_into_digest)."""
    return {
        **_source(row),
        "purpose": row.purpose,
        "critical": row.critical,
        "language": language,
        "deliver_at": deliver_at,
        "delayed_reason": delayed_reason,
    }


# --- digests: non-critical customer messages over the cap -------------------------------------------


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
        own = {**_source(digest), **planned, "purpose": "service", "critical": False}
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
    await emit(conn, ctx, row, [(n.NOTIFICATION_SCHEDULED, {**_source(row), **planned})])


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


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# --- delivery records --------------------------------------------------------------------------------


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
    quiet = profile.preferences.quiet_hours
    if refusal is not None or quiet is None:
        return refusal, None
    return None, domain.quiet_hours_end(ctx.clock(), quiet)


async def hold_for_quiet_hours(conn: asyncpg.Connection, ctx: NotificationContext, row: Row, until: datetime) -> None:
    """Quiet hours set after the message was scheduled now cover it: it waits until they end, as
    it would have had they been set before, and is scheduled again (a second scheduled event, with
    the new deliver_at) so that whoever follows the message sees when it will go."""
    await store.update(conn, row.notification_id, ctx.clock(), deliver_at=until, next_attempt_at=until)
    scheduled = _scheduled(row, row.language or "en", until, "quiet_hours")
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
        if row.audience == "customer":
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


# --- erasure (docs/product.md §9) -------------------------------------------------------------------------------

UNSENT = ("pending", "scheduled", "retrying", "digested")
_PERSONAL = {**PERSONAL_FIELDS, **CASE_PERSONAL_FIELDS}


async def erase(conn: asyncpg.Connection, ctx: NotificationContext, ids: Sequence[str]) -> None:
    """crm.customer.erased.v1: forget the customers' addresses, consent and preferences; their
    messages not sent yet end suppressed (no_address, with the event as for any suppression);
    every message of theirs keeps its shape with the address gone and the text "[erased]", and
    the source event data keeps no ciphertext. Nothing sent is touched beyond that. Idempotent."""
    await store.forget_customers(conn, ids)
    for row in await store.of_customers(conn, ids):
        await _mask(conn, ctx, row)


async def _mask(conn: asyncpg.Connection, ctx: NotificationContext, row: Row) -> None:
    if row.audience == "customer" and row.status in UNSENT:
        await suppress(conn, ctx, row, "no_address", row.channel)
    masked: dict[str, Any] = {}
    # The source event's personal fields: "[erased]", their tokens dropped (and any plaintext a
    # row from before sealing still holds).
    data = crypto.unseal(row.data, {})
    data |= {f: crypto.ERASED for f in _PERSONAL.get(row.source_event_type, ()) if isinstance(data.get(f), str)}
    if data != row.data:
        masked["data"] = data
    if row.audience == "customer":
        masked |= {
            "address": None,
            "subject": None if row.subject is None else crypto.ERASED,
            "body": None if row.body is None else crypto.ERASED,
            "sealed_by": row.sealed_by or row.customer_id,
        }
    if masked:
        await store.update(conn, row.notification_id, ctx.clock(), **masked)


async def seal_legacy(conn: asyncpg.Connection, ctx: NotificationContext, limit: int) -> int:
    """Rows written before sealing (migration 003) with readable personal values: seal them under
    the customer's data key, or for an erased customer drop the address and mask the message.
    Returns how many it handled (0 once there are none left)."""
    contacts = await store.legacy_contacts(conn, limit)
    rows = await store.legacy_messages(conn, limit)
    if not contacts and not rows:
        return 0
    owners = {cid for cid, _ in contacts} | {r.customer_id for r in rows}
    keys = await ctx.keyring.keys(owners, create=True)
    for cid, c in contacts:
        key = keys.get(cid)
        if key is not None:  # else erased: the address is not put back
            await store.add_contacts(conn, cid, cid, [privacy.sealed_contact(key, cid, c.kind, c.value)], c.added_at)
    for row in rows:
        key = keys.get(row.customer_id)
        if key is None:
            await _mask(conn, ctx, row)
            continue
        stored = privacy.seal_columns(key, row.customer_id, address=row.address, subject=row.subject, body=row.body)
        await store.update(conn, row.notification_id, ctx.clock(), sealed_by=row.customer_id, **stored)
    return len(contacts) + len(rows)


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
