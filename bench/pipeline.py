"""The raw pipeline: the data movement batch intake implies, done by the raw clients alone.

    python -m bench.pipeline read --bootstrap HOST:PORT --dsn DSN --topic T --table TABLE --expect N

Every accepted event is stored once (intake's timeline reads its own events from its event
store), produced once, and then read by three consumers (case's, notification's and analytics',
whose one consumer feeds its timeline and its KPI fold), each writing it to its own table. Here
a writer COPYs each 1,000 messages into a store table and produces them (aiokafka, acks=all),
while three reader processes, started first, each read the scratch topic (aiokafka, every
partition assigned, no group) and COPY the rows into a table of their own. All tables are shaped like the
timeline, primary key included. The figure is the messages over the time from the writer's
start to the last reader's last COPY, everything sharing the machine as the services do. No
HTTP, validation, identity, sealing, outbox, deduplication or projection logic: what is left
when all of that costs nothing, so the batch figure's ratio to it says how much of the way the
services' own work takes.
"""

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from eventkit.auto_created_topics import partition_counts

from bench.rebuild import Message, partitions_of, with_new_id
from contracts.topics import INTAKE

ROOT = Path(__file__).resolve().parents[1]
READERS = 3  # case, notification and analytics (intake's timeline reads the writer's store)
CHUNK = 1000  # messages per COPY and per produced round, as per batch request
COLUMNS = ["customer_id", "time", "event_id", "type", "source", "data"]


def row_of(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> tuple[Any, ...]:
    """A timeline row from a message's CloudEvents headers and value, with nothing checked."""
    h = dict(headers)
    return (
        h["ce_subject"].decode(),
        datetime.fromisoformat(h["ce_time"].decode()),
        uuid.UUID(h["ce_id"].decode()),
        h["ce_type"].decode(),
        h["ce_source"].decode(),
        value or b"{}",
    )


async def _copy_connection(dsn: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    # a json column's binary form is its text, which the message value already is
    await conn.set_type_codec("json", schema="pg_catalog", encoder=lambda b: b, decoder=lambda b: b, format="binary")
    return conn


async def read(bootstrap: str, dsn: str, topic: str, table: str, expect: int) -> dict[str, float]:
    """One reader: every partition of `topic` from the start into `table` until `expect` rows."""
    conn = await _copy_connection(dsn)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, [topic])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        print("ready", flush=True)
        copied = 0
        done_at = time.time()
        while copied < expect:
            batches = await consumer.getmany(timeout_ms=200, max_records=CHUNK)
            rows = [row_of(r.key, r.value, r.headers) for records in batches.values() for r in records]
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=COLUMNS)
                copied += len(rows)
                done_at = time.time()
        return {"copied": copied, "done_at": done_at}
    finally:
        await consumer.stop()
        await conn.close()


async def _prepare(bootstrap: str, dsn: str, topic: str, tables: Sequence[str]) -> int:
    """The scratch topic, with as many partitions as the services' topics, and empty tables."""
    async with _admin(bootstrap) as admin:
        partitions = (await partition_counts(admin, [INTAKE]))[INTAKE]
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    await _tables(dsn, tables, "DROP TABLE IF EXISTS {0}; CREATE TABLE {0} (LIKE timeline INCLUDING ALL)")
    return partitions


async def _clean_up(bootstrap: str, dsn: str, topic: str, tables: Sequence[str]) -> None:
    """Drop the tables and the scratch topic (the embedded broker keeps every message in memory)."""
    await _tables(dsn, tables, "DROP TABLE IF EXISTS {0}")
    async with _admin(bootstrap) as admin:
        await admin.delete_topics([topic])


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _tables(dsn: str, tables: Sequence[str], statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table in tables:
            await conn.execute(statement.format(table))
    finally:
        await conn.close()


async def write(bootstrap: str, dsn: str, topic: str, tables: Sequence[str], messages: Sequence[Message]) -> float:
    """Store `messages` in each of `tables` (the store) and produce
    them, CHUNK at a time, one chunk's acks in flight while the next is stored; return the
    time.time() it started."""
    conn = await _copy_connection(dsn)
    # The services' producer settings (servicekit.app): the embedded broker stores each produced
    # batch as one object and lists them all on every fetch, so batches of aiokafka's default
    # 16 KiB made this figure fall with the run's length (6,400 events/s for 60,000 messages,
    # 3,000 for 150,000).
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_batch_size=512 * 1024, enable_idempotence=False
    )
    await producer.start()
    try:
        started = time.time()
        in_flight: list[asyncio.Future[Any]] = []
        for at in range(0, len(messages), CHUNK):
            chunk = messages[at : at + CHUNK]
            rows = [row_of(m.key, m.value, m.headers) for m in chunk]
            async with conn.transaction():  # one transaction, as intake stores
                for table in tables:
                    await conn.copy_records_to_table(table, records=rows, columns=COLUMNS)
            await asyncio.gather(*in_flight)
            in_flight = [await producer.send(topic, m.value, key=m.key, headers=list(m.headers)) for m in chunk]
        await asyncio.gather(*in_flight)
        return started
    finally:
        await producer.stop()
        await conn.close()


def measure(bootstrap: str, dsn: str, sample: Sequence[Message], count: int) -> dict[str, float]:
    """The raw pipeline with `count` copies of `sample` (new event ids): events/s end to end."""
    run = uuid.uuid4().hex[:8]
    topic = f"bench.pipeline.{run}"
    store = [f"bench_pipe_{run}_store"]
    tables = [f"bench_pipe_{run}_{i}" for i in range(READERS)]
    messages = [with_new_id(sample[i % len(sample)]) for i in range(count)]
    partitions = asyncio.run(_prepare(bootstrap, dsn, topic, [*store, *tables]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    readers: list[subprocess.Popen[str]] = []
    try:
        for table in tables:
            args = ["--bootstrap", bootstrap, "--dsn", dsn, "--topic", topic, "--table", table, "--expect", str(count)]
            cmd = [sys.executable, "-m", "bench.pipeline", "read", *args]
            readers.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))
        for reader in readers:
            assert reader.stdout is not None
            if reader.stdout.readline().strip() != "ready":
                raise RuntimeError("a pipeline reader did not start")
        started = asyncio.run(write(bootstrap, dsn, topic, store, messages))
        results = []
        for reader in readers:
            out, _ = reader.communicate(timeout=600)
            if reader.returncode != 0:
                raise RuntimeError(f"a pipeline reader failed ({reader.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
        asyncio.run(_clean_up(bootstrap, dsn, topic, [*store, *tables]))
    seconds = max(r["done_at"] for r in results) - started
    return {"events": count, "seconds": seconds, "rate": count / seconds, "partitions": partitions}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["read"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--expect", type=int, required=True)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(read(a.bootstrap, a.dsn, a.topic, a.table, a.expect))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
