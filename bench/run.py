"""`make bench`: the SPEC §13 figures on this machine, beside the raw limits of the same run.

    python -m bench.run [--quick] [--output BENCHMARKS.md]

Starts the embedded stack and the four services on free 127.0.0.1 ports in a temporary
directory, drives load from a separate process (`bench.load`), prints one table and writes it
with the machine facts to the output file. Everything is bounded in time; the stack is stopped
whatever happens.
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from eventkit.devstack import SERVICES, Stack  # noqa: E402

ROWS = (
    "intake batch throughput",
    "intake batch timeline lag",
    "single POST rate",
    "single POST p50",
    "single POST p99",
    "freshness p50",
    "freshness p99",
    "rebuild (replay notification)",
    "timeline read p50",
    "timeline read p99",
    "raw aiokafka produce",
    "raw asyncpg COPY",
    "eventsourcing append (peer)",
    *(f"RSS {name}" for name in SERVICES),
)


@dataclass
class Row:
    name: str
    value: str
    target: str = ""
    ratio: str = ""


@dataclass
class Plan:
    batch_s: float
    single_s: float
    fresh_s: float
    read_events: int
    read_s: float
    raw_s: float
    peer_cap_s: float


FULL = Plan(batch_s=60, single_s=20, fresh_s=20, read_events=10_000, read_s=10, raw_s=10, peer_cap_s=60)
QUICK = Plan(batch_s=5, single_s=3, fresh_s=3, read_events=500, read_s=3, raw_s=2, peer_cap_s=5)


def load(stack: Stack, mode: str, timeout_s: float, *args: str) -> dict[str, Any]:
    """Run one `bench.load` mode in its own process and return its JSON answer."""
    readers = ",".join(stack.services[name].url for name in SERVICES)
    env = {**os.environ, "BENCH_API_KEY": stack.admin_key, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench.load", mode, "--intake", stack.services["intake"].url, "--readers", readers]
    out = subprocess.run([*cmd, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"bench.load {mode} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {mode}: {result}", file=sys.stderr, flush=True)
    return result


async def message_size(bootstrap: str) -> int:
    """The size of one interaction message as intake produced it (600 bytes if none is found)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from contracts.topics import ALL_EVENT_TOPICS

    topic = next((t for t in ALL_EVENT_TOPICS if "interaction" in t), ALL_EVENT_TOPICS[0])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        batches = await consumer.getmany(timeout_ms=3000, max_records=10)
        for records in batches.values():
            for r in records:
                return len(r.value or b"") + len(r.key or b"")
    finally:
        await consumer.stop()
    return 600


async def raw_kafka(bootstrap: str, size: int, duration_s: float) -> float:
    from aiokafka import AIOKafkaProducer

    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, enable_idempotence=False)
    await producer.start()
    try:
        payload = b"x" * size
        await producer.send_and_wait(topic, payload)  # creates the topic
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < duration_s:
            futures = [await producer.send(topic, payload, key=str(i).encode()) for i in range(5000)]
            await asyncio.gather(*futures)
            sent += len(futures)
        return sent / (time.monotonic() - start)
    finally:
        await producer.stop()


async def raw_copy(dsn: str, size: int, duration_s: float) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_scratch (id bigint, payload text)")
        rows = [(i, "x" * size) for i in range(10_000)]
        copied = 0
        start = time.monotonic()
        while time.monotonic() - start < duration_s:
            await conn.copy_records_to_table("bench_scratch", records=rows, columns=["id", "payload"])
            copied += len(rows)
        rate = copied / (time.monotonic() - start)
        await conn.execute("DROP TABLE bench_scratch")
        return rate
    finally:
        await conn.close()


