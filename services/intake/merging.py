"""Manual merge and unmerge of customers (docs/merge-and-unmerge.md).

Both run under the exclusive identity lock, like every merge, and append their events in the
same transaction as the change to intake's tables. A merge is the one crm.customer.merged.v1
every merge is; an unmerge (crm.customer.unmerged.v1) gives the merged id back its own
identity: the customers merged into it come back with it, the identifiers the agent names move
back to it, and the survivor's consent is worked out again from its own answers.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from eventkit import crypto, db
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, EventStore
from eventkit.telemetry import current_traceparent
from servicekit.keyring import KeyErased

from contracts.events import (
    CONSENT_CHANGED,
    CUSTOMER_MERGED,
    CUSTOMER_UNMERGED,
    PERSONAL_FIELDS,
    ConsentKey,
    CustomerUnmerged,
)
from contracts.topics import INTAKE
from intake import domain, store
from intake.customer_events import EventClock, merge_consent, stream_of
from intake.handlers import CustomerMoved, CustomerNotFound
from intake.vault import IDENTIFIER_FIELD, Vault

MANUAL = "manual"


class MergeRefused(Exception):
    """409: the merge or unmerge would not make sense (same customer, already merged, not merged here)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


class MergedNotFound(Exception):
    """404 about the body's merged_id (the path's customer is CustomerNotFound)."""


