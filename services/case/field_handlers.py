"""Use cases of case fields and tags (issue 29): define a field, set a case's fields, change its
tags. Each locks, loads from the events, decides, appends and rewrites its read model in one
transaction, like handlers.py."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from eventkit.eventstore import Append, ConcurrencyError
from eventkit.telemetry import current_traceparent

from case import field_store, fields, handlers, store
from case.context import CaseContext
from case.domain import CaseState
from case.field_rules import STREAM, Defined, Definitions
from case.handlers import CaseNotFound, Outcome
from contracts import fields as f
from contracts.topics import CASE


@dataclass(frozen=True)
class FieldOutcome:
    defined: Defined
    event_ids: list[str]
    created: bool


async def define_field(pool: asyncpg.Pool, ctx: CaseContext, definition: f.FieldDefinition, by: str) -> FieldOutcome:
    """Define a case field (version 1) or redefine it (one more); the same definition again stores nothing."""
    async with pool.acquire() as conn, conn.transaction():
        await field_store.lock_definitions(conn)
        stored = await ctx.events.load(conn, STREAM)
        defs = Definitions.from_events((s.event.type, s.event.data, s.event.time) for s in stored)
        created = definition.name not in defs.current
        decided = fields.define(defs, definition, by)
        if decided is None:
            return FieldOutcome(defs.current[definition.name], [], created=False)
        subject = f.field_subject("case", definition.name)
        envelopes = handlers.stamped(ctx, subject, [decided.type], [decided.data], current_traceparent(), ctx.clock())
        await ctx.events.append(conn, [Append(STREAM, defs.version, envelopes, CASE)])
        for e in envelopes:
            defs.apply(e.type, e.data, e.time)
        defined = defs.current[definition.name]
        await field_store.save_definition(conn, defined)
        return FieldOutcome(defined, [e.id for e in envelopes], created)


async def list_fields(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await field_store.list_definitions(conn)


async def _locked_case(
    conn: asyncpg.Connection, ctx: CaseContext, case_id: str, expected: int | None, unseal: bool = False
) -> CaseState:
    """The case, locked, as its events are (sealed: the case row must never get the plain text),
    but with `unseal` its personal field values readable, to tell a change from a no-op."""
    if not await store.lock_case(conn, case_id):
        raise CaseNotFound(case_id)
    state, stored = await handlers.load(conn, ctx, case_id)
    if expected is not None and state.version != expected:
        raise ConcurrencyError(store.stream_of(case_id), expected)
    if unseal and state.personal:
        datas = await ctx.keys.unseal([s.event.data for s in stored])
        events = ((s.event.type, d, s.event.time) for s, d in zip(stored, datas, strict=True))
        state.personal = CaseState.from_events(case_id, events).personal
    return state


async def set_fields(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, values: Mapping[str, Any], by: str
) -> Outcome:
    async with pool.acquire() as conn, conn.transaction():
        state = await _locked_case(conn, ctx, case_id, expected_version, unseal=True)
        drafts = fields.set_fields(state, await field_store.definitions(conn), values, by)
        before = dict(state.personal)
        envelopes = await handlers.commit(conn, ctx, state, drafts, current_traceparent())
        # The events hold the personal values sealed; the answer shows what the agent just set.
        for d in drafts:
            before.update(d.data["personal"])
        state.personal = {name: text for name, text in before.items() if text is not None}
        return Outcome(state, [e.id for e in envelopes])


async def change_tags(
    pool: asyncpg.Pool,
    ctx: CaseContext,
    case_id: str,
    expected_version: int | None,
    add: Sequence[str],
    remove: Sequence[str],
    by: str,
) -> Outcome:
    """Tags commute, so the version is checked only if the caller sent one."""
    async with pool.acquire() as conn, conn.transaction():
        state = await _locked_case(conn, ctx, case_id, expected_version)
        drafts = fields.change_tags(state, add, remove, by)
        envelopes = await handlers.commit(conn, ctx, state, drafts, current_traceparent())
        return Outcome(state, [e.id for e in envelopes])
