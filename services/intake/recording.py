"""Recording interactions: resolve who each is about, decide the customers, merges, links and
suggestions it makes, and append all their events, in one transaction.

Single and batch interactions share one path: a batch is accepted as one durable write, all
or nothing. Identity writes hold a shared lock; a request that turns out to need a merge
starts again holding it exclusively, so merges never race the linking of identifiers.
"""

import asyncio
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from eventkit import crypto, db
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, ConcurrencyError, EventStore, EventTooLarge
from eventkit.telemetry import current_traceparent
from servicekit.keyring import KeyErased

from contracts.events import (
    CUSTOMER_CREATED,
    CUSTOMER_MERGED,
    IDENTIFIERS_ADDED,
    IDENTIFIERS_VERIFIED,
    INTERACTION_RECORDED,
    PERSONAL_FIELDS,
)
from contracts.topics import INTAKE
from intake import domain, store
from intake.customer_events import EventClock, merge_consent, stream_of
from intake.domain import InvalidInput
from intake.suggestions import store_suggestions
from intake.vault import Vault

ATTEMPTS = 25


@dataclass(frozen=True)
class Item:
    """One interaction to record, already validated and normalised."""

    cmd: domain.RecordInteraction
    request_hash: str  # what a retry with the same client_key must match ("" without one)
    client_key: str | None = None  # from the body's client_event_id


@dataclass(frozen=True)
class Submission:
    """One request: its items, its Idempotency-Key (key, body hash), the trace it belongs to."""

    items: tuple[Item, ...]
    request_key: tuple[str, str] | None
    traceparent: str

    def claims(self) -> dict[str, str]:
        """The idempotency keys this request claims, each with the hash it must match."""
        claims = {k: item.request_hash for item in self.items if (k := item.client_key)}
        if self.request_key:
            claims[self.request_key[0]] = self.request_key[1]
        return claims


class ItemErrors(Exception):
    """Items that break a rule once the database is consulted (unknown customer id...)."""

    def __init__(self, errors: list[tuple[int, InvalidInput]]) -> None:
        super().__init__(f"{len(errors)} invalid items")
        self.errors = errors


class IdempotencyConflict(Exception):
    """The key was first used with a different request."""

    def __init__(self, key: str, index: int | None) -> None:
        super().__init__(key)
        self.key = key
        self.index = index


class _NeedsMerge(Exception):
    pass


# A batch of 1,000 items is ~100 ms of Python between two awaits; the outbox relay and the
# consumers share the event loop and waited that long at each of their own awaits, so under
# batch load the relay published ~2,000 events/s while ~8,000/s were accepted. Loops over items
# give way every YIELD_EVERY items.
YIELD_EVERY = 50


async def give_way(n: int) -> None:
    """In a loop over items, at item n: let the rest of the event loop run every YIELD_EVERY."""
    if n % YIELD_EVERY == YIELD_EVERY - 1:
        await asyncio.sleep(0)


