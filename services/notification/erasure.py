"""Erasure (docs/product.md §9): an erased customer's addresses are forgotten and their messages
masked; rows from before sealing are sealed or masked too."""

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventkit import crypto

from contracts.case import CASE_PERSONAL_FIELDS
from contracts.events import PERSONAL_FIELDS
from contracts.fields import PERSONAL_FIELDS as FIELD_PERSONAL_FIELDS
from notification import privacy, store
from notification.context import NotificationContext
from notification.messages import suppress
from notification.store import Row

UNSENT = ("pending", "scheduled", "retrying", "digested")
_PERSONAL = {**PERSONAL_FIELDS, **CASE_PERSONAL_FIELDS, **FIELD_PERSONAL_FIELDS}


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
