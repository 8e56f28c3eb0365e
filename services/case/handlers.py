"""case's use cases: lock the case, load it from its events, decide, append, in one transaction.

Every append goes through commit(): the events, the case list row and the SLA timers change
together, so the read model and the timers can never disagree with the events.
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from eventkit import crypto
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, ConcurrencyError, StoredEvent
from eventkit.telemetry import current_traceparent
from servicekit.keyring import KeyErased, KeyRing

from case import domain, field_store, sla, store
from case.context import CaseContext
from case.domain import CaseState, Draft
from case.rules import OpenRule
from contracts.case import CASE_PERSONAL_FIELDS
from contracts.fields import CASE_FIELDS_SET, CASE_TAGS_CHANGED
from contracts.fields import PERSONAL_FIELDS as FIELD_PERSONAL_FIELDS
from contracts.topics import CASE

_PERSONAL = {**CASE_PERSONAL_FIELDS, **FIELD_PERSONAL_FIELDS}
_FIELD_EVENTS = (CASE_FIELDS_SET, CASE_TAGS_CHANGED)


class CaseNotFound(Exception):
    pass


class CaseIdTaken(Exception):
    """A client-chosen case id that another customer's case already has."""


class CustomerNotFound(Exception):
    pass


@dataclass(frozen=True)
class Outcome:
    state: CaseState
    event_ids: list[str]
    created: bool = True


async def load(conn: asyncpg.Connection, ctx: CaseContext, case_id: str) -> tuple[CaseState, list[StoredEvent]]:
    stored = await ctx.events.load(conn, store.stream_of(case_id))
    state = CaseState.from_events(case_id, ((s.event.type, s.event.data, s.event.time) for s in stored))
    return state, stored


async def commit(
    conn: asyncpg.Connection,
    ctx: CaseContext,
    state: CaseState,
    drafts: Sequence[Draft],
    traceparent: str,
    fired: Sequence[sla.Alert] = (),
) -> list[Envelope]:
    """Append the drafts at the state's version, fold them in, and rewrite the row and timers."""
    if not drafts:
        return []
    now = ctx.clock()
    customer_id = state.customer_id or drafts[0].data["customer_id"]
    datas = await _sealed(ctx.keys, customer_id, drafts)
    envelopes = stamped(ctx, customer_id, [d.type for d in drafts], datas, traceparent, now)
    await ctx.events.append(conn, [Append(store.stream_of(state.case_id), state.version, envelopes, CASE)])
    for e in envelopes:
        state.apply(e.type, e.data, e.time)
    await store.save_case(conn, state)
    if any(d.type in _FIELD_EVENTS for d in drafts):
        await field_store.save_values(conn, state)
    await store.sync_timers(conn, state.case_id, scheduled_timers(state, ctx), fired, now)
    return envelopes


def stamped(
    ctx: CaseContext,
    subject: str,
    types: Sequence[str],
    datas: Sequence[dict[str, Any]],
    traceparent: str,
    now: datetime,
) -> list[Envelope]:
    """A decision's events, one microsecond apart, so the canonical (time, id) order keeps the
    order of the decision."""
    return [
        new_event(type_, subject, data, ctx.source, traceparent, time=now + timedelta(microseconds=n))
        for n, (type_, data) in enumerate(zip(types, datas, strict=True))
    ]


@dataclass(frozen=True)
class CloseTimer:
    """The case_timers row that wakes the timer loop to close a resolved case (domain.auto_close)."""

    at: datetime
    level: str = "close"
    target: str = "auto_close"


def scheduled_timers(state: CaseState, ctx: CaseContext) -> list[store.Timer]:
    """Every instant the timer loop must look at the case again: SLA alerts, then the auto close."""
    timers: list[store.Timer] = list(sla.scheduled_alerts(state, ctx.policy, ctx.calendar))
    close_at = domain.auto_close_at(state, ctx.rules)
    if close_at is not None:
        timers.append(CloseTimer(close_at))
    return timers


