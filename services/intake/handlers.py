"""Intake's use cases: load, decide, append, in one unit of work (one transaction).

Single and batch interactions share one path: a batch is accepted as one durable write, all
or nothing. Identity writes hold a shared lock; a request that turns out to need a merge
starts again holding it exclusively, so merges never race the linking of identifiers.

Identity trust (docs/identity-trust.md): a claim that names two customers stores a merge
suggestion (one per pair of customers, ever) with an event on both timelines; an agent's
acceptance merges them under the exclusive lock, like any merge.
"""

import asyncio
import contextvars
import functools
import random
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from eventkit import crypto, db
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, ConcurrencyError, EventStore, EventTooLarge
from eventkit.telemetry import current_traceparent
from prometheus_client import Histogram
from servicekit.keyring import KeyErased

from contracts.events import (
    CONSENT_CHANGED,
    CUSTOMER_CREATED,
    CUSTOMER_ERASED,
    CUSTOMER_MERGED,
    IDENTIFIERS_ADDED,
    IDENTIFIERS_VERIFIED,
    INTERACTION_RECORDED,
    MERGE_SUGGESTED,
    MERGE_SUGGESTION_DECIDED,
    PERSONAL_FIELDS,
    PREFERENCES_CHANGED,
    PROFILE_CHANGED,
    Preferences,
)
from contracts.topics import INTAKE
from intake import domain, store
from intake.domain import InvalidInput
from intake.vault import IDENTIFIER_FIELD, NAME_FIELD, Vault

