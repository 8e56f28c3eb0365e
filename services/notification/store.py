"""SQL for notification's own tables: the customer profile projection and the messages."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from contracts.events import Preferences
from notification.domain import Profile

# --- the customer profile projection -------------------------------------------------------------


async def customer_ids(conn: asyncpg.Connection, customer_id: str) -> list[str]:
    """The live (surviving) id first, then every id merged into it (the timeline keeps the aliases)."""
    survivor = await conn.fetchval("SELECT survivor_id FROM customer_aliases WHERE merged_id = $1", customer_id)
    root = survivor or customer_id
    rows = await conn.fetch("SELECT merged_id FROM customer_aliases WHERE survivor_id = $1", root)
    return [root, *(r["merged_id"] for r in rows)]


@dataclass(frozen=True)
class Contact:
    """A stored address: `value` is a token under `owner`'s data key (plaintext when owner is None,
    a row from before sealing that the delivery loop has not sealed yet)."""

    kind: str
    value: str
    owner: str | None
    added_at: datetime
    deliverable: bool = True  # verified, or used by the customer themselves (docs/identity-trust.md)


async def add_contacts(
    conn: asyncpg.Connection,
    customer_id: str,
    owner: str,
    sealed: Sequence[tuple[str, str, str]],
    at: datetime,
    deliverable: bool = True,
) -> None:
    """`sealed`: (kind, token, lookup); the lookup keeps one row per address and customer. An
    address seen again stays deliverable if it was; a claim never takes that away or gives it."""
    if sealed:
        await conn.executemany(
            "INSERT INTO notification_contacts (customer_id, kind, value, owner, lookup, added_at, deliverable)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (customer_id, kind, lookup) DO UPDATE"
            " SET deliverable = notification_contacts.deliverable OR EXCLUDED.deliverable",
            [(customer_id, kind, token, owner, lookup, at, deliverable) for kind, token, lookup in sealed],
        )


async def contacts(conn: asyncpg.Connection, ids: Sequence[str]) -> list[Contact]:
    rows = await conn.fetch(
        "SELECT kind, value, owner, added_at, deliverable FROM notification_contacts"
        " WHERE customer_id = ANY($1::text[]) ORDER BY added_at DESC",
        list(ids),
    )
    return [Contact(r["kind"], r["value"], r["owner"], r["added_at"], r["deliverable"]) for r in rows]


async def move_contacts(
    conn: asyncpg.Connection, from_id: str, to_id: str, found: Sequence[tuple[str, str, str]]
) -> None:
    """`found`: (owner, kind, lookup) of addresses of from_id that are to_id's from now on (an
    unmerge); one to_id has already stays there, once."""
    for owner, kind, lookup in found:
        await conn.execute(
            "UPDATE notification_contacts SET customer_id = $2 WHERE customer_id = $1 AND owner = $3 AND kind = $4"
            " AND lookup = $5 AND NOT EXISTS (SELECT 1 FROM notification_contacts c"
            " WHERE c.customer_id = $2 AND c.kind = $4 AND c.lookup = $5)",
            from_id,
            to_id,
            owner,
            kind,
            lookup,
        )


async def clear_consent(conn: asyncpg.Connection, customer_id: str, purpose: str, channel: str) -> None:
    await conn.execute(
        "DELETE FROM notification_consent WHERE customer_id = $1 AND purpose = $2 AND channel = $3",
        customer_id,
        purpose,
        channel,
    )


async def make_deliverable(conn: asyncpg.Connection, ids: Sequence[str], found: Sequence[tuple[str, str, str]]) -> None:
    """`found`: (owner, kind, lookup) of addresses now verified, among the contacts of `ids`."""
    if found:
        await conn.executemany(
            "UPDATE notification_contacts SET deliverable = true"
            " WHERE customer_id = ANY($1::text[]) AND owner = $2 AND kind = $3 AND lookup = $4",
            [(list(ids), owner, kind, lookup) for owner, kind, lookup in found],
        )


async def set_consent(
    conn: asyncpg.Connection, customer_id: str, purpose: str, channel: str, granted: bool, at: datetime
) -> None:
    # Events of one customer arrive in order; the time guard keeps a replayed old answer from winning.
    await conn.execute(
        "INSERT INTO notification_consent (customer_id, purpose, channel, granted, updated_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id, purpose, channel) DO UPDATE"
        " SET granted = EXCLUDED.granted, updated_at = EXCLUDED.updated_at"
        " WHERE notification_consent.updated_at <= EXCLUDED.updated_at",
        customer_id,
        purpose,
        channel,
        granted,
        at,
    )


async def set_preferences(
    conn: asyncpg.Connection, customer_id: str, preferences: dict[str, Any], at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO notification_preferences (customer_id, preferences, updated_at) VALUES ($1, $2::jsonb, $3)"
        " ON CONFLICT (customer_id) DO UPDATE SET preferences = EXCLUDED.preferences,"
        " updated_at = EXCLUDED.updated_at WHERE notification_preferences.updated_at <= EXCLUDED.updated_at",
        customer_id,
        preferences,
        at,
    )


async def profile(conn: asyncpg.Connection, ids: Sequence[str]) -> tuple[Profile, list[Contact]]:
    """Consent and preferences of the survivor (intake re-states the merged customer's restrictions
    on the survivor as consent events), and the stored addresses of the survivor and every merged
    id, still sealed: the Profile's emails and phones are the caller's to fill in once opened."""
    root = ids[0]
    found = await contacts(conn, ids)
    consent = await conn.fetch(
        "SELECT purpose, channel, granted FROM notification_consent WHERE customer_id = $1", root
    )
    prefs = await conn.fetchrow(
        "SELECT preferences FROM notification_preferences WHERE customer_id = ANY($1::text[])"
        " ORDER BY customer_id = $2 DESC, updated_at DESC LIMIT 1",
        list(ids),
        root,
    )
    known = Profile(
        known=bool(found or consent or prefs),
        consent={(r["purpose"], r["channel"]): r["granted"] for r in consent},
        preferences=Preferences.model_validate(prefs["preferences"]) if prefs else Preferences(),
    )
    return known, found


async def forget_customers(conn: asyncpg.Connection, ids: Sequence[str]) -> None:
    """Erasure: the customers' addresses (and any sealed under their keys), consent and preferences."""
    await conn.execute(
        "DELETE FROM notification_contacts WHERE customer_id = ANY($1::text[]) OR owner = ANY($1::text[])", list(ids)
    )
    await conn.execute("DELETE FROM notification_consent WHERE customer_id = ANY($1::text[])", list(ids))
    await conn.execute("DELETE FROM notification_preferences WHERE customer_id = ANY($1::text[])", list(ids))


