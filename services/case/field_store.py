"""SQL for case fields and tags (issue 29): the definitions, and the values and tags the list
filters on. Written in the same transaction as the events they come from; `rebuild` makes them
again from the events alone (crm replay case)."""

from typing import Any

import asyncpg
from eventkit.eventstore import EventStore

from case import store
from case.domain import CaseState
from case.field_rules import STREAM, Defined, Definitions
from contracts import fields as f

_FIELDS_LOCK = 7_300_102  # advisory lock: one definition of a case field at a time


async def lock_definitions(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _FIELDS_LOCK)


async def save_definition(conn: asyncpg.Connection, d: Defined) -> None:
    await conn.execute(
        "INSERT INTO case_fields (name, version, definition, defined_by, defined_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, definition = EXCLUDED.definition,"
        " defined_by = EXCLUDED.defined_by, defined_at = EXCLUDED.defined_at",
        d.definition.name,
        d.version,
        d.definition.model_dump(mode="json"),
        d.defined_by,
        d.defined_at,
    )


async def definitions(conn: asyncpg.Connection) -> dict[str, f.FieldDefinition]:
    rows = await conn.fetch("SELECT definition FROM case_fields")
    return {r["definition"]["name"]: f.FieldDefinition.model_validate(r["definition"]) for r in rows}


async def list_definitions(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """As the API lists them: each definition's fields, its version, who defined it and when."""
    rows = await conn.fetch("SELECT version, definition, defined_by, defined_at FROM case_fields ORDER BY name")
    return [
        {**r["definition"], "version": r["version"], "defined_by": r["defined_by"], "defined_at": r["defined_at"]}
        for r in rows
    ]


async def save_values(conn: asyncpg.Connection, s: CaseState) -> None:
    """The case's readable values and tags become exactly the state's (personal ones never land)."""
    await conn.execute("DELETE FROM case_field_values WHERE case_id = $1", s.case_id)
    await conn.execute("DELETE FROM case_tags WHERE case_id = $1", s.case_id)
    if s.fields:
        await conn.executemany(
            "INSERT INTO case_field_values (case_id, name, value) VALUES ($1, $2, $3)",
            [(s.case_id, name, value) for name, value in s.fields.items()],
        )
    if s.tags:
        await conn.execute(
            "INSERT INTO case_tags (case_id, tag) SELECT $1, unnest($2::text[])", s.case_id, list(s.tags)
        )


async def rebuild(conn: asyncpg.Connection, events: EventStore) -> int:
    """Make the definitions, values and tags again from case's own events; how many cases."""
    await conn.execute("TRUNCATE case_fields, case_field_values, case_tags")
    stored = await events.load(conn, STREAM)
    defs = Definitions.from_events((s.event.type, s.event.data, s.event.time) for s in stored)
    for d in defs.current.values():
        await save_definition(conn, d)
    # Only the cases that ever had fields or tags (the events table has no index on type: one scan).
    case_ids = await conn.fetch(
        "SELECT DISTINCT data->>'case_id' AS case_id FROM events WHERE type = ANY($1)",
        [f.CASE_FIELDS_SET, f.CASE_TAGS_CHANGED],
    )
    for row in case_ids:
        case_stored = await events.load(conn, store.stream_of(row["case_id"]))
        state = CaseState.from_events(row["case_id"], ((s.event.type, s.event.data, s.event.time) for s in case_stored))
        await save_values(conn, state)
    return len(case_ids)
