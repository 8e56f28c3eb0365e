"""The outbox relay: publishes stored events to Kafka and forgets them only once acknowledged.

One relay per database is active at a time (a PostgreSQL advisory lock elects it), so events
leave in position order and each customer's events keep their order on their partition.
A crash after the broker acknowledged but before the rows were deleted publishes those events
again on restart; consumers drop the repeats by event id (at-least-once out, exactly-once in effect).
With a BrokerWatch, the relay also notices a broker that forgot acknowledged events (forgetful_broker.py)
and publishes the whole store again; once that is acknowledged, it reads its topics back and
queues again what a subscriber would not get (a broker can hide what it acknowledged, forgetful_broker.py).
An event the broker refuses for good (too large: REFUSED_FOR_GOOD) is parked, kept in
outbox_parked until an operator puts it back (`crm unpark`), and the relay goes on with the others:
no single event can hold up publication. Any other failure retries the whole batch.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import RecordMetadata, TopicPartition
from opentelemetry import trace

from eventkit.crash_points import crash_point
from eventkit.envelope import kafka_headers
from eventkit.eventstore import OUTBOX_CHANNEL, row_envelope
from eventkit.forgetful_broker import BrokerWatch
from eventkit.live import FeedSink
from eventkit.telemetry import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PARKED,
    OUTBOX_PARKED_NOW,
    OUTBOX_PUBLISHED,
    REPUBLISHED,
    UNREAD_AFTER_REPUBLISH,
    context_from_traceparent,
    records_spans,
    traceparent_of,
    tracer,
)

log = logging.getLogger(__name__)
_LEADER_LOCK = 7_300_002
BACKLOG_COUNT_INTERVAL_S = 1.0
READ_BACK_TIMEOUT_S = 300.0  # a read of the topics that stalls this long (the broker went away) is tried again
READ_BACK_ROUNDS = 5  # reads after one republish; each round queues again only what the last did not find

# The oldest pending rows by the outbox's index, then each one's event by the store's: a plain
# join let the planner pick a parallel scan of the whole event store once statistics said the
# outbox was large (or had just been vacuumed empty), at every poll. The LIMIT inside the
# LATERAL keeps it from being flattened back into such a join.
_PENDING = """
SELECT e.position, e.event_id, e.type, e.source, e.subject, e.time, e.traceparent, e.topic,
       e.data::text AS data_json, o.queued_at
FROM (SELECT position, queued_at FROM outbox ORDER BY position LIMIT $1) o
CROSS JOIN LATERAL (SELECT * FROM events WHERE events.position = o.position LIMIT 1) e
ORDER BY o.position
"""

# Forget the sent rows and raise the watermarks in one statement, so atomic without a
# transaction (BEGIN and COMMIT were two more round trips per batch).
_ACKNOWLEDGE = """
WITH sent AS (DELETE FROM outbox WHERE position = ANY($1::bigint[]))
INSERT INTO relay_watermarks (topic, kafka_partition, kafka_offset)
SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[])
ON CONFLICT (topic, kafka_partition)
DO UPDATE SET kafka_offset = greatest(relay_watermarks.kafka_offset, EXCLUDED.kafka_offset)
"""

# Take refused events out of the queue and keep them, with why.
_PARK = """
WITH parked AS (DELETE FROM outbox WHERE position = ANY($1::bigint[]) RETURNING position)
INSERT INTO outbox_parked (position, reason, detail)
SELECT p.position, x.reason, x.detail
FROM parked p JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS x(position, reason, detail) USING (position)
ON CONFLICT (position) DO UPDATE SET parked_at = now(), reason = EXCLUDED.reason, detail = EXCLUDED.detail
"""

# Stored events up to a position, on the topics read back, that the read did not return (parked
# ones stay parked: they were never on the topic).
_QUEUE_UNREAD = """
INSERT INTO outbox (position)
SELECT e.position FROM events e
WHERE e.position <= $1 AND e.topic = ANY($2::text[])
  AND NOT EXISTS (SELECT 1 FROM relay_read_back r WHERE r.event_id = e.event_id)
  AND NOT EXISTS (SELECT 1 FROM outbox_parked p WHERE p.position = e.position)
