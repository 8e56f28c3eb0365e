"""Append-only event store in PostgreSQL with optimistic concurrency per stream.

Appending also enqueues the events in the transactional outbox, in the same transaction, so
an event is published if and only if it was stored. An event larger than the store's limit, as it
will be published (data, headers and key), is refused before anything is written (EventTooLarge):
one a broker would refuse must not be stored and promised to subscribers.
"""

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from eventkit.db import json_text
from eventkit.envelope import Envelope
from eventkit.telemetry import EVENTS_STORED

OUTBOX_CHANNEL = "eventkit_outbox"


# Below the producer's max_request_size (1 MiB, Kafka's default message.max.bytes too) with room
# for the record batch around it; Settings.event_max_bytes overrides it.
DEFAULT_MAX_EVENT_BYTES = 512 * 1024
# What travels beside the data: the key and the CloudEvents headers' names and fixed values, and
# the record's own framing; the variable header values are added per event.
_FIXED_OVERHEAD_BYTES = 512


class EventTooLarge(Exception):
    """An event whose encoded size is over the limit (HTTP 413 event_too_large). `index`: the
    request item it came from, where the caller knows it."""

    def __init__(self, event_type: str, event_id: str, size: int, limit: int) -> None:
        super().__init__(f"a {event_type} event would be {size} bytes encoded; the limit is {limit}")
        self.event_type = event_type
        self.event_id = event_id
        self.size = size
        self.limit = limit
        self.index: int | None = None


def encoded_size(e: Envelope, data_json: str) -> int:
    """The bytes the event takes on the topic, near enough: data, key, header values, framing."""
    # The subject is the key and ce_subject; the traceparent goes as ce_traceparent and traceparent;
    # ce_dataschema spells the type again (the rest of its URL is in the fixed overhead).
    fields: tuple[str, ...] = (e.id, e.type, e.type, e.source, e.subject, e.subject, e.traceparent, e.traceparent)
    fields += tuple(e.extensions.values())
    return len(data_json.encode()) + sum(len(f.encode()) for f in fields) + _FIXED_OVERHEAD_BYTES


class ConcurrencyError(Exception):
    """The stream moved on since the caller read it; reload and decide again (HTTP 409)."""

    def __init__(self, stream_id: str, expected: int | None) -> None:
        super().__init__(f"stream {stream_id} is not at version {expected}")
        self.stream_id = stream_id
        self.expected = expected


@dataclass(frozen=True)
class Append:
    """Events for one stream. expected_version None appends at the end, whatever it is."""

    stream_id: str
    expected_version: int | None
    events: Sequence[Envelope]
    topic: str


@dataclass(frozen=True)
class StoredEvent:
    position: int
    stream_id: str
    version: int
    event: Envelope
    topic: str


# A row's version is v itself, or, for a stream appended to "at the end" (at_end), v after the
# stream's current last version: read in the same statement, so appending costs one round trip.
_STORE = """
WITH stored AS (
    INSERT INTO events (stream_id, version, event_id, type, source, subject, time, traceparent, topic, data)
    SELECT s,
           CASE WHEN at_end THEN coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = s), 0) + v
                ELSE v END,
           i, t, src, sub, tm, tp, tpc, d::json
    FROM unnest($1::text[], $2::int[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::bool[])
         AS x(s, v, i, t, src, sub, tm, tp, tpc, d, at_end)
    RETURNING position, stream_id, version, event_id
), queued AS (
    INSERT INTO outbox (position) SELECT position FROM stored
), woken AS (
    SELECT pg_notify($12, '')
)"""
_RESULT = "\nSELECT stream_id, max(version) AS version FROM stored, woken GROUP BY stream_id\n"
_INSERT = _STORE + _RESULT
# The same, for a store whose service applies its own events as they are stored (on_stored):
# they are recorded as applied in the same round trip, as a consumer records what it applies.
_INSERT_APPLIED = (
    _STORE
    + ", applied AS (INSERT INTO applied_events (event_id) SELECT event_id FROM stored ON CONFLICT DO NOTHING)"
    + _RESULT
)


