"""The idempotent consumer: Kafka in, subscribers (projections, policies) out, each event's effect exactly once.

Per batch from Kafka, in one PostgreSQL transaction: record the ids of the events not seen
before in applied_events and apply just those to every subscriber. Offsets are committed to
Kafka only after that transaction (at most every commit interval, 500 ms), so a crash anywhere
redelivers, and a redelivered event finds its id already recorded and changes nothing.

A message the caller's rules do not accept (acceptance.py: it does not decode, has an unknown
type...) or that makes a subscriber fail is a dead letter (deadletter.py); the rest of the batch
goes on. A database outage is not a poison message: the batch is retried until the database is
back. A broker that forgot the group or took a stale commit is answered by rereading from the
start (stale_commits.py).
"""

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Gauge

from eventkit import deadletter
from eventkit.acceptance import Acceptance, Message
from eventkit.applied import AppliedRecord
from eventkit.db import TRANSIENT_ERRORS
from eventkit.deadletter import DeadLetter
from eventkit.envelope import Envelope
from eventkit.live import TimelineFeed
from eventkit.stale_commits import GroupGenerations, fetch_position, generation, membership_lost, past_end
from eventkit.telemetry import (
    CONSUMER_LAG,
    EVENTS_APPLIED,
    EVENTS_CONSUMED,
    EVENTS_DUPLICATE,
    FRESHNESS,
    context_from_traceparent,
    records_spans,
    tracer,
)

log = logging.getLogger(__name__)
MAX_TRACES_PER_BATCH = 64