ON CONFLICT DO NOTHING
"""

# Errors about one event that no retry mends: its size, its topic's name. Anything else (the broker
# away, a leader moving, no authorization, a corrupt record: a CRC error on the way) holds the
# whole batch until it passes.
REFUSED_FOR_GOOD: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    ValueError,  # raised while the message is made (a header that does not encode): before any I/O
)


def refused_for_good(exc: BaseException) -> bool:
    return isinstance(exc, REFUSED_FOR_GOOD)


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        producer: AIOKafkaProducer,
        service: str,
        batch_size: int = 1000,
        poll_interval_s: float = 0.5,
        broker_watch: BrokerWatch | None = None,
        broker_check_interval_s: float = 2.0,
        feed: FeedSink | None = None,
        dataschema: Callable[[str], str] | None = None,
    ) -> None:
        self._dsn = dsn
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._watch = broker_watch
        self._check_interval_s = broker_check_interval_s
        self._next_check = 0.0
        self._wake = asyncio.Event()
        self._backlog = OUTBOX_BACKLOG.labels(service)
        self._counted_at = -BACKLOG_COUNT_INTERVAL_S  # when the backlog was last counted (loop time)
        self._published = OUTBOX_PUBLISHED.labels(service)
        self._parked = OUTBOX_PARKED.labels(service)
        self._oldest_age = OUTBOX_OLDEST_AGE.labels(service)
        self._parked_now = OUTBOX_PARKED_NOW.labels(service)
        self._oldest_age.set(0)
        self._parked_now.set(0)
        self._republished = REPUBLISHED.labels(service)
        self._unread = UNREAD_AFTER_REPUBLISH.labels(service)
        # After a republish: the highest position it queued, until a read of the topics found
        # everything up to it (read_back). Kept in relay_read_back_due with the reads made so far;
        # this is the leader's copy (resume), so that the check after every publish is no round trip.
        self._read_back_upto: int | None = None
        self._service = service
        self.is_leader = False
        # Live timelines of this process that get what the relay reads (committed events): for a
        # service whose consumer does not read its own topic (contracts PROJECTED_WHEN_STORED).
        self._feed = feed
        # Event type -> the `$id` of its data's schema (ce_dataschema), from the service's wiring:
        # the store keeps no schema per event, and eventkit knows no contracts.
        self._dataschema = dataschema

    async def run(self) -> None:
        """Forever: become leader, then publish whatever is pending; survive database restarts."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.is_leader = False
                log.warning("outbox relay restarting after %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                await asyncio.sleep(self._poll_interval_s)
            self.is_leader = True
            await self.resume(conn)
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            while True:
                self._wake.clear()
                await self.check_broker(conn)
                published = await self.publish_pending(conn)
                if published < self._batch_size:
                    await self.read_back(conn)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
        finally:
            self.is_leader = False
            self._next_check = 0.0  # whoever leads next checks the broker first
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def check_broker(self, conn: asyncpg.Connection) -> None:
        loop = asyncio.get_running_loop()
        if self._watch is None or loop.time() < self._next_check:
            return
        self._next_check = loop.time() + self._check_interval_s
        await self.count_parked(conn)
        rows = await conn.fetch("SELECT topic, kafka_partition, kafka_offset FROM relay_watermarks")
        marks = {TopicPartition(r["topic"], r["kafka_partition"]): r["kafka_offset"] for r in rows}
        reason = await self._watch.forgot(marks)
        if reason is None:
            return
        log.warning("the broker forgot acknowledged events (%s): publishing the whole store again", reason)
        await self._watch.recover()
        # The producer's metadata may still have the partition counts of the topics as they were
        # before the broker forgot them: partitioning the republished events by those would write
        # past the end of a topic the broker made anew with fewer partitions (see forgetful_broker.py).
        await self._producer.client.force_metadata_update()
        queued, self._read_back_upto = await self.republish_all(conn)
        self._republished.inc(queued)

    @staticmethod
    async def republish_all(conn: asyncpg.Connection) -> tuple[int, int | None]:
        """Queue every stored event again, in position order; forget the old watermarks; make a
        read back due. Returns how many were queued and the highest position among them."""
        async with conn.transaction():
            await conn.execute("DELETE FROM relay_watermarks")
            status = await conn.execute(
                "INSERT INTO outbox (position) SELECT position FROM events e"
                " WHERE NOT EXISTS (SELECT 1 FROM outbox_parked p WHERE p.position = e.position)"
                " ON CONFLICT DO NOTHING"
            )
            upto = await conn.fetchval("SELECT max(position) FROM events")
            if upto is not None:
                await conn.execute(
                    "INSERT INTO relay_read_back_due (upto) VALUES ($1)"
                    " ON CONFLICT (only_row) DO UPDATE SET upto = EXCLUDED.upto, rounds = 0",
                    upto,
                )
        return int(status.split()[-1]), upto

    async def resume(self, conn: asyncpg.Connection) -> None:
        """On becoming leader: take over a read back that the last leader left due."""
        self._read_back_upto = await conn.fetchval("SELECT upto FROM relay_read_back_due")
        await self.count_parked(conn)

    async def count_parked(self, conn: asyncpg.Connection) -> None:
        """The parked events now (`crm unpark` takes them out from another process)."""
        self._parked_now.set(await conn.fetchval("SELECT count(*) FROM outbox_parked"))

    async def _read_back_done(self, conn: asyncpg.Connection) -> None:
        await conn.execute("DELETE FROM relay_read_back_due")
        self._read_back_upto = None

    async def read_back(self, conn: asyncpg.Connection) -> None:
        """Once a republish is acknowledged in full, read the topics back from the start and queue
        again the events up to it that the read did not return; again after those, a few rounds."""
        upto = self._read_back_upto
        if self._watch is None or upto is None:
            return
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox WHERE position <= $1)", upto):
            return  # not all acknowledged yet
        topics = [r["topic"] for r in await conn.fetch("SELECT DISTINCT topic FROM relay_watermarks")]
        watch = self._watch
        await conn.execute("CREATE TEMPORARY TABLE IF NOT EXISTS relay_read_back (event_id uuid)")
        await conn.execute("TRUNCATE relay_read_back")

        async def read() -> None:
            async with contextlib.aclosing(watch.event_ids(topics)) as chunks:  # its reader stopped if cut off
                async for ids in chunks:
                    await conn.copy_records_to_table("relay_read_back", records=[(i,) for i in ids])

        try:
            await asyncio.wait_for(read(), READ_BACK_TIMEOUT_S)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.info("reading the topics back failed (%s): again next round", type(exc).__name__)
            return
        async with conn.transaction():  # the events queued again and the round counted, or neither
            queued = int((await conn.execute(_QUEUE_UNREAD, upto, topics)).split()[-1])
            rounds = await conn.fetchval("UPDATE relay_read_back_due SET rounds = rounds + 1 RETURNING rounds")
        await conn.execute("TRUNCATE relay_read_back")
        if not queued:
            log.info("read %s back after the republish: every event up to position %d is there", topics, upto)
            await self._read_back_done(conn)
            return
        self._unread.inc(queued)
        log.warning("%d republished events acknowledged but not read back from %s: publishing them again",
                    queued, topics)  # fmt: skip
        if rounds >= READ_BACK_ROUNDS:
            log.error("events still missing from %s after %d reads: not reading back again", topics, READ_BACK_ROUNDS)
            await self._read_back_done(conn)

    @staticmethod
    def _to_feed(feed: FeedSink, rows: list[asyncpg.Record]) -> None:
        wanted = [r for r in rows if feed.wants(r["subject"])]  # decoded only for a watcher
        if wanted:
            feed.publish([row_envelope(r, orjson.loads(r["data_json"]), r["traceparent"]) for r in wanted])

    async def publish_pending(self, conn: asyncpg.Connection) -> int:
        """Publish one batch in position order; delete it from the outbox after every ack. Park
        what the broker refuses for good; any other failure leaves the whole batch for a retry."""
        rows = await conn.fetch(_PENDING, self._batch_size)
        if not rows:
            self._backlog.set(0)
            self._oldest_age.set(0)
            return 0
        # The head's wait, set before sending: a relay that fails on every try still shows it.
        self._oldest_age.set(max(0.0, (datetime.now(UTC) - rows[0]["queued_at"]).total_seconds()))
        if self._feed is not None:
            self._to_feed(self._feed, rows)
        crash_point("relay.before_send")
        # One PRODUCER span per trace in the batch (a request's events share one), so a trace
        # shows the hop through the outbox and Kafka; consumers continue from it. With tracing
        # off none is made (records_spans) and the stored traceparent goes out unchanged.
        t = tracer()
        traceparents = {row["traceparent"] for row in rows}
        spans = {
            tp: t.start_span(
                f"{self._service} publish",
                context=context_from_traceparent(tp),
                kind=trace.SpanKind.PRODUCER,
                attributes={"crm.service": self._service, "messaging.system": "kafka"},
            )
            for tp in (traceparents if records_spans(t) else ())
        }
        outgoing = {tp: traceparent_of(spans[tp], tp) if tp in spans else tp for tp in traceparents}
        acks: list[asyncio.Future[RecordMetadata]] = []
        unsendable: set[int] = set()  # rows refused before they were sent: about themselves alone
        for i, row in enumerate(rows):
            try:
                ack = await self._send(row, outgoing[row["traceparent"]])
            except REFUSED_FOR_GOOD as exc:  # its answer is the refusal
                ack = asyncio.get_running_loop().create_future()
                ack.set_exception(exc)
                unsendable.add(i)
            acks.append(ack)
        try:
            results: list[RecordMetadata | BaseException] = await asyncio.gather(*acks, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if retry := next((f for f in failures if not refused_for_good(f)), None):
                raise retry  # the broker away or the like: the whole batch again, in order
            if len(failures) > len(unsendable):  # refused by the broker, perhaps for a batchmate
                await self._resend_alone(rows, outgoing, results, unsendable)
                failures = [r for r in results if isinstance(r, BaseException)]
        finally:
            for span in spans.values():
                span.end()
        crash_point("relay.after_ack")
        sent = [r for r in results if isinstance(r, RecordMetadata)]
        highest: dict[tuple[str, int], int] = {}
        for meta in sent:
            key = (meta.topic, meta.partition)
            highest[key] = max(highest.get(key, -1), meta.offset)
        acknowledge = functools.partial(
            conn.execute,
            _ACKNOWLEDGE,
            [r["position"] for r, res in zip(rows, results, strict=True) if isinstance(res, RecordMetadata)],
            [t for t, _ in highest],
            [p for _, p in highest],
            list(highest.values()),
        )
        if failures:
            async with conn.transaction():  # acknowledged and parked together, or neither
                await self._park(conn, rows, results)
                await acknowledge()
        else:
            await acknowledge()  # one statement: atomic without a transaction's two round trips
        self._published.inc(len(sent))
        # A fetch short of a full batch held everything pending as of its snapshot, so nothing of
        # that is left; only after a full one is there a backlog to count. A count walks the whole
        # table, dead rows included, and is one more round trip: while full fetches follow each
        # other (a backlog being worked off) it is made at most once per BACKLOG_COUNT_INTERVAL_S.
        if len(rows) < self._batch_size:
            self._backlog.set(0)
            self._oldest_age.set(0)
        elif (now := asyncio.get_running_loop().time()) - self._counted_at >= BACKLOG_COUNT_INTERVAL_S:
            self._backlog.set(await conn.fetchval("SELECT count(*) FROM outbox"))
            self._counted_at = now
        return len(rows)

    async def _send(self, row: asyncpg.Record, traceparent: str) -> "asyncio.Future[RecordMetadata]":
        # The stored JSON goes out as it is: no decode and re-encode on the way.
        envelope = row_envelope(row, {}, traceparent)
        if self._dataschema is not None:
            envelope.dataschema = self._dataschema(row["type"])
        return await self._producer.send(
            row["topic"], value=row["data_json"].encode(), key=row["subject"].encode(), headers=kafka_headers(envelope)
        )

    async def _resend_alone(
        self,
        rows: Sequence[asyncpg.Record],
        outgoing: dict[str, str],
        results: list[RecordMetadata | BaseException],
        unsendable: set[int],
    ) -> None:
        """A broker refuses a whole produce batch (say, over its message size limit) for one event
        in it: send each refused row again on its own, so that only the event at fault is parked."""
        for i, result in enumerate(results):
            if i in unsendable or not isinstance(result, BaseException):
                continue
            try:
                results[i] = await (await self._send(rows[i], outgoing[rows[i]["traceparent"]]))
            except REFUSED_FOR_GOOD as exc:
                results[i] = exc

    async def _park(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], results: Sequence[object]) -> None:
        parked = [(row, res) for row, res in zip(rows, results, strict=True) if isinstance(res, BaseException)]
        await conn.execute(
            _PARK,
            [row["position"] for row, _ in parked],
            [type(exc).__name__ for _, exc in parked],
            [str(exc)[:500] for _, exc in parked],
        )
        self._parked.inc(len(parked))
        await self.count_parked(conn)
        for row, exc in parked:  # ids and types only: no event data in the log
            log.error(
                "parked event %s (%s, position %d) that %s refused for good: %s; `crm unpark` puts it back",
                row["event_id"], row["type"], row["position"], row["topic"], type(exc).__name__,
            )  # fmt: skip


async def parked_events(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """The parked events, newest first: id, type, topic, size, when and why (no data)."""
    return await conn.fetch(
        "SELECT e.event_id, e.type, e.topic, e.position, octet_length(e.data::text) AS data_bytes,"
        " p.parked_at, p.reason, p.detail"
        " FROM outbox_parked p JOIN events e USING (position) ORDER BY p.position DESC LIMIT $1",
        limit,
    )


async def unpark(conn: asyncpg.Connection, event_ids: Sequence[str]) -> int:
    """Queue parked events again (all of them if no ids), in their stored order, and wake the
    relay; once the cause is mended (a broker or producer limit raised) they are published."""
    async with conn.transaction():
        status = await conn.execute(
            "WITH back AS (DELETE FROM outbox_parked p USING events e WHERE e.position = p.position"
            " AND (cardinality($1::uuid[]) = 0 OR e.event_id = ANY($1::uuid[])) RETURNING p.position)"
            " INSERT INTO outbox (position) SELECT position FROM back ON CONFLICT DO NOTHING",
            list(event_ids),
        )
        await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
    return int(status.split()[-1])