async def legacy_contacts(conn: asyncpg.Connection, limit: int) -> list[tuple[str, Contact]]:
    """Plaintext addresses from before sealing, taken out of the table (the caller puts them back
    sealed, in the same transaction)."""
    rows = await conn.fetch(
        "DELETE FROM notification_contacts WHERE ctid IN (SELECT ctid FROM notification_contacts"
        " WHERE owner IS NULL ORDER BY added_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING customer_id, kind, value, added_at",
        limit,
    )
    return [(r["customer_id"], Contact(r["kind"], r["value"], None, r["added_at"])) for r in rows]


# --- messages ------------------------------------------------------------------------------------

ACTIVE = ("pending", "scheduled", "retrying", "sending", "sent", "delivered")  # count against caps


@dataclass
class Row:
    """One notifications row, as the decision and delivery code use it."""

    notification_id: str
    idempotency_key: str | None
    rule: str
    source_event_id: str
    source_event_type: str
    customer_id: str
    audience: str
    recipient: str
    purpose: str
    critical: bool
    data: dict[str, Any]
    traceparent: str
    channel: str | None
    address: str | None
    status: str
    created_at: datetime
    attempts: int = 0
    language: str | None = None
    subject: str | None = None
    body: str | None = None
    reason: str | None = None
    digest_id: str | None = None  # the digest a folded message went into (status 'digested')
    sealed_by: str | None = None  # whose data key seals address, subject and body (customer messages)
    campaign_id: str | None = None  # the campaign the message belongs to (docs/campaigns.md)

    @classmethod
    def of(cls, r: asyncpg.Record) -> "Row":
        return cls(
            notification_id=str(r["notification_id"]),
            idempotency_key=r["idempotency_key"],
            rule=r["rule"],
            source_event_id=str(r["source_event_id"]),
            source_event_type=r["source_event_type"],
            customer_id=r["customer_id"],
            audience=r["audience"],
            recipient=r["recipient"],
            purpose=r["purpose"],
            critical=r["critical"],
            data=r["data"],
            traceparent=r["traceparent"],
            channel=r["channel"],
            address=r["address"],
            status=r["status"],
            created_at=r["created_at"],
            attempts=r["attempts"],
            language=r["language"],
            subject=r["subject"],
            body=r["body"],
            reason=r["reason"],
            digest_id=str(r["digest_id"]) if r["digest_id"] is not None else None,
            sealed_by=r["sealed_by"],
            campaign_id=r["campaign_id"],
        )


async def insert(conn: asyncpg.Connection, row: Row, next_attempt_at: datetime | None) -> bool:
    """False when the idempotency key exists: this (rule, event, recipient) has its message."""
    inserted = await conn.fetchval(
        "INSERT INTO notifications (notification_id, idempotency_key, rule, source_event_id, source_event_type,"
        " customer_id, audience, recipient, purpose, critical, data, traceparent, channel, address, status,"
        " reason, next_attempt_at, created_at, updated_at, sealed_by, campaign_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, $16, $17, $18, $18, $19,"
        " $20)"
        " ON CONFLICT DO NOTHING RETURNING true",
        row.notification_id,
        row.idempotency_key,
        row.rule,
        row.source_event_id,
        row.source_event_type,
        row.customer_id,
        row.audience,
        row.recipient,
        row.purpose,
        row.critical,
        row.data,
        row.traceparent,
        row.channel,
        row.address,
        row.status,
        row.reason,
        next_attempt_at,
        row.created_at,
        row.sealed_by,
        row.campaign_id,
    )
    return bool(inserted)