async def _sealed(keys: KeyRing, customer_id: str, drafts: Sequence[Draft]) -> list[dict[str, Any]]:
    """The drafts' data with free text sealed under the customer's data key (docs/product.md §9). For an
    erased customer the text is not kept at all: it reads "[erased]", and the case goes on."""

    def personal(d: Draft) -> tuple[str, ...]:
        return tuple(f for f in _PERSONAL.get(d.type, ()) if _has_text(d.data, f))

    if not any(personal(d) for d in drafts):
        return [dict(d.data) for d in drafts]
    try:
        key: bytes | None = await keys.key_for_writing(customer_id)
    except KeyErased:
        key = None
    out = []
    for d in drafts:
        if key is not None:
            out.append(crypto.seal(d.data, personal(d), customer_id, key))
        else:
            out.append(_erased(d.data, personal(d)))
    return out


def _has_text(data: dict[str, Any], pattern: str) -> bool:
    """Whether the pattern ("reason", or "personal.**" for every value below) names any text."""
    if pattern.endswith(".**"):
        below = data.get(pattern[:-3])
        return isinstance(below, dict) and any(isinstance(v, str) for v in below.values())
    return isinstance(data.get(pattern), str)


def _erased(data: dict[str, Any], patterns: Sequence[str]) -> dict[str, Any]:
    """The data with the text the patterns name as "[erased]": the customer's key is gone."""
    out = dict(data)
    for p in patterns:
        if p.endswith(".**"):
            out[p[:-3]] = {k: crypto.ERASED if isinstance(v, str) else v for k, v in data[p[:-3]].items()}
        else:
            out[p] = crypto.ERASED
    return out


Decide = Callable[[asyncpg.Connection, CaseState], Awaitable[list[Draft]]]


async def _command(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, decide: Decide
) -> Outcome:
    async with pool.acquire() as conn, conn.transaction():
        if not await store.lock_case(conn, case_id):
            raise CaseNotFound(case_id)
        state, _ = await load(conn, ctx, case_id)
        if state.version != expected_version:
            # The agent decided on an older version: reload and decide again (409).
            raise ConcurrencyError(store.stream_of(case_id), expected_version)
        drafts = await decide(conn, state)
        envelopes = await commit(conn, ctx, state, drafts, current_traceparent())
        return Outcome(state, [e.id for e in envelopes])


# --- agent commands ----------------------------------------------------------------------------


async def open_case(
    pool: asyncpg.Pool,
    ctx: CaseContext,
    customer_id: str,
    type_: str,
    priority: str,
    team: str,
    title: str | None,
    case_id: str,
) -> Outcome:
    """An agent opens a case by hand (opened_by null).

    The caller may choose the case id, which makes a retry safe: opening a case that exists
    already, for the same customer, answers with that case (`created` False) and stores nothing.
    """
    async with pool.acquire() as conn, conn.transaction():
        ids = await store.customer_ids(conn, customer_id)
        if not await store.customer_known(conn, ids):
            raise CustomerNotFound(customer_id)
        await store.lock_customer(conn, ids[0])
        if await store.case_exists(conn, case_id):
            existing, _ = await load(conn, ctx, case_id)
            if existing.customer_id not in ids:
                raise CaseIdTaken(case_id)
            return Outcome(existing, [], created=False)
        vip = await store.is_vip(conn, ids)
        state = CaseState(case_id)
        rule = OpenRule(type_, priority, team)
        drafts = domain.open_case(case_id, ids[0], rule, vip, opened_by=None, title=title)
        envelopes = await commit(conn, ctx, state, drafts, current_traceparent())
        return Outcome(state, [e.id for e in envelopes])


async def assign(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, owner: str, team: str | None
) -> Outcome:
    async def decide(conn: asyncpg.Connection, state: CaseState) -> list[Draft]:
        return domain.assign(state, owner, team)

    return await _command(pool, ctx, case_id, expected_version, decide)