class Subscriber(Protocol):
    """What a consumer hands new events to: a read model (a projection), a policy that issues
    commands, a cache to evict. apply() gets events not applied before, in log order, inside the
    batch's transaction."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None: ...


class Waiters:
    """Read-your-writes: HTTP requests waiting for an event id to be applied in this process."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        # True while this process's consumer reads every partition of every topic it follows:
        # then no other instance of the service applies anything, so a waiter is woken here and
        # need not keep asking the database (see timeline.wait_until_applied).
        self.sole_reader = False

    def register(self, event_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(event_id, []).append(future)
        return future

    def discard(self, event_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(event_id, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self._waiting.pop(event_id, None)

    def applied(self, event_ids: Sequence[str]) -> None:
        if not self._waiting:
            return
        for event_id in event_ids:
            for future in self._waiting.pop(event_id, ()):
                if not future.done():
                    future.set_result(None)


class StoredEventsApplier:
    """Applies the events a service stores to its own subscribers, in the storing transaction.

    For a service that projects its own topic as it stores its events: its consumer leaves that
    topic out, so the events are in the timeline (and every other read model) when the write
    commits, not after the relay, the broker and a consumer transaction. The store
    records them in applied_events (in its insert), like consumed ones, so a replay skips them.
    Counted as applied before the commit: a transaction that then fails is counted too (rare).
    """

    def __init__(self, service: str, subscribers: Sequence[Subscriber]) -> None:
        self.service = service
        self._subscribers = list(subscribers)
        self._freshness = FRESHNESS.labels(service)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        """Inside the caller's transaction, right after the events were stored (EventStore.on_stored)."""
        if not events:
            return
        # In the trace of the request that stores them (of a group commit's first request, as
        # its database spans are), where a consumer would continue the producer's.
        with tracer().start_as_current_span(
            f"{self.service} apply stored {events[0].type}",
            attributes={"crm.service": self.service, "crm.batch_size": len(events)},
        ):
            for subscriber in self._subscribers:
                await subscriber.apply(conn, events)
        now = datetime.now(UTC)
        for e in events:
            self._freshness.observe(max(0.0, (now - e.time).total_seconds()))
        for event_type, n in Counter(e.type for e in events).items():
            EVENTS_APPLIED.labels(self.service, event_type).inc(n)


class BatchApplier:
    """Applies batches of messages exactly once in effect; parks the ones that cannot be applied.

    `applied_table` is the dedup record (one per consumer group of a service database), written
    in the same transaction as the subscribers' changes. What cannot be applied goes to
    `deadletter_topic`.
    """

    def __init__(
        self,
        *,
        service: str,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        subscribers: Sequence[Subscriber],
        acceptance: Acceptance,
        deadletter_topic: str,
        waiters: Waiters | None = None,
        applied_table: str = "applied_events",
        feed: TimelineFeed | None = None,
    ) -> None:
        self.service = service
        self._pool = pool
        self._acceptance = acceptance
        self._deadletter_topic = deadletter_topic
        self._producer = producer
        self._subscribers = list(subscribers)
        self._waiters = waiters
        self._feed = feed
        self._record = AppliedRecord(applied_table)
        self._freshness = FRESHNESS.labels(service)

    async def handle_until_done(self, records: Sequence[Message]) -> None:
        """handle(), retried for as long as the database is unavailable."""
        delay = 0.2
        while True:
            try:
                await self.handle(records)
                return
            except TRANSIENT_ERRORS as exc:
                log.warning("database unavailable, retrying batch: %s", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def handle(self, records: Sequence[Message]) -> None:
        """Apply a batch of records exactly once in effect; dead-letter the ones that cannot be."""
        letters: list[DeadLetter] = []
        events: list[tuple[Message, Envelope]] = []
        seen: set[str] = set()
        # Counted per batch: a labelled counter's labels().inc() per event cost ~1.2 µs each, in
        # every consumer of every service.
        for topic, n in Counter(r.topic for r in records).items():
            EVENTS_CONSUMED.labels(self.service, topic).inc(n)
        for r in records:
            env = self._acceptance.accept(r)
            if isinstance(env, DeadLetter):
                letters.append(env)
                continue
            if env.id in seen:  # the same event twice in one batch
                EVENTS_DUPLICATE.labels(self.service, r.topic).inc()
                continue
            seen.add(env.id)
            events.append((r, env))

        async with self._pool.acquire() as conn:
            try:
                async with self._record.transaction(conn, [env.id for _, env in events]) as fresh:
                    await self._apply(conn, [env for _, env in events if env.id in fresh])
                    if letters:
                        await deadletter.record(conn, letters)
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                # Some event makes a subscriber fail: go one by one to find and park it.
                log.exception("batch failed, isolating the poison message")
                fresh, poison = await self._apply_one_by_one(conn, events)
                letters.extend(poison)
                if letters:
                    async with conn.transaction():
                        await deadletter.record(conn, letters)

        if letters:
            await deadletter.publish(self._producer, self._deadletter_topic, self.service, letters)
        now = datetime.now(UTC)
        applied: Counter[str] = Counter()
        for r, env in events:
            if env.id in fresh:
                applied[env.type] += 1
                self._freshness.observe(max(0.0, (now - env.time).total_seconds()))
            else:
                EVENTS_DUPLICATE.labels(self.service, r.topic).inc()
        for event_type, n in applied.items():
            EVENTS_APPLIED.labels(self.service, event_type).inc(n)
        if self._waiters is not None:
            self._waiters.applied([env.id for _, env in events])
        if self._feed is not None:
            self._feed.publish([env for _, env in events if env.id in fresh])

    async def _apply(self, conn: asyncpg.Connection, todo: Sequence[Envelope]) -> None:
        """Hand events not applied before to every subscriber, in the batch's transaction."""
        if todo:
            with self._span(todo):
                for subscriber in self._subscribers:
                    await subscriber.apply(conn, todo)

    async def _apply_one_by_one(
        self, conn: asyncpg.Connection, events: Sequence[tuple[Message, Envelope]]
    ) -> tuple[set[str], list[DeadLetter]]:
        fresh: set[str] = set()
        poison: list[DeadLetter] = []
        for r, env in events:
            try:
                async with self._record.transaction(conn, [env.id]) as new:
                    await self._apply(conn, [env] if new else [])
                fresh |= new
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                poison.append(DeadLetter(r, "apply_failed", type(exc).__name__, env.id, env.type))
        return fresh, poison

    @contextlib.contextmanager
    def _span(self, events: Sequence[Envelope]) -> Iterator[None]:
        """Consumer spans that continue each event's trace: one per trace in the batch, not per event.

        A batch of many traces (full load) gets one span linked to them instead, so tracing stays
        cheap when it matters. With tracing off these are no-op spans.
        """
        t = tracer()
        if not records_spans(t):
            yield
            return
        by_trace: dict[str, list[Envelope]] = {}
        for e in events:
            by_trace.setdefault(e.traceparent, []).append(e)
        if len(by_trace) > MAX_TRACES_PER_BATCH:
            links = [
                trace.Link(trace.get_current_span(context_from_traceparent(tp)).get_span_context())
                for tp in list(by_trace)[:MAX_TRACES_PER_BATCH]
            ]
            with t.start_as_current_span(
                f"{self.service} apply batch",
                kind=trace.SpanKind.CONSUMER,
                links=links,
                attributes={"crm.service": self.service, "crm.batch_size": len(events)},
            ):
                yield
            return
        spans = [
            t.start_span(
                f"{self.service} apply {group[0].type}",
                context=context_from_traceparent(tp),
                kind=trace.SpanKind.CONSUMER,
                attributes={"crm.service": self.service, "crm.batch_size": len(group)},
            )
            for tp, group in by_trace.items()
        ]
        # The subscribers' queries are children of the batch's trace when it has one; a batch of
        # several traces shares its queries, which then go untraced (client_spans.NoOrphanQueries).
        token = otel_context.attach(trace.set_span_in_context(spans[0])) if len(spans) == 1 else None
        try:
            yield
        finally:
            if token is not None:
                otel_context.detach(token)
            for span in spans:
                span.end()


REVOKE_WAIT_S = 5.0  # how long a revocation waits for the batch being applied


class _CommitOnRevoke(ConsumerRebalanceListener):
    def __init__(self, consumer: "IdempotentConsumer") -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.on_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._consumer.on_assigned(set(assigned))
        await self._consumer.reread_if_the_group_was_forgotten(set(assigned))


class IdempotentConsumer:
    def __init__(
        self,
        *,
        service: str,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        subscribers: Sequence[Subscriber],
        waiters: Waiters,
        max_batch: int = 1000,
        session_timeout_ms: int = 10_000,
        feed: TimelineFeed | None = None,
        commit_interval_ms: int = 500,
        fetch_max_wait_ms: int = 50,
        acceptance: Acceptance,
        deadletter_topic: str,
        client_options: Mapping[str, Any],
        applied_table: str = "applied_events",
    ) -> None:
        """`client_options`: keyword arguments for the Kafka client (security_protocol, sasl_*...)."""
        self.service = service
        self._commit_interval_s = commit_interval_ms / 1000
        self._topics = list(topics)
        self._max_batch = max_batch
        self.applier = BatchApplier(
            service=service, pool=pool, producer=producer, subscribers=subscribers, waiters=waiters, feed=feed,
            acceptance=acceptance, deadletter_topic=deadletter_topic, applied_table=applied_table,
        )  # fmt: skip
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 5),
            max_poll_records=max_batch,
            fetch_max_wait_ms=fetch_max_wait_ms,
            **client_options,
        )
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, for the lag gauge
        self._generations = GroupGenerations()
        self._uncommitted: dict[TopicPartition, int] = {}  # applied, offset not yet committed
        self._lag_gauges: dict[TopicPartition, Gauge] = {}  # crm_consumer_lag children, by partition
        self._idle = asyncio.Event()  # clear while a batch is applied; a revocation waits for it
        self._idle.set()
        self.waiters = waiters

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._consumer.subscribe(self._topics, listener=_CommitOnRevoke(self))
        await self._consumer.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):  # what is applied but not committed is redelivered, then skipped
            await self._commit()
        await self._consumer.stop()

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    async def run(self) -> None:
        # Offsets are committed at most every commit interval while messages keep coming, and as
        # soon as a poll finds nothing new: a commit per batch cost a broker round trip per batch
        # in every consumer, and what a crash leaves uncommitted is redelivered and skipped by the
        # applied-events record, so nothing is lost or doubled.
        loop = asyncio.get_running_loop()
        next_commit = 0.0
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_batch)
            records = [r for tp in sorted(batches) for r in batches[tp]]
            if records:
                self._idle.clear()
                try:
                    await self.applier.handle_until_done(records)
                    for tp, recs in batches.items():
                        self._positions[tp] = self._uncommitted[tp] = recs[-1].offset + 1
                finally:
                    self._idle.set()
            if self._uncommitted and (not records or loop.time() >= next_commit):  # idle, or due
                await self._commit()
                next_commit = loop.time() + self._commit_interval_s
            await self._update_lag()

    async def on_revoked(self) -> None:
        """Before a rebalance hands partitions on: let the batch being applied finish (for a
        while) and commit what is applied, so the next owner starts where this one stopped.
        Without it the next owner redelivered up to a commit interval of work (skipped by the
        dedup, but paid for again)."""
        self.waiters.sole_reader = False
        with contextlib.suppress(TimeoutError):  # a batch stuck on a database outage: hand on anyway
            await asyncio.wait_for(self._idle.wait(), REVOKE_WAIT_S)
        if membership_lost(self._consumer):  # a stale commit (stale_commits.py); repeats are skipped
            self._uncommitted = {}
            return
        await self._commit()  # a batch that finishes later is committed only where still assigned

    async def reread_if_the_group_was_forgotten(self, assigned: set[TopicPartition]) -> None:
        """After a rebalance: if the coordinator forgot the group (GroupGenerations), read every
        assigned partition from the start; the applied-events record skips what is applied."""
        now = generation(self._consumer)
        if not self._generations.forgot(now, bool(assigned)):
            return
        log.warning("the group is at generation %d again: the coordinator forgot the group; rereading %d "
                    "partitions from the start", now, len(assigned))  # fmt: skip
        await self._read_from_start(assigned)

    async def _read_from_start(self, partitions: Collection[TopicPartition]) -> None:
        """Fetch these partitions from the start again; applied events are skipped."""
        await self._consumer.seek_to_beginning(*partitions)  # a coroutine: not awaited, it never seeks
        for tp in partitions:
            self._positions[tp] = 0
            self._uncommitted.pop(tp, None)  # an offset of the log the broker lost

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """After a rebalance: forget the positions and lag gauges of the partitions now read by
        another instance, so none reports a partition it no longer reads; and tell the waiters
        whether this process now reads everything (the only instance of the service)."""
        every = {TopicPartition(t, p) for t in self._topics for p in self._consumer.partitions_for_topic(t) or ()}
        self.waiters.sole_reader = bool(every) and every <= assigned
        for tp in (set(self._positions) | set(self._lag_gauges)) - assigned:
            self._positions.pop(tp, None)
            self._lag_gauges.pop(tp, None)
            with contextlib.suppress(KeyError):  # never reported
                CONSUMER_LAG.remove(self.service, tp.topic, str(tp.partition))

    async def _commit(self) -> None:
        """Commit the offsets after what has been applied (not merely fetched), for the partitions
        still assigned (a batch may finish after its partition was handed on)."""
        assigned = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(o, "") for tp, o in self._uncommitted.items() if tp in assigned}
        self._uncommitted = {}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions away; the next owner redelivers and dedups.
            log.warning("offset commit failed: %s", exc)

    async def handle(self, records: Sequence[Message]) -> None:
        await self.applier.handle(records)

    async def _update_lag(self) -> None:
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            position, fetching = self._positions.get(tp), fetch_position(self._consumer, tp)
            if high is None:
                continue
            # The client's fetch position too: after a broker restart that took a stale commit
            # (stale_commits.py) the client can sit past the partition's new end, while what this
            # process applied (position) reads as behind, not ahead.
            if (ahead := past_end(high, position, fetching)) is not None:
                log.warning("%s[%s] ends at %s, before our position %s: rereading it", tp.topic, tp.partition,
                            high, ahead)  # fmt: skip
                await self._read_from_start([tp])
                continue
            # Nothing applied here yet (just started or assigned): count from where the client
            # fetches, the group's committed offset, so a catch-up shows its lag from the start and
            # a partition with nothing to read shows 0. (getmany moves it only by what it returns.)
            position = fetching if position is None else position
            if position is None:
                continue
            gauge = self._lag_gauges.get(tp)
            if gauge is None:  # looked up once: labels() costs ~1 µs, and this runs after every poll
                gauge = self._lag_gauges[tp] = CONSUMER_LAG.labels(self.service, tp.topic, str(tp.partition))
            gauge.set(max(0, high - position))
