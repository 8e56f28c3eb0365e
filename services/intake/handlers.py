"""Intake's use cases on a customer: load, decide, append, in one unit of work (one transaction).

Recording interactions (recording.py, group_commit.py) and merge suggestions (suggestions.py)
are use cases too; the routes reach them through this module, which re-exports what they call.
"""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from eventkit import crypto, db
from eventkit.envelope import new_event
from eventkit.eventstore import Append, EventStore
from eventkit.telemetry import current_traceparent
from servicekit.keyring import KeyErased

from contracts.events import (
    CONSENT_CHANGED,
    CUSTOMER_ERASED,
    IDENTIFIERS_VERIFIED,
    PERSONAL_FIELDS,
    PREFERENCES_CHANGED,
    PROFILE_CHANGED,
    Preferences,
)
from contracts.topics import INTAKE
from intake import domain, field_store, store
from intake.customer_events import EventClock, stream_of
from intake.vault import IDENTIFIER_FIELD, NAME_FIELD, Vault


class CustomerNotFound(Exception):
    pass


class CustomerMoved(Exception):
    """The id was merged; the caller should go to the survivor."""

    def __init__(self, survivor_id: str) -> None:
        super().__init__(survivor_id)
        self.survivor_id = survivor_id


class AlreadyErased(Exception):
    pass


class IdentifierNotFound(Exception):
    """An identifier to verify is not one of the customer's."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


async def _live_customer(conn: asyncpg.Connection, customer_id: str) -> None:
    survivor = await store.survivor_of(conn, customer_id)
    if survivor is None:
        raise CustomerNotFound(customer_id)
    if survivor != customer_id:
        raise CustomerMoved(survivor)


async def change_consent(
    pool: asyncpg.Pool,
    events: EventStore,
    source: str,
    customer_id: str,
    wanted: dict[tuple[str, str | None], bool],
) -> list[str]:
    """Set consent entries; one event per entry that actually changes. Returns the event ids."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=False)):
        await _live_customer(conn, customer_id)
        current = await store.consent(conn, customer_id)
        changes = {
            (purpose, channel or store.ALL_CHANNELS): granted
            for (purpose, channel), granted in wanted.items()
            if current.get((purpose, channel or store.ALL_CHANNELS)) != granted
        }
        if not changes:
            return []
        clock = EventClock()
        traceparent = current_traceparent()
        await store.set_consent(conn, customer_id, changes, clock.now)
        new = [
            new_event(
                CONSENT_CHANGED,
                customer_id,
                domain.consent_changed(
                    customer_id, purpose, None if channel == store.ALL_CHANNELS else channel, granted
                ),
                source,
                traceparent,
                time=clock.tick(),
            )
            for (purpose, channel), granted in sorted(changes.items())
        ]
        await events.append(conn, [Append(stream_of(customer_id), None, new, INTAKE)])
        return [e.id for e in new]


async def change_preferences(
    pool: asyncpg.Pool, events: EventStore, source: str, customer_id: str, prefs: Preferences
) -> list[str]:
    if prefs.quiet_hours is not None:
        domain.check_time_zone(prefs.quiet_hours.time_zone, "quiet_hours.time_zone")
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=False)):
        await _live_customer(conn, customer_id)
        data = domain.preferences_changed(customer_id, await store.preferences(conn, customer_id), prefs)
        if data is None:
            return []
        clock = EventClock()
        await store.set_preferences(conn, customer_id, prefs, clock.now)
        e = new_event(PREFERENCES_CHANGED, customer_id, data, source, current_traceparent(), time=clock.tick())
        await events.append(conn, [Append(stream_of(customer_id), None, [e], INTAKE)])
        return [e.id]