ATTEMPTS = 25
GROUP_SIZE = Histogram(
    "crm_intake_requests_per_transaction",
    "Interaction requests written by one transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


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


class CustomerNotFound(Exception):
    pass


class CustomerMoved(Exception):
    """The id was merged; the caller should go to the survivor."""

    def __init__(self, survivor_id: str) -> None:
        super().__init__(survivor_id)
        self.survivor_id = survivor_id


class AlreadyErased(Exception):
    pass


class _NeedsMerge(Exception):
    pass


class IdentifierNotFound(Exception):
    """An identifier to verify is not one of the customer's."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class SuggestionNotFound(Exception):
    pass


class SuggestionDecided(Exception):
    """The suggestion was accepted or rejected already."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


SUGGESTION_FIELD = "merge_suggestions.linked_by"

# A batch of 1,000 items is ~100 ms of Python between two awaits; the outbox relay and the
# consumers share the event loop and waited that long at each of their own awaits, so under
# batch load the relay published ~2,000 events/s while ~8,000/s were accepted. Loops over items
# give way every YIELD_EVERY items.
YIELD_EVERY = 50


async def give_way(n: int) -> None:
    """In a loop over items, at item n: let the rest of the event loop run every YIELD_EVERY."""
    if n % YIELD_EVERY == YIELD_EVERY - 1:
        await asyncio.sleep(0)


def stream_of(customer_id: str) -> str:
    return f"customer-{customer_id}"


class _Clock:
    """Event times one microsecond apart, so the canonical (time, id) order keeps the order of
    decisions within a request: created, merged, identifiers added, interaction."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self._n = 0

    def tick(self) -> datetime:
        self._n += 1
        return self.now + timedelta(microseconds=self._n)


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


_Waiting = tuple[Submission, "asyncio.Future[list[dict[str, Any]]]", contextvars.Context]


class GroupCommit:
    """Group commit: requests that arrive while earlier ones are being written share the next
    transaction, so under load one BEGIN ... COMMIT (and one lock, one snapshot, one insert of
    each kind) serves many requests, and when idle a request is written at once, alone.

    At most `in_flight` transactions run at a time; a group holds up to `max_items` items and
    never two requests with the same key (the second must see the first's answer). When a group
    fails, for whatever reason, its requests are written again one by one, so each gets its own
    answer: its own validation error, conflict, or success. A group's database spans belong to
    its first request's trace; every event carries the traceparent of its own request.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        events: EventStore,
        vault: Vault,
        source: str,
        *,
        in_flight: int = 4,
        max_items: int = 1000,
    ) -> None:
        self._write = functools.partial(record_submissions, pool, events, vault, source)
        self._free = in_flight
        self._max_items = max_items
        self._pending: deque[_Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, items: Sequence[Item], request_key: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        sub = Submission(tuple(items), request_key, current_traceparent())
        self._pending.append((sub, future, contextvars.copy_context()))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._pending and self._free > 0:
            group = self._take()
            GROUP_SIZE.observe(len(group))
            self._free -= 1
            task = asyncio.create_task(self._commit(group), context=group[0][2])
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._free += 1
        self._dispatch()

    def _take(self) -> list[_Waiting]:
        group = [self._pending.popleft()]
        keys = set(group[0][0].claims())
        size = len(group[0][0].items)
        while self._pending:
            sub = self._pending[0][0]
            claimed = sub.claims().keys()
            if size + len(sub.items) > self._max_items or not keys.isdisjoint(claimed):
                break
            group.append(self._pending.popleft())
            keys |= claimed
            size += len(sub.items)
        return group

    async def _commit(self, group: list[_Waiting]) -> None:
        try:
            await self._commit_group(group)
        finally:  # cancelled (shutdown): nobody may wait forever
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(RuntimeError("the write was interrupted"))

    async def _commit_group(self, group: list[_Waiting]) -> None:
        outcomes: list[list[dict[str, Any]] | BaseException]
        try:
            outcomes = list(await self._write([sub for sub, _, _ in group]))
        except Exception as exc:
            if len(group) == 1:
                outcomes = [exc]
            else:
                alone = [self._write([sub]) for sub, _, _ in group]
                outcomes = [r if isinstance(r, BaseException) else r[0]
                            for r in await asyncio.gather(*alone, return_exceptions=True)]  # fmt: skip
        for (_, future, _), outcome in zip(group, outcomes, strict=True):
            if future.done():  # the request was cancelled; its write stands (a retry gets its answer)
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


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

    clock = _Clock()
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
        appends.extend(await _merge_consent(conn, merge, functools.partial(event, traceparent=tp)))
    appends.extend(await _suggest(conn, snapshot, data_keys, suggested, source, clock))
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


async def _suggest(
    conn: asyncpg.Connection,
    snapshot: domain.IdentitySnapshot,
    data_keys: dict[str, bytes],
    suggested: dict[tuple[str, str], tuple[domain.Suggestion, str]],
    source: str,
    clock: _Clock,
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


async def _merge_consent(conn: asyncpg.Connection, merge: domain.Merge, event: Any) -> list[Append]:
    """The survivor takes the most restrictive consent of the two; each change is an event."""
    changes = domain.merged_consent(
        await store.consent(conn, merge.survivor_id), await store.consent(conn, merge.merged_id)
    )
    if not changes:
        return []
    await store.set_consent(conn, merge.survivor_id, changes, datetime.now(UTC))
    new = [
        event(
            CONSENT_CHANGED,
            merge.survivor_id,
            domain.consent_changed(
                merge.survivor_id, purpose, None if channel == store.ALL_CHANNELS else channel, granted
            ),
        )
        for (purpose, channel), granted in sorted(changes.items())
    ]
    return [Append(stream_of(merge.survivor_id), None, new, INTAKE)]


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
        clock = _Clock()
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
        clock = _Clock()
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
        clock = _Clock()
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
        clock = _Clock()
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
            appends.extend(await _merge_consent(conn, merge, event))
        await store.decide_suggestion(conn, suggestion_id, status, by, clock.now)
        await events.append(conn, appends)
        return {
            "suggestion_id": suggestion_id,
            "status": status,
            "survivor_id": survivor,
            "merged_id": merged,
            "event_ids": [e.id for a in appends for e in a.events],
        }


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
