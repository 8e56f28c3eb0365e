"""Customer fields and tags, the use cases: define a field, set a customer's fields, change its
tags, read its view. Each change is an event appended with the projection's rows in one
transaction (field_store.apply), as intake's other use cases do."""

from collections.abc import Mapping
from typing import Any

import asyncpg
from eventkit import crypto, db
from eventkit.envelope import new_event
from eventkit.eventstore import Append, EventStore
from eventkit.telemetry import current_traceparent
from servicekit.keyring import KeyErased

from contracts.fields import (
    CUSTOMER_FIELD_DEFINED,
    CUSTOMER_FIELDS_SET,
    CUSTOMER_TAGS_CHANGED,
    PERSONAL_FIELDS,
    CustomerFieldsSet,
    CustomerTagsChanged,
    FieldDefined,
    FieldDefinition,
    field_subject,
    personal_text,
)
from contracts.topics import INTAKE
from intake import field_store, fields, store
from intake.customer_events import EventClock, stream_of
from intake.handlers import CustomerMoved, CustomerNotFound
from intake.vault import Vault


async def define_field(
    pool: asyncpg.Pool, events: EventStore, source: str, definition: FieldDefinition, key_id: str
) -> tuple[dict[str, Any], bool]:
    """Define (version 1) or redefine (one more) a customer field; (the definition as listed with
    its version and event_ids, whether it is new). The same definition again changes nothing."""
    fields.check_definition(definition)
    lock = f"SELECT pg_advisory_xact_lock({field_store.DEFINITIONS_LOCK})"
    async with pool.acquire() as conn, db.transaction(conn, lock):
        current = await field_store.definitions(conn)
        version = fields.next_version(current, definition)
        event_ids: list[str] = []
        if version is not None:
            data = FieldDefined(record="customer", definition=definition, version=version, defined_by=key_id)
            subject = field_subject("customer", definition.name)
            e = new_event(CUSTOMER_FIELD_DEFINED, subject, data.model_dump(mode="json"), source, current_traceparent())
            await events.append(conn, [Append(subject, version - 1, [e], INTAKE)])
            await field_store.apply(conn, [e])
            event_ids.append(e.id)
        listed = next(d for d in await field_store.definition_rows(conn) if d["name"] == definition.name)
    return {**listed, "event_ids": event_ids}, version == 1


async def _live_customer(conn: asyncpg.Connection, customer_id: str) -> list[str]:
    """Lock the customer's row (changes to one customer's fields and tags go one at a time, so
    each event's whole set is right) and return the ids merged into it."""
    survivor = await store.survivor_of(conn, customer_id)
    if survivor is None:
        raise CustomerNotFound(customer_id)
    if survivor != customer_id:
        raise CustomerMoved(survivor)
    await conn.execute("SELECT 1 FROM customers WHERE customer_id = $1 FOR UPDATE", customer_id)
    return await store.merged_ids(conn, customer_id)


async def set_fields(
    pool: asyncpg.Pool,
    events: EventStore,
    vault: Vault,
    source: str,
    customer_id: str,
    wanted: Mapping[str, Any],
    key_id: str,
) -> list[str]:
    """Set (or, with None, clear) the named fields; one crm.customer.fields_set.v1 when anything
    changes, none otherwise. Personal values are sealed under the customer's data key."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=False)):
        merged = await _live_customer(conn, customer_id)
        definitions = {name: d for name, (_, d) in (await field_store.definitions(conn)).items()}
        current = (await field_store.view(conn, vault, customer_id, merged))["fields"]
        change = fields.field_changes(definitions, current, wanted)
        if not change.changed:
            return []
        data = CustomerFieldsSet(
            customer_id=customer_id,
            values=change.values,
            personal={name: personal_text(v) for name, v in change.personal.items()},
            changed=change.changed,
            set_by=key_id,
        ).model_dump(mode="json")
        if any(v is not None for v in change.personal.values()):
            keys, _ = await vault.keys(conn, [customer_id], create=True)
            key = keys.get(customer_id)
            if key is None:
                raise KeyErased(customer_id)  # 410 customer_erased: no new personal data is kept
            data = crypto.seal(data, PERSONAL_FIELDS[CUSTOMER_FIELDS_SET], customer_id, key)
        e = new_event(CUSTOMER_FIELDS_SET, customer_id, data, source, current_traceparent(), time=EventClock().tick())
        await events.append(conn, [Append(stream_of(customer_id), None, [e], INTAKE)])
        await field_store.apply(conn, [e])
        return [e.id]


async def change_tags(
    pool: asyncpg.Pool,
    events: EventStore,
    source: str,
    customer_id: str,
    add: list[str],
    remove: list[str],
    key_id: str,
) -> list[str]:
    """Add and remove tags (normalised); one crm.customer.tags_changed.v1 when the set changes."""
    async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive=False)):
        merged = await _live_customer(conn, customer_id)
        _, current = await field_store.view_rows(conn, customer_id, merged)
        change = fields.tag_change(set(current), add, remove)
        if not change.added and not change.removed:
            return []
        data = CustomerTagsChanged(
            customer_id=customer_id, added=change.added, removed=change.removed, tags=change.tags, changed_by=key_id
        ).model_dump(mode="json")
        e = new_event(CUSTOMER_TAGS_CHANGED, customer_id, data, source, current_traceparent(), time=EventClock().tick())
        await events.append(conn, [Append(stream_of(customer_id), None, [e], INTAKE)])
        await field_store.apply(conn, [e])
        return [e.id]