def peer_eventsourcing(stack: Stack, events: int, cap_s: float) -> tuple[float | None, str]:
    """eventsourcing's PostgreSQL recorder: new aggregates saved 1,000 per call (like a batch)."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate
    except ImportError as e:
        return None, f"eventsourcing not installed ({e})"
    from eventkit.db import ensure_database

    dsn = stack.postgres.dsn("bench_eventsourcing")
    asyncio.run(ensure_database(dsn))

    class Note(Aggregate):
        def __init__(self, content: str) -> None:
            self.content = content

    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": "bench_eventsourcing",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(stack.postgres.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "",
        "CREATE_TABLE": "y",
    }
    app: Any = Application(env=env)
    try:
        content = "x" * 200
        done = 0
        start = time.monotonic()
        while done < events and time.monotonic() - start < cap_s:
            app.save(*[Note(content) for _ in range(1000)])
            done += 1000
        return done / (time.monotonic() - start), f"{done:,} events"
    finally:
        app.close()


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 2**20


def fmt(x: float | None, unit: str, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f} {unit}"


def ratio(a: float | None, b: float | None) -> str:
    return "" if not a or not b else f"{a / b:.2f}"


def measure(plan: Plan, data_dir: Path) -> tuple[list[Row], dict[str, str]]:
    env = {
        "RATE_LIMIT_PER_KEY_RPS": "1000000",
        "RATE_LIMIT_PER_KEY_BURST": "1000000",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    stack = Stack(data_dir, pg_port=0, kafka_port=0, service_ports={}, env=env)
    notes: dict[str, str] = {}
    try:
        stack.start_infra()
        stack.start_services()
        print("stack ready; measuring ...", file=sys.stderr, flush=True)
        b = load(stack, "batch", plan.batch_s + 420, "--duration", str(plan.batch_s), "--concurrency", "4")
        s = load(stack, "single", plan.single_s + 60, "--duration", str(plan.single_s), "--concurrency", "32")
        f = load(stack, "fresh", plan.fresh_s + 120, "--duration", str(plan.fresh_s), "--rate", "500")
        seeded = load(stack, "seed", 300, "--events", str(plan.read_events))
        r = load(stack, "read", plan.read_s + 60, "--customer", seeded["customer_id"], "--rate", "200",
                 "--duration", str(plan.read_s))  # fmt: skip

        os.environ["CRM_NOTIFICATION_DATABASE_URL"] = stack.postgres.dsn("crm_notification")
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = stack.broker.bootstrap
        from eventkit.cli import replay

        captured = io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stdout(captured):
            asyncio.run(asyncio.wait_for(replay("notification"), 600))
        replay_s = time.monotonic() - t0
        m = re.search(r"replayed ([\d,]+) messages", captured.getvalue())
        replayed = int(m.group(1).replace(",", "")) if m else 0
        rebuild = replayed / replay_s
        notes["rebuild"] = f"{replayed:,} messages in {replay_s:.1f} s"

        size = asyncio.run(message_size(stack.broker.bootstrap))
        notes["payload"] = f"{size} bytes"
        kafka = asyncio.run(raw_kafka(stack.broker.bootstrap, size, plan.raw_s))
        copy = asyncio.run(raw_copy(stack.postgres.dsn("crm_intake"), size, plan.raw_s))
        peer, peer_note = peer_eventsourcing(stack, max(b["accepted"], 1000), plan.peer_cap_s)
        notes["peer"] = peer_note
        rss = {name: rss_mb(svc.proc.pid) for name, svc in stack.services.items() if svc.proc is not None}
    finally:
        stack.stop()

    rows = [
        Row(ROWS[0], fmt(b["rate"], "events/s"), "≥ 10,000 events/s", ratio(b["rate"], kafka) + " of raw produce"),
        Row(ROWS[1], fmt(b["lag_s"], "s", 2), "< 5 s"),
        Row(ROWS[2], fmt(s["rate"], "req/s"), "≥ 1,500 req/s", ratio(s["rate"], kafka) + " of raw produce"),
        Row(ROWS[3], fmt(s["p50_ms"], "ms", 1)),
        Row(ROWS[4], fmt(s["p99_ms"], "ms", 1), "< 50 ms"),
        Row(ROWS[5], fmt(f["p50_ms"], "ms", 1), "< 30 ms"),
        Row(ROWS[6], fmt(f["p99_ms"], "ms", 1), "< 150 ms"),
        Row(ROWS[7], fmt(rebuild, "events/s"), "≥ 50,000 events/s", ratio(rebuild, copy) + " of raw COPY"),
        Row(ROWS[8], fmt(r["p50_ms"], "ms", 1)),
        Row(ROWS[9], fmt(r["p99_ms"], "ms", 1), "< 10 ms"),
        Row(ROWS[10], fmt(kafka, "msg/s"), "raw limit"),
        Row(ROWS[11], fmt(copy, "rows/s"), "raw limit"),
        Row(
            ROWS[12],
            fmt(peer, "events/s") if peer else f"skipped: {peer_note}",
            "peer",
            f"batch intake = {ratio(b['rate'], peer)}x peer" if peer else "",
        ),
        *(Row(f"RSS {name}", fmt(rss.get(name), "MiB")) for name in SERVICES),
    ]
    notes["batch"] = f"{b['accepted']:,} items in {b['elapsed_s']:.1f} s, {b['errors']} failed batches"
    notes["single"] = f"{s['requests']:,} requests, {s['errors']} errors"
    notes["fresh"] = (
        f"{f['sent']:,} sent at {f['rate']:.0f}/s, {f['samples']} samples, {f['missed']} missed or cut off,"
        f" {f['skipped_over_128_in_flight']:,} not sent (128 already in flight)"
    )
    notes["read"] = f"{r['requests']:,} reads of a {plan.read_events:,}-event customer, {r['errors']} errors"
    return rows, notes


def table(rows: list[Row]) -> str:
    lines = ["| figure | measured | target (SPEC §13) | ratio |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.value} | {r.target} | {r.ratio} |" for r in rows]
    return "\n".join(lines)


def machine(load_before: float, load_after: float) -> str:
    mem = psutil.virtual_memory().total / 2**30
    return "\n".join(
        [
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- cores: {os.cpu_count()} ({platform.processor() or platform.machine()})",
            f"- memory: {mem:.1f} GiB",
            f"- Python: {platform.python_version()} on {platform.platform()}",
            f"- 1-min load average: {load_before:.2f} before, {load_after:.2f} after",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (a smoke test, not a measurement)")
    p.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
        rows, notes = measure(plan, Path(tmp))
    load_after = os.getloadavg()[0]
    text = table(rows)
    print(text)
    details = "\n".join(f"- {k}: {v}" for k, v in notes.items())
    mode = "quick (smoke test; figures not meaningful)" if a.quick else "full"
    keep = ""
    if a.output.exists():  # keep a hand-written "what bounds each figure" section
        old = a.output.read_text()
        i = old.find("## What bounds each figure")
        keep = "\n" + old[i:] if i >= 0 else ""
    a.output.write_text(
        f"# Benchmarks\n\n`make bench` ({mode} run), embedded stack and all four services.\n\n"
        f"## Machine\n\n{machine(load_before, load_after)}\n\n## Results\n\n{text}\n\n## Details\n\n{details}\n{keep}"
    )
    print(f"written to {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