async def change_profile(
    pool: asyncpg.Pool, events: EventStore, vault: Vault, source: str, customer_id: str, name: str | None
) -> list[str]:
    """Set or clear the display name (already normalised); one crm.customer.profile_changed.v1 if it
    changed. The name is kept sealed under the customer's data key, found by its words' blind index."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=False)):
        await _live_customer(conn, customer_id)
        keys, _ = await vault.keys(conn, [customer_id], create=True)
        key = keys.get(customer_id)
        if key is None:
            raise KeyErased(customer_id)  # 410 customer_erased: no new personal data is kept
        old = crypto.open_token(await store.sealed_name(conn, customer_id), customer_id, NAME_FIELD, keys)
        data = domain.profile_changed(customer_id, old, name)
        if data is None:
            return []
        clock = EventClock()
        await store.set_name(conn, vault, customer_id, name, key, clock.now)
        sealed = crypto.seal(data, PERSONAL_FIELDS[PROFILE_CHANGED], customer_id, key)
        e = new_event(PROFILE_CHANGED, customer_id, sealed, source, current_traceparent(), time=clock.tick())
        await events.append(conn, [Append(stream_of(customer_id), None, [e], INTAKE)])
        return [e.id]


async def get_customer(pool: asyncpg.Pool, vault: Vault, customer_id: str) -> dict[str, Any]:
    async with pool.acquire() as conn:
        await _live_customer(conn, customer_id)
        found = await store.customer(conn, customer_id)
        if found is None:
            raise CustomerNotFound(customer_id)
        sealed = found.pop("sealed_identifiers")
        sealed_name = found.pop("sealed_name")
        keys, _ = await vault.keys(conn, {customer_id, *(owner for _, _, _, owner, _ in sealed)}, create=False)
        found.update(await field_store.view(conn, vault, customer_id, found["merged_ids"]))
    found["name"] = crypto.open_token(sealed_name, customer_id, NAME_FIELD, dict(keys))
    found["identifiers"] = [
        {
            "kind": kind,
            "value": crypto.open_token(token, owner, IDENTIFIER_FIELD, dict(keys)),
            "channel": channel,
            "trust": trust,
        }
        for kind, channel, token, owner, trust in sealed
    ]
    return found


async def verify_identifiers(
    pool: asyncpg.Pool, events: EventStore, vault: Vault, source: str, customer_id: str, idents: Sequence[domain.Ident]
) -> list[str]:
    """An agent confirms identifiers of the customer: the claimed ones become verified, in one
    crm.customer.identifiers_verified.v1. Returns the event ids (none when all were verified)."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=False)):
        await _live_customer(conn, customer_id)
        claimed: list[domain.Ident] = []
        for index, ident in enumerate(idents):
            found = await store.identifier_trust(conn, vault, ident)
            if found is None or found[0] != customer_id:
                raise IdentifierNotFound(index)
            if found[1] == domain.CLAIMED and ident not in claimed:
                claimed.append(ident)
        if not claimed:
            return []
        keys, _ = await vault.keys(conn, [customer_id], create=True)
        key = keys.get(customer_id)
        if key is None:
            raise KeyErased(customer_id)
        await store.verify_identifiers(conn, vault, claimed)
        data = domain.identifiers_verified(customer_id, claimed, "agent")
        sealed = crypto.seal(data, PERSONAL_FIELDS[IDENTIFIERS_VERIFIED], customer_id, key)
        e = new_event(IDENTIFIERS_VERIFIED, customer_id, sealed, source, current_traceparent())
        await events.append(conn, [Append(stream_of(customer_id), None, [e], INTAKE)])
        return [e.id]


async def erase_customer(
    pool: asyncpg.Pool, events: EventStore, vault: Vault, source: str, customer_id: str
) -> dict[str, Any]:
    """Crypto-shredding (docs/product.md §9): destroy the data keys of the customer and of everyone merged
    into it, forget their identifiers, and say so in `crm.customer.erased.v1`."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=True)):
        await _live_customer(conn, customer_id)
        if await store.erased_at(conn, customer_id) is not None:
            raise AlreadyErased(customer_id)
        ids = [customer_id, *await store.merged_ids(conn, customer_id)]
        now = datetime.now(UTC)
        await vault.destroy(conn, ids, now)
        await store.forget_customers(conn, ids, now)
        e = new_event(
            CUSTOMER_ERASED,
            customer_id,
            {"customer_id": customer_id, "erased_ids": ids},
            source,
            current_traceparent(),
            time=now,
        )
        await events.append(conn, [Append(stream_of(customer_id), None, [e], INTAKE)])
    return {"event_id": e.id, "customer_id": customer_id, "erased_ids": ids}


async def expire_idempotency_keys(rt: Any, interval_s: float = 3600.0) -> None:
    """Background loop: keys older than IDEMPOTENCY_TTL_HOURS are forgotten, so the table stays small."""
    while True:
        cutoff = datetime.now(UTC) - timedelta(hours=rt.settings.idempotency_ttl_hours)
        async with rt.db.acquire() as conn:
            await store.forget_keys_before(conn, cutoff)
        await asyncio.sleep(interval_s)