async def record_interactions(
    pool: asyncpg.Pool,
    events: EventStore,
    vault: Vault,
    source: str,
    items: Sequence[Item],
    request_key: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Record the items; return one answer per item (first answers for retried keys)."""
    sub = Submission(tuple(items), request_key, current_traceparent())
    return (await record_submissions(pool, events, vault, source, [sub]))[0]


async def record_submissions(
    pool: asyncpg.Pool, events: EventStore, vault: Vault, source: str, subs: Sequence[Submission]
) -> list[list[dict[str, Any]]]:
    """Record several requests in one transaction; one list of answers per request.

    All or nothing: an error about any request fails them all (GroupCommit then retries them
    one by one, so each request gets its own answer)."""
    exclusive = False
    for attempt in range(ATTEMPTS):
        try:
            async with pool.acquire() as conn, db.transaction(conn, store.identity_lock_sql(exclusive)):
                return await _record(conn, events, vault, source, subs, exclusive)
        except _NeedsMerge:
            exclusive = True
        except (ConcurrencyError, asyncpg.UniqueViolationError):
            # Another request created the same customer or identifier, or appended to the same
            # stream, first: decide again, after a short random pause so racers spread out.
            if attempt == ATTEMPTS - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
    raise ConcurrencyError("identity", None)


async def item_errors(
    pool: asyncpg.Pool, vault: Vault, items: Sequence[tuple[int, Item]]
) -> list[tuple[int, InvalidInput]]:
    """The errors only the database can tell (unknown customer id...), for (index, item) pairs,
    recording nothing: a batch already rejected for other items still lists every bad one."""
    if not items:
        return []
    async with pool.acquire() as conn:
        snapshot = await store.load_snapshot(
            conn,
            vault,
            [ident for _, item in items for ident in item.cmd.identifiers],
            [c for _, item in items if (c := item.cmd.customer_id)],
        )
    # The same resolver as _record, so items see the customers earlier items would create.
    resolver = domain.IdentityResolver(snapshot, datetime.now(UTC), domain.new_customer_id)
    errors: list[tuple[int, InvalidInput]] = []
    for index, item in items:
        try:
            resolver.resolve(item.cmd.customer_id, item.cmd.identifiers, item.cmd.verified)
        except InvalidInput as exc:
            errors.append((index, exc))
    return errors


async def _record(
    conn: asyncpg.Connection,
    events: EventStore,
    vault: Vault,
    source: str,
    subs: Sequence[Submission],
    exclusive: bool,
) -> list[list[dict[str, Any]]]:
    keys: dict[str, str] = {}
    for sub in subs:
        keys.update(sub.claims())
    taken = await store.claim_keys(conn, keys)

    replayed: dict[int, list[dict[str, Any]]] = {}  # requests whose Idempotency-Key answers for them
    answers_by_index: dict[tuple[int, int], dict[str, Any]] = {}  # (request, item) -> answer
    todo: list[tuple[int, int, Item]] = []
    for s, sub in enumerate(subs):
        if sub.request_key and sub.request_key[0] in taken:
            first = taken[sub.request_key[0]]
            if first["request_hash"] != sub.request_key[1]:
                raise IdempotencyConflict(sub.request_key[0], None)
            replayed[s] = first["response"]["items"]
            continue
        for index, item in enumerate(sub.items):
            if item.client_key and item.client_key in taken:
                first = taken[item.client_key]
                if first["request_hash"] != item.request_hash:
                    raise IdempotencyConflict(item.client_key, index)
                answers_by_index[s, index] = first["response"]
            else:
                todo.append((s, index, item))

    clock = EventClock()
    stored_keys: dict[str, bytes | None] = {}
    snapshot = await store.load_snapshot(
        conn,
        vault,
        [ident for _, _, item in todo for ident in item.cmd.identifiers],
        [c for _, _, item in todo if (c := item.cmd.customer_id)],
        stored_keys,
    )
    # Data keys of everyone this transaction may write about; new customers get theirs below.
    data_keys: dict[str, bytes]
    data_keys, _ = await vault.keys(
        conn, {*snapshot.owner.values(), *snapshot.created, *snapshot.merged_into.values()}, True, stored_keys
    )
    new_keys: dict[str, bytes] = {}
    resolver = domain.IdentityResolver(snapshot, clock.now, domain.new_customer_id)
    created: list[tuple[str, datetime]] = []
    links: list[tuple[domain.Ident, str, str]] = []
    merges: list[tuple[domain.Merge, str]] = []
    verified: list[domain.Ident] = []
    suggested: dict[tuple[str, str], tuple[domain.Suggestion, str]] = {}  # pair -> first suggestion, trace
    appends: list[Append] = []
    errors: list[tuple[int, InvalidInput]] = []

    def event(type_: str, customer_id: str, data: dict[str, Any], traceparent: str) -> Envelope:
        key = data_keys.get(customer_id)
        if key is None:
            raise KeyErased(customer_id)
        sealed = crypto.seal(data, PERSONAL_FIELDS.get(type_, ()), customer_id, key)
        return new_event(type_, customer_id, sealed, source, traceparent, time=clock.tick())

    for n, (s, index, item) in enumerate(todo):
        await give_way(n)
        cmd, tp = item.cmd, subs[s].traceparent
        try:
            res = resolver.resolve(cmd.customer_id, cmd.identifiers, cmd.verified)
        except InvalidInput as exc:
            errors.append((index, exc))
            continue
        if res.merges and not exclusive:
            raise _NeedsMerge
        cid = res.customer_id
        new: list[Envelope] = []
        if res.created is not None:
            data_keys[cid] = new_keys[cid] = crypto.new_data_key()
            created.append((cid, clock.now))
            links.extend((ident, cid, res.trust) for ident in res.created)
            data = domain.customer_created(
                cid, res.created, res.trust, domain.used_themselves(cmd.direction, res.created)
            )
            new.append(event(CUSTOMER_CREATED, cid, data, tp))
        for merge in res.merges:
            merges.append((merge, tp))
            new.append(event(CUSTOMER_MERGED, cid, domain.customer_merged(merge), tp))
        if res.added:
            links.extend((ident, cid, res.trust) for ident in res.added)
            new.append(event(IDENTIFIERS_ADDED, cid, domain.identifiers_added(cid, res.added, res.trust), tp))
        if res.verified:
            verified.extend(res.verified)
            new.append(event(IDENTIFIERS_VERIFIED, cid, domain.identifiers_verified(cid, res.verified, "key"), tp))
        for suggestion in res.suggestions:
            suggested.setdefault(suggestion.pair, (suggestion, tp))
        interaction = event(INTERACTION_RECORDED, cid, domain.interaction_recorded(cid, cmd), tp)
        new.append(interaction)
        appends.append(Append(stream_of(cid), None, new, INTAKE))
        answers_by_index[s, index] = {
            "event_id": interaction.id,
            "customer_id": cid,
            "event_ids": [e.id for e in new],
        }
    if errors:
        raise ItemErrors(errors)

    await store.insert_customers(conn, created)
    await vault.store_new(conn, new_keys)
    await store.insert_identifiers(conn, vault, links, data_keys)
    await store.verify_identifiers(conn, vault, verified)
    for merge, tp in merges:
        await store.apply_merge(conn, merge, clock.now)
        appends.extend(await merge_consent(conn, merge, functools.partial(event, traceparent=tp)))
    appends.extend(await store_suggestions(conn, snapshot, data_keys, suggested, source, clock))
    try:
        await events.append(conn, appends)
    except EventTooLarge as exc:  # name the request's item that made it
        exc.index = next((i for (_, i), a in answers_by_index.items() if exc.event_id in a["event_ids"]), None)
        raise

    results: list[list[dict[str, Any]]] = []
    to_store: dict[str, Any] = {}
    for s, sub in enumerate(subs):
        if s in replayed:
            results.append(replayed[s])
            continue
        answers = [answers_by_index[s, i] for i in range(len(sub.items))]
        results.append(answers)
        to_store.update({item.client_key: answers[i] for i, item in enumerate(sub.items) if item.client_key})
        if sub.request_key:
            to_store[sub.request_key[0]] = {"items": answers}
    await store.answer_keys(conn, to_store)
    return results