async def change_status(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, to_status: str, reason: str | None
) -> Outcome:
    async def decide(conn: asyncpg.Connection, state: CaseState) -> list[Draft]:
        fields = await field_store.definitions(conn) if to_status == "resolved" else None
        return domain.change_status(state, to_status, reason, ctx.clock(), ctx.rules, fields)

    return await _command(pool, ctx, case_id, expected_version, decide)


async def set_priority(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, priority: str, reason: str | None
) -> Outcome:
    async def decide(conn: asyncpg.Connection, state: CaseState) -> list[Draft]:
        vip = await store.is_vip(conn, await store.customer_ids(conn, state.customer_id))
        return domain.set_priority(state, priority, reason, vip)

    return await _command(pool, ctx, case_id, expected_version, decide)


async def add_note(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, author: str, text: str
) -> Outcome:
    async def decide(conn: asyncpg.Connection, state: CaseState) -> list[Draft]:
        return domain.add_note(state, author, text)

    return await _command(pool, ctx, case_id, expected_version, decide)


async def reply(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, channel: str, author: str, body: str
) -> Outcome:
    async def decide(conn: asyncpg.Connection, state: CaseState) -> list[Draft]:
        return domain.reply(state, channel, author, body)

    return await _command(pool, ctx, case_id, expected_version, decide)


async def link_interaction(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str, expected_version: int, interaction_event_id: str
) -> Outcome:
    async def decide(conn: asyncpg.Connection, state: CaseState) -> list[Draft]:
        found = await store.interaction(conn, await store.customer_ids(conn, state.customer_id), interaction_event_id)
        if found is None:
            if await store.interaction_owner(conn, interaction_event_id) is not None:
                raise domain.Invalid(
                    "interaction_of_another_customer",
                    "that interaction belongs to another customer",
                    errors=[{"field": "interaction_event_id", "reason": "another customer's interaction"}],
                )
            raise domain.NotFound(
                "interaction_not_found",
                "no such interaction has reached the case service (yet)",
                errors=[{"field": "interaction_event_id", "reason": "unknown interaction event id"}],
            )
        return domain.link_interaction(state, found.event_id, found.kind, found.channel, found.direction)

    return await _command(pool, ctx, case_id, expected_version, decide)


# --- reads -----------------------------------------------------------------------------------


async def get_case(
    pool: asyncpg.Pool, ctx: CaseContext, case_id: str
) -> tuple[CaseState, list[tuple[StoredEvent, dict[str, Any]]]]:
    """The case and its history, with what agents wrote readable again (or "[erased]")."""
    async with pool.acquire() as conn:
        stored = await ctx.events.load(conn, store.stream_of(case_id))
    if not stored:
        raise CaseNotFound(case_id)
    datas = await ctx.keys.unseal([s.event.data for s in stored])
    state = CaseState.from_events(
        case_id, ((s.event.type, d, s.event.time) for s, d in zip(stored, datas, strict=True))
    )
    return state, list(zip(stored, datas, strict=True))


async def list_cases(
    pool: asyncpg.Pool, keys: KeyRing, filters: dict[str, Any], limit: int, cursor: store.ListCursor | None
) -> tuple[list[dict[str, Any]], store.ListCursor | None]:
    async with pool.acquire() as conn:
        rows, next_cursor = await store.list_cases(conn, filters, limit, cursor)
    await open_titles(keys, rows)
    return rows, next_cursor


async def open_titles(keys: KeyRing, rows: list[dict[str, Any]]) -> None:
    """Titles are sealed under their customer's data key: readable again (or "[erased]")."""
    owners = {o for r in rows if (o := r["title_sealed_by"])}
    found = await keys.keys(owners) if owners else {}
    for r in rows:
        owner = r.pop("title_sealed_by")
        if owner:
            r["title"] = crypto.open_token(r["title"], owner, "title", found)