class NotTheSurvivors(Exception):
    """422: an identifier to give back is not one of the survivor's (index in the list)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


@dataclass(frozen=True)
class Outcome:
    survivor_id: str
    merged_id: str
    event_ids: list[str]
    moved_ids: list[str]  # unmerge: the ids merged into merged_id that came back with it


async def _live(conn: asyncpg.Connection, customer_id: str) -> None:
    survivor = await store.survivor_of(conn, customer_id)
    if survivor is None:
        raise CustomerNotFound(customer_id)
    if survivor != customer_id:
        raise CustomerMoved(survivor)


def _sealer(keys: dict[str, bytes | None], source: str, clock: EventClock) -> Any:
    tp = current_traceparent()

    def event(type_: str, subject: str, data: dict[str, Any], owner: str | None = None) -> Envelope:
        owner = owner or subject
        key = keys.get(owner)
        if key is None:
            raise KeyErased(owner)
        sealed = crypto.seal(data, PERSONAL_FIELDS.get(type_, ()), owner, key)
        return new_event(type_, subject, sealed, source, tp, time=clock.tick())

    return event


async def _record_identifier(
    conn: asyncpg.Connection, vault: Vault, customer_ids: Sequence[str]
) -> tuple[domain.Ident, str] | None:
    """One identifier of the first of these customers that has one (the merged customer's first),
    and whose data key sealed it: what a manual merge's linked_by names, for the record, sealed
    under that same key (erasing its owner after an unmerge makes it unreadable there too)."""
    for customer_id in customer_ids:
        found = await store.customer(conn, customer_id)
        if found is None:
            continue
        for kind, channel, token, owner, _ in found["sealed_identifiers"]:
            keys, _ = await vault.keys(conn, [owner], create=False)
            value = crypto.open_token(token, owner, IDENTIFIER_FIELD, dict(keys))
            if value and value != crypto.ERASED:
                return domain.Ident(kind, value, channel), owner
    return None


async def merge_customers(
    pool: asyncpg.Pool, events: EventStore, vault: Vault, source: str, survivor_id: str, merged_id: str, by: str
) -> Outcome:
    """An agent merges merged_id into survivor_id, as an accepted suggestion would."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=True)):
        await _live(conn, survivor_id)
        merged_survivor = await store.survivor_of(conn, merged_id)
        if merged_survivor is None:
            raise MergedNotFound(merged_id)
        if merged_id == survivor_id:
            raise MergeRefused("same_customer", "a customer cannot be merged into itself")
        if merged_survivor == survivor_id:
            raise MergeRefused("already_merged", f"{merged_id} is merged into this customer already")
        if merged_survivor != merged_id:
            raise MergeRefused("already_merged", f"{merged_id} is merged into another customer; merge that one")
        keys, _ = await vault.keys(conn, [survivor_id, merged_id], create=False)
        for c in (survivor_id, merged_id):
            if keys.get(c) is None:
                raise KeyErased(c)
        found = await _record_identifier(conn, vault, [merged_id, survivor_id])
        if found is None:
            raise MergeRefused("no_identifier", "neither customer has an identifier for the merge to name")
        linked, owner = found
        keys.update((await vault.keys(conn, [owner], create=False))[0])
        clock = EventClock()
        event = _sealer(dict(keys), source, clock)
        merge = domain.Merge(survivor_id, merged_id, linked)
        data = domain.customer_merged(merge, MANUAL) | {"merged_by": by}
        merged_event = event(CUSTOMER_MERGED, survivor_id, data, owner=owner)
        appends = [Append(stream_of(survivor_id), None, [merged_event], INTAKE)]
        await store.apply_merge(conn, merge, clock.now)
        appends.extend(await merge_consent(conn, merge, event))
        await events.append(conn, appends)
        return Outcome(survivor_id, merged_id, [e.id for a in appends for e in a.events], [])


async def unmerge_customer(
    pool: asyncpg.Pool,
    events: EventStore,
    vault: Vault,
    source: str,
    survivor_id: str,
    merged_id: str,
    idents: Sequence[domain.Ident],
    by: str,
    reason: str | None = None,
) -> Outcome:
    """Undo the merge of merged_id into survivor_id (directly or through another merged id)."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=True)):
        await _live(conn, survivor_id)
        merged_survivor = await store.survivor_of(conn, merged_id)
        if merged_survivor is None:
            raise MergedNotFound(merged_id)
        if merged_id == survivor_id:
            raise MergeRefused("same_customer", "a customer cannot be unmerged from itself")
        if merged_survivor != survivor_id:
            raise MergeRefused("not_merged", f"{merged_id} is not merged into this customer")
        for index, ident in enumerate(idents):
            found = await store.identifier_trust(conn, vault, ident)
            if found is None or found[0] != survivor_id:
                raise NotTheSurvivors(index)
        keys, _ = await vault.keys(conn, [survivor_id, merged_id], create=False)
        clock = EventClock()
        event = _sealer(dict(keys), source, clock)
        moved = await store_unmerge(conn, vault, merged_id, idents)
        consent_events, cleared = await _survivor_consent(conn, events, survivor_id, [merged_id, *moved], event)
        data = CustomerUnmerged(
            survivor_id=survivor_id,
            merged_id=merged_id,
            identifiers=[i.to_contract() for i in idents],
            unmerged_by=by,
            reason=reason,
            consent_cleared=[
                ConsentKey.model_validate({"purpose": p, "channel": None if ch == store.ALL_CHANNELS else ch})
                for p, ch in cleared
            ],
        ).model_dump(mode="json")
        # The identifiers given back are the merged customer's: sealed under its key.
        unmerged = event(CUSTOMER_UNMERGED, survivor_id, data, owner=merged_id)
        appends = [Append(stream_of(survivor_id), None, [unmerged, *consent_events], INTAKE)]
        await events.append(conn, appends)
        return Outcome(survivor_id, merged_id, [e.id for a in appends for e in a.events], moved)


async def store_unmerge(
    conn: asyncpg.Connection, vault: Vault, merged_id: str, idents: Sequence[domain.Ident]
) -> list[str]:
    """merged_id lives again; the customers merged into it (by direct parent, at any depth) are
    its again; the identifiers move to it. Returns the ids that came back with it."""
    rows = await conn.fetch(
        "WITH RECURSIVE sub(id) AS (SELECT customer_id FROM customers WHERE merged_parent = $1"
        " UNION SELECT c.customer_id FROM customers c JOIN sub ON c.merged_parent = sub.id) SELECT id FROM sub",
        merged_id,
    )
    below = sorted(r["id"] for r in rows)
    await conn.execute(
        "UPDATE customers SET merged_into = NULL, merged_parent = NULL, merged_at = NULL WHERE customer_id = $1",
        merged_id,
    )
    await conn.execute("UPDATE customers SET merged_into = $1 WHERE customer_id = ANY($2::text[])", merged_id, below)
    if idents:
        await conn.execute(
            "UPDATE customer_identifiers SET customer_id = $1 WHERE value = ANY($2::text[])",
            merged_id,
            [vault.index(i) for i in idents],
        )
    return below


async def _survivor_consent(
    conn: asyncpg.Connection, events: EventStore, survivor_id: str, gone: Sequence[str], event: Any
) -> tuple[list[Envelope], list[tuple[str, str]]]:
    """The survivor's consent, worked out again: its consent events in order, except the answers
    merges carried over from the customers now unmerged (merged_from). Each entry that changes is
    a consent event; an entry only such a merge had given is no answer again (returned, cleared).
    The merged customers keep their own consent rows, untouched since they were merged."""
    own: dict[tuple[str, str], bool] = {}
    for stored in await events.load(conn, stream_of(survivor_id)):
        e = stored.event
        if e.type == CONSENT_CHANGED and e.data.get("merged_from") not in gone:
            own[(e.data["purpose"], e.data.get("channel") or store.ALL_CHANNELS)] = bool(e.data["granted"])
    current = await store.consent(conn, survivor_id)
    changes = {k: v for k, v in own.items() if current.get(k) != v}
    cleared = sorted(k for k in current if k not in own)
    if changes:
        await store.set_consent(conn, survivor_id, changes, datetime.now(UTC))
    if cleared:
        await conn.execute(
            "DELETE FROM customer_consent WHERE customer_id = $1 AND (purpose, channel) IN"
            " (SELECT * FROM unnest($2::text[], $3::text[]))",
            survivor_id,
            [p for p, _ in cleared],
            [c for _, c in cleared],
        )
    new = [
        event(
            CONSENT_CHANGED,
            survivor_id,
            domain.consent_changed(survivor_id, p, None if ch == store.ALL_CHANNELS else ch, granted),
        )
        for (p, ch), granted in sorted(changes.items())
    ]
    return new, cleared
