"""Merge suggestions (docs/identity-trust.md): a claim that names two customers stores one
suggestion per pair, ever, with an event on both timelines; an agent lists and decides them, and
an accepted one merges the two under the exclusive identity lock, like any merge."""

import uuid
from typing import Any

import asyncpg
from eventkit import crypto, db
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, EventStore
from eventkit.telemetry import current_traceparent
from servicekit.keyring import KeyErased

from contracts.events import CUSTOMER_MERGED, MERGE_SUGGESTED, MERGE_SUGGESTION_DECIDED, PERSONAL_FIELDS
from contracts.topics import INTAKE
from intake import domain, store
from intake.customer_events import EventClock, merge_consent, stream_of
from intake.vault import Vault

SUGGESTION_FIELD = "merge_suggestions.linked_by"


class SuggestionNotFound(Exception):
    pass


class SuggestionDecided(Exception):
    """The suggestion was accepted or rejected already."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


async def store_suggestions(
    conn: asyncpg.Connection,
    snapshot: domain.IdentitySnapshot,
    data_keys: dict[str, bytes],
    suggested: dict[tuple[str, str], tuple[domain.Suggestion, str]],
    source: str,
    clock: EventClock,
) -> list[Append]:
    """Store the suggestions for pairs never suggested before; one event on each customer's timeline.
    The tying identifier is sealed under its owner's data key, in the row and in both events."""
    known = await store.known_pairs(conn, suggested)
    rows: list[tuple[str, domain.Suggestion, str, str]] = []
    appends: list[Append] = []
    for pair, (suggestion, tp) in sorted(suggested.items()):
        if pair in known:
            continue
        owner = snapshot.find(snapshot.owner[suggestion.linked_by.key])
        key = data_keys.get(owner)
        if key is None:
            raise KeyErased(owner)
        sid = str(uuid.uuid4())
        rows.append(
            (
                sid,
                suggestion,
                crypto.encrypt_text(key, f"{owner}|{SUGGESTION_FIELD}", suggestion.linked_by.value),
                owner,
            )
        )
        for customer in (suggestion.survivor_id, suggestion.merged_id):
            data = crypto.seal(
                domain.merge_suggested(sid, customer, suggestion),
                PERSONAL_FIELDS[MERGE_SUGGESTED],
                owner,
                key,
            )
            e = new_event(MERGE_SUGGESTED, customer, data, source, tp, time=clock.tick())
            appends.append(Append(stream_of(customer), None, [e], INTAKE))
    await store.insert_suggestions(conn, rows, clock.now)
    return appends


def _suggestion_out(row: Any, keys: dict[str, bytes | None]) -> dict[str, Any]:
    owner = row["linked_sealed_by"]
    return {
        "suggestion_id": row["suggestion_id"],
        "survivor_id": row["survivor_id"],
        "merged_id": row["merged_id"],
        "linked_by": {
            "kind": row["linked_kind"],
            "value": crypto.open_token(row["linked_sealed"], owner, SUGGESTION_FIELD, keys),
            "channel": row["linked_channel"] or None,
        },
        "status": row["status"],
        "created_at": row["created_at"].isoformat(),
        "decided_at": row["decided_at"].isoformat() if row["decided_at"] else None,
        "decided_by": row["decided_by"],
    }


async def list_suggestions(
    pool: asyncpg.Pool, vault: Vault, status: str | None, customer_id: str | None, limit: int
) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        ids: list[str] = []
        if customer_id is not None:  # a survivor's list includes what was suggested for its merged ids
            ids = [customer_id, *await store.merged_ids(conn, customer_id)]
        rows = await store.suggestions(conn, status, ids, limit)
        keys, _ = await vault.keys(conn, {r["linked_sealed_by"] for r in rows}, create=False)
    return [_suggestion_out(r, dict(keys)) for r in rows]


async def decide_suggestion(
    pool: asyncpg.Pool, events: EventStore, vault: Vault, source: str, suggestion_id: str, accept: bool, by: str
) -> dict[str, Any]:
    """Accept (the two customers, as they are now, merge into the older) or reject a pending
    suggestion. Under the exclusive identity lock, like every merge."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=True)):
        row = await store.suggestion(conn, suggestion_id)
        if row is None:
            raise SuggestionNotFound(suggestion_id)
        if row["status"] != "pending":
            raise SuggestionDecided(row["status"])
        # Either may have been merged into someone else since: decide about who they are now.
        live = [await store.survivor_of(conn, row["customer_a"]), await store.survivor_of(conn, row["customer_b"])]
        ids = [c for c in live if c is not None]
        created = await store.created_at(conn, ids)
        ordered = sorted(set(ids), key=lambda c: (created[c], c))
        survivor, merged = ordered[0], ordered[-1]  # the same when they were merged meanwhile
        owner = row["linked_sealed_by"]
        keys, _ = await vault.keys(conn, {survivor, merged, owner}, create=False)
        if keys.get(survivor) is None or keys.get(merged) is None:
            raise KeyErased(survivor if keys.get(survivor) is None else merged)
        clock = EventClock()
        tp = current_traceparent()
        status: domain.SuggestionDecision = "accepted" if accept else "rejected"

        def event(type_: str, customer_id: str, data: dict[str, Any]) -> Envelope:
            key = keys[customer_id]
            assert key is not None
            sealed = crypto.seal(data, PERSONAL_FIELDS.get(type_, ()), customer_id, key)
            return new_event(type_, customer_id, sealed, source, tp, time=clock.tick())

        # Accepted: one timeline from now on, the survivor's; rejected: both keep theirs.
        on = [survivor] if accept or survivor == merged else [survivor, merged]
        appends = [
            Append(
                stream_of(c),
                None,
                [event(MERGE_SUGGESTION_DECIDED, c,
                       domain.merge_suggestion_decided(suggestion_id, c, survivor, merged, status, by))],
                INTAKE,
            )
            for c in on
        ]  # fmt: skip
        merge_event: Envelope | None = None
        if accept and survivor != merged:
            value = crypto.open_token(row["linked_sealed"], owner, SUGGESTION_FIELD, dict(keys)) or crypto.ERASED
            linked = domain.Ident(row["linked_kind"], value, row["linked_channel"] or None)
            merge = domain.Merge(survivor, merged, linked)
            reason = f"an agent accepted merge suggestion {suggestion_id}"
            merge_event = event(CUSTOMER_MERGED, survivor, domain.customer_merged(merge, reason))
            appends.append(Append(stream_of(survivor), None, [merge_event], INTAKE))
            await store.apply_merge(conn, merge, clock.now)
            appends.extend(await merge_consent(conn, merge, event))
        await store.decide_suggestion(conn, suggestion_id, status, by, clock.now)
        await events.append(conn, appends)
        return {
            "suggestion_id": suggestion_id,
            "status": status,
            "survivor_id": survivor,
            "merged_id": merged,
            "event_ids": [e.id for a in appends for e in a.events],
        }