async def lock(conn: asyncpg.Connection, notification_id: str) -> Row | None:
    r = await conn.fetchrow("SELECT * FROM notifications WHERE notification_id = $1 FOR UPDATE", notification_id)
    return Row.of(r) if r else None


async def due(conn: asyncpg.Connection, statuses: Sequence[str], now: datetime, limit: int) -> list[Row]:
    """Rows due now, locked for this transaction; rows another instance holds are skipped."""
    rows = await conn.fetch(
        "SELECT * FROM notifications WHERE status = ANY($1::text[]) AND next_attempt_at <= $2"
        " ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED",
        list(statuses),
        now,
        limit,
    )
    return [Row.of(r) for r in rows]


async def digest_items(conn: asyncpg.Connection, digest_id: str) -> list[Row]:
    """The messages folded into a digest, oldest first, locked with it."""
    rows = await conn.fetch(
        "SELECT * FROM notifications WHERE digest_id = $1 AND status = 'digested'"
        " ORDER BY created_at, notification_id FOR UPDATE",
        digest_id,
    )
    return [Row.of(r) for r in rows]


async def expired_sends(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Row]:
    rows = await conn.fetch(
        "SELECT * FROM notifications WHERE status = 'sending' AND lease_until < $1"
        " ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
    )
    return [Row.of(r) for r in rows]


async def update(conn: asyncpg.Connection, notification_id: str, now: datetime, **fields: Any) -> None:
    names = sorted(fields)
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=3))
    await conn.execute(
        f"UPDATE notifications SET updated_at = $2, {assignments} WHERE notification_id = $1",
        notification_id,
        now,
        *(fields[n] for n in names),
    )


async def of_customers(conn: asyncpg.Connection, ids: Sequence[str]) -> list[Row]:
    """Every message about these customers or sealed under their keys, locked (erasure)."""
    rows = await conn.fetch(
        "SELECT * FROM notifications WHERE customer_id = ANY($1::text[]) OR sealed_by = ANY($1::text[])"
        " ORDER BY created_at, notification_id FOR UPDATE",
        list(ids),
    )
    return [Row.of(r) for r in rows]


async def legacy_messages(conn: asyncpg.Connection, limit: int) -> list[Row]:
    """Customer messages from before sealing whose address or text is still readable, locked."""
    rows = await conn.fetch(
        "SELECT * FROM notifications WHERE audience = 'customer' AND sealed_by IS NULL"
        " AND (address IS NOT NULL OR subject IS NOT NULL OR body IS NOT NULL)"
        " ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [Row.of(r) for r in rows]


async def recent_customer_messages(conn: asyncpg.Connection, recipient: str, since: datetime, exclude: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM notifications WHERE recipient = $1 AND NOT critical AND created_at > $2"
        " AND status = ANY($3::text[]) AND notification_id <> $4",
        recipient,
        since,
        list(ACTIVE),
        exclude,
    )
    return count


async def recent_staff_messages(conn: asyncpg.Connection, address: str, since: datetime, exclude: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM notifications WHERE audience = 'staff' AND address = $1 AND NOT critical"
        " AND created_at > $2"
        " AND status = ANY($3::text[]) AND notification_id <> $4",
        address,
        since,
        list(ACTIVE),
        exclude,
    )
    return count


async def dead_letter(conn: asyncpg.Connection, notification_id: str, reason: str, attempts: int, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO notification_dead_letters (notification_id, reason, attempts, recorded_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        notification_id,
        reason,
        attempts,
        at,
    )


# --- reads ---------------------------------------------------------------------------------------

_LISTED = (
    "notification_id, rule, customer_id, audience, recipient, channel, purpose, critical, language, subject,"
    " status, reason, attempts, source_event_id, source_event_type, deliver_at, next_attempt_at, created_at,"
    " updated_at, sent_at, digest_id, sealed_by"
)


def _out(r: asyncpg.Record) -> dict[str, Any]:
    out = dict(r)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
        elif k in ("notification_id", "source_event_id", "digest_id") and v is not None:
            out[k] = str(v)
    return out


async def listing(
    conn: asyncpg.Connection, ids: Sequence[str] | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_LISTED}, (SELECT reason FROM notification_dead_letters d"
        "  WHERE d.notification_id = n.notification_id) AS dead_letter_reason"
        " FROM notifications n WHERE ($1::text[] IS NULL OR customer_id = ANY($1::text[]))"
        " AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, notification_id LIMIT $3",
        list(ids) if ids is not None else None,
        status,
        limit,
    )
    return [_out(r) for r in rows]


async def one(conn: asyncpg.Connection, notification_id: str) -> dict[str, Any] | None:
    r = await conn.fetchrow(f"SELECT {_LISTED} FROM notifications WHERE notification_id = $1", notification_id)
    return _out(r) if r else None
