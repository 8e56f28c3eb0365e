"""The raw limits a `make bench` run sets its figures beside, measured with the run's own messages
on the same broker and PostgreSQL: aiokafka producing, asyncpg COPYing, and the eventsourcing
library (the peer) saving and reading the same events."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from crmtools.devstack import Stack

from bench.rebuild import Message

PEER_DATABASE = "bench_eventsourcing"


async def raw_produce(bootstrap: str, sample: Sequence[Message], duration_s: float) -> float:
    """aiokafka producing the scenario's own messages (key, value, headers) to a scratch topic,
    5,000 in flight at a time, acks=all: what the broker takes at most from one Python producer."""
    from aiokafka import AIOKafkaProducer

    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}")  # creates the topic
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < duration_s:
            chunk = [sample[(sent + i) % len(sample)] for i in range(5000)]
            futures = [await producer.send(topic, m.value, key=m.key, headers=list(m.headers)) for m in chunk]
            await asyncio.gather(*futures)
            sent += len(futures)
        return sent / (time.monotonic() - start)
    finally:
        await producer.stop()


async def raw_produce_one_by_one(bootstrap: str, sample: Sequence[Message], duration_s: float, clients: int) -> float:
    """The same messages, each awaited (send_and_wait) by `clients` concurrent tasks: the raw limit
    of one acknowledged message per request, as a single POST needs."""
    from aiokafka import AIOKafkaProducer

    topic = f"bench.raw1.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}")
        sent = 0
        deadline = time.monotonic() + duration_s

        async def client(c: int) -> None:
            nonlocal sent
            n = c
            while time.monotonic() < deadline:
                m = sample[n % len(sample)]
                await producer.send_and_wait(topic, m.value, key=m.key, headers=list(m.headers))
                sent += 1
                n += clients

        start = time.monotonic()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return sent / (time.monotonic() - start)
    finally:
        await producer.stop()


def timeline_rows(sample: Sequence[Message]) -> list[tuple[Any, ...]]:
    """The timeline rows of the sample, as the projection writes them (what does not decode is left out)."""
    from eventkit.acceptance import validate
    from eventkit.db import json_text
    from eventkit.envelope import DecodeError, from_kafka

    from contracts.registry import REGISTRY

    schemas = {name: t.model for name, t in REGISTRY.items()}
    rows = []
    for m in sample:
        try:
            e = from_kafka(m.key, m.value, m.headers)
            validate(e, schemas)
        except DecodeError:
            continue
        rows.append((e.subject, e.time, uuid.UUID(e.id), e.type, e.source, json_text(e.data)))
    return rows


async def raw_copy(dsn: str, rows: list[tuple[Any, ...]], duration_s: float) -> float:
    """asyncpg COPY of the same rows into a table shaped like the timeline (its primary key
    included), emptied between rounds; only the COPY is timed."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE timeline INCLUDING ALL)")
        copied = 0
        busy = 0.0
        while busy < duration_s:
            await conn.execute("TRUNCATE bench_copy")
            t0 = time.monotonic()
            await conn.copy_records_to_table(
                "bench_copy", records=rows, columns=["customer_id", "time", "event_id", "type", "source", "data"]
            )
            busy += time.monotonic() - t0
            copied += len(rows)
        await conn.execute("DROP TABLE bench_copy")
        return copied / busy
    finally:
        await conn.close()


@dataclass
class Peer:
    batch: float | None = None  # events/s, saved 1,000 per call
    single: float | None = None  # events/s, saved one per call
    read: float | None = None  # events/s, read back in order and mapped to domain events
    note: str = ""


def peer_eventsourcing(stack: Stack, sample: Sequence[Message], events: int, cap_s: float) -> Peer:
    """eventsourcing's PostgreSQL recorder with the scenario's events: one new aggregate per event,
    carrying its customer, type and data; saved 1,000 per call (like a batch), then one per call
    (like a single POST), then read back from its notification log as a rebuild would."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate
    except ImportError as e:
        return Peer(note=f"eventsourcing not installed ({e})")
    from eventkit.db import ensure_database
    from eventkit.envelope import DecodeError, from_kafka

    dsn = stack.postgres.dsn(PEER_DATABASE)
    asyncio.run(ensure_database(dsn))

    class Recorded(Aggregate):
        def __init__(self, customer_id: str, type: str, data: dict[str, Any]) -> None:
            self.customer_id = customer_id
            self.type = type
            self.data = data

    envelopes = []
    for m in sample:
        with contextlib.suppress(DecodeError):
            envelopes.append(from_kafka(m.key, m.value, m.headers))
    if not envelopes:
        return Peer(note="no events to save")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": PEER_DATABASE,
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(stack.postgres.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "",
        "CREATE_TABLE": "y",
    }
    app: Any = Application(env=env)
    peer = Peer()
    try:

        def aggregates(n: int, offset: int) -> list[Any]:
            picked = [envelopes[(offset + i) % len(envelopes)] for i in range(n)]
            return [Recorded(e.subject, e.type, e.data) for e in picked]

        done = 0
        start = time.monotonic()
        while done < events and time.monotonic() - start < cap_s:
            app.save(*aggregates(1000, done))
            done += 1000
        peer.batch = done / (time.monotonic() - start)
        single = 0
        start = time.monotonic()
        while time.monotonic() - start < min(cap_s, 10):
            app.save(*aggregates(1, single))
            single += 1
        peer.single = single / (time.monotonic() - start)
        read = 0
        start = time.monotonic()
        position: int | None = None
        while True:
            notes = app.recorder.select_notifications(position, 1000, inclusive_of_start=position is None)
            if not notes:
                break
            for n in notes:
                app.mapper.to_domain_event(n)
            read += len(notes)
            position = notes[-1].id
        peer.read = read / (time.monotonic() - start)
        peer.note = f"{done:,} events saved 1,000 per call, {single:,} one per call, {read:,} read back"
        return peer
    finally:
        app.close()