_CONFLICT_KEY = re.compile(r"\(stream_id, version\)=\((.*), (\d+)\)")


# Called with the events just stored, inside the same transaction (a service projecting its
# own events when they are stored: consumer.StoredEventsApplier).
OnStored = Callable[[asyncpg.Connection, Sequence[Envelope]], Awaitable[None]]


class EventStore:
    """One service's store; `service` only labels metrics."""

    def __init__(
        self, service: str, on_stored: OnStored | None = None, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self._stored = EVENTS_STORED.labels(service)
        self.on_stored = on_stored
        self.max_event_bytes = max_event_bytes

    async def append(self, conn: asyncpg.Connection, appends: Sequence[Append]) -> dict[str, int]:
        """Store the events of every append in one statement; return each stream's new version.

        Runs inside the caller's transaction (the unit of work). Raises ConcurrencyError when a
        stream is not at the expected version, also when another transaction got there first;
        the transaction is then aborted and must be rolled back (and retried whole, if at all).
        Raises EventTooLarge, before writing anything, for an event over max_event_bytes.
        """
        limit = self.max_event_bytes
        cols: tuple[list[Any], ...] = tuple([] for _ in range(11))
        # Per stream: the last version (or, at the end, the count) written so far in this call, so
        # a second append to the same stream continues the first.
        written: dict[str, int] = {}
        at_end: dict[str, bool] = {}
        for a in appends:
            if a.stream_id not in written:
                at_end[a.stream_id] = a.expected_version is None
            base = written.get(a.stream_id, a.expected_version or 0)
            for offset, e in enumerate(a.events, start=1):
                data_json = json_text(e.data)
                if (size := encoded_size(e, data_json)) > limit:
                    raise EventTooLarge(e.type, e.id, size, limit)
                row = (
                    a.stream_id,
                    base + offset,
                    e.id,
                    e.type,
                    e.source,
                    e.subject,
                    e.time,
                    e.traceparent,
                    a.topic,
                    data_json,
                    at_end[a.stream_id],
                )
                for col, value in zip(cols, row, strict=True):
                    col.append(value)
            written[a.stream_id] = base + len(a.events)
        if not cols[0]:
            return {}
        try:
            # One round trip: the versions, the rows, their outbox entries and the relay's wake-up
            # call. No savepoint (two more round trips): a conflict aborts the caller's
            # transaction, and every caller retries or fails the whole unit of work anyway.
            rows = await conn.fetch(_INSERT if self.on_stored is None else _INSERT_APPLIED, *cols, OUTBOX_CHANNEL)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "events_stream_id_version_key":
                raise
            match = _CONFLICT_KEY.search(exc.detail or "")
            stream_id = match.group(1) if match else "?"
            expected = next((a.expected_version for a in appends if a.stream_id == stream_id), None)
            raise ConcurrencyError(stream_id, expected) from exc
        self._stored.inc(len(cols[0]))
        if self.on_stored is not None:
            await self.on_stored(conn, [e for a in appends for e in a.events])
        return {r["stream_id"]: r["version"] for r in rows}

    async def load(self, conn: asyncpg.Connection, stream_id: str) -> list[StoredEvent]:
        rows = await conn.fetch(
            "SELECT position, stream_id, version, event_id, type, source, subject, time, traceparent,"
            " topic, data FROM events WHERE stream_id = $1 ORDER BY version",
            stream_id,
        )
        return [row_to_stored(r) for r in rows]


def row_to_stored(r: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        position=r["position"],
        stream_id=r["stream_id"],
        version=r["version"],
        topic=r["topic"],
        event=row_envelope(r, r["data"], r["traceparent"]),
    )


def row_envelope(r: asyncpg.Record, data: dict[str, Any], traceparent: str) -> Envelope:
    """The envelope of an events or an outbox row (they share these columns), carrying the data
    and trace context the caller gives."""
    return Envelope(
        id=str(r["event_id"]),
        type=r["type"],
        source=r["source"],
        subject=r["subject"],
        time=r["time"],
        data=data,
        traceparent=traceparent,
    )
