"""`make bench`: the docs/product.md §13 figures on this machine, beside the raw limits of the same run.

    python -m bench.run [--quick] [--output BENCHMARKS.md] [--only campaign [--campaign-customers N]]

Starts the embedded stack and the four services on free 127.0.0.1 ports in a temporary
directory, drives load from a separate process (`bench.load`), prints one table and writes it
with the machine facts to the output file. Everything is bounded in time; the stack is stopped
whatever happens.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from crmtools.devstack import SERVICES, Stack  # noqa: E402

from bench import campaign, cpu, pipeline  # noqa: E402
from bench.rebuild import Message, read_log  # noqa: E402
from bench.rebuild import seed as seed_log  # noqa: E402

ROWS = (
    "intake batch throughput",
    "intake batch timeline lag",
    "single POST rate",
    "single POST p50",
    "single POST p99",
    "freshness p50",
    "freshness p99",
    "rebuild (crm replay notification)",
    "timeline read p50",
    "timeline read p99",
    *(f"RSS {name}" for name in SERVICES),
)


@dataclass
class Row:
    name: str
    value: str
    target: str = ""
    limit: str = ""  # the raw limit measured in the same run, where one applies
    ratio: str = ""  # measured / that limit
    peer: str = ""  # the eventsourcing library doing the same with the same events


@dataclass
class Plan:
    batch_s: float
    single_s: float
    fresh_s: float
    read_events: int
    read_s: float
    raw_s: float
    peer_cap_s: float
    rebuild_events: int
    pipeline_events: int
    campaign_customers: int


FULL = Plan(batch_s=60, single_s=20, fresh_s=20, read_events=10_000, read_s=10, raw_s=10, peer_cap_s=60,
            rebuild_events=1_000_000, pipeline_events=150_000, campaign_customers=10_000)  # fmt: skip
QUICK = Plan(batch_s=5, single_s=3, fresh_s=3, read_events=500, read_s=3, raw_s=2, peer_cap_s=5,
             rebuild_events=60_000, pipeline_events=5_000, campaign_customers=200)  # fmt: skip
PEER_DATABASE = "bench_eventsourcing"
# Above what the sender manages on this machine, so the campaign row is its speed, not the pace;
# batches are a fifth of it (1,000 targets), as a production rate's would be a fifth of that one.
CAMPAIGN_RATE_PER_S = 5000
CAMPAIGN_FRESH_RATE = 100  # the interactions/s of the freshness probe beside the campaign
STACK_ENV = {
    "RATE_LIMIT_PER_KEY_RPS": "1000000",
    "RATE_LIMIT_PER_KEY_BURST": "1000000",
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "CAMPAIGN_RATE_PER_S": str(CAMPAIGN_RATE_PER_S),
}


def load(stack: Stack, mode: str, timeout_s: float, *args: str, module: str = "bench.load") -> dict[str, Any]:
    """Run one `bench.load` (or `module`) mode in its own process and return its JSON answer."""
    readers = ",".join(stack.services[name].url for name in SERVICES)
    env = {**os.environ, "BENCH_API_KEY": stack.admin_key, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", module, mode, "--intake", stack.services["intake"].url, "--readers", readers,
           "--cpu-pids", cpu.format_pids(stack_pids(stack))]  # fmt: skip
    out = subprocess.run([*cmd, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"bench.load {mode} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {mode}: {result}", file=sys.stderr, flush=True)
    return result


def stack_pids(stack: Stack) -> dict[str, int]:
    """The processes whose CPU a scenario reports: PostgreSQL (its backends are its children),
    the broker and each service."""
    # Servers started elsewhere (the stack's external mode) have no process here to read.
    procs = {"postgres": getattr(stack.postgres, "proc", None), "broker": getattr(stack.broker, "proc", None)}
    procs.update({name: svc.proc for name, svc in stack.services.items()})
    return {name: proc.pid for name, proc in procs.items() if proc is not None}


@dataclass
class CpuCost:
    """What one unit of a scenario's work cost in CPU, all processes together (bench/cpu.py)."""

    scenario: str
    unit: str  # "event", "request"
    units: int
    cpu_s: dict[str, float]  # by process, over the scenario's window
    window_s: float
    measured: float  # the scenario's rate, units/s
    target: float | None = None  # the rate docs/product.md §13 asks for, where it asks for one

    def per_unit_us(self) -> float:
        return sum(self.cpu_s.values()) / max(self.units, 1) * 1e6


def cpu_table(costs: Sequence[CpuCost], cores: int) -> str:
    """Per scenario: CPU per unit, all processes and by process; how busy the cores were; the
    rate that cost allows with every core busy; and what the target would allow per unit."""
    lines = [
        "| scenario | CPU per unit, all processes | by process (µs per unit) | cores busy"
        f" | at most on {cores} cores | measured | target needs at most |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        per_unit = c.per_unit_us()
        split = ", ".join(f"{name} {seconds / max(c.units, 1) * 1e6:,.0f}"
                          for name, seconds in sorted(c.cpu_s.items(), key=lambda kv: -kv[1]) if seconds)  # fmt: skip
        busy = sum(c.cpu_s.values()) / max(c.window_s * cores, 1e-9)
        ceiling = cores / (per_unit / 1e6) if per_unit else None
        needs = f"{cores / c.target * 1e6:,.0f} µs per {c.unit} ({c.target:,.0f}/s)" if c.target else ""
        lines.append(
            f"| {c.scenario} | {per_unit:,.0f} µs | {split} | {busy:.0%} | {fmt(ceiling, c.unit + 's/s')}"
            f" | {fmt(c.measured, c.unit + 's/s')} | {needs} |"
        )
    return "\n".join(lines)


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


def replay_rebuild(stack: Stack, timeout_s: float) -> tuple[float, int, int, str, dict[str, float]]:
    """`crm replay notification` as an operator runs it, in its own process: (wall seconds of the
    whole command, messages replayed, messages not applicable, its summary line, CPU
    seconds of the replay with its workers, PostgreSQL and the broker)."""
    env = {
        **os.environ,
        "CRM_NOTIFICATION_DATABASE_URL": stack.postgres.dsn("crm_notification"),
        "KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT)]),
    }
    servers = {name: pid for name, pid in stack_pids(stack).items() if name in ("postgres", "broker")}
    servers_meter, children_before = cpu.Meter(servers), cpu.children_seconds()
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "crmtools.cli", "replay", "notification"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout_s)  # fmt: skip
    elapsed = time.monotonic() - t0
    # the replay and its worker processes: this process's only children meanwhile, all ended
    cpu_s = {"crm replay": cpu.children_seconds() - children_before, **servers_meter.spent()}
    if out.returncode != 0:
        raise RuntimeError(f"crm replay failed: {out.stderr[-2000:]}")
    m = re.search(r"replayed ([\d,]+) messages .*\((\d+) not applicable\)", out.stdout)
    if m is None:
        raise RuntimeError(f"crm replay said: {out.stdout[-500:]}")
    # Not on a terminal the progress bar is quiet: the summary (count, time, rate) is on stdout.
    progress = next(line for line in out.stdout.splitlines() if line.startswith("replayed "))
    return elapsed, int(m.group(1).replace(",", "")), int(m.group(2)), progress, cpu_s


def send_campaign(stack: Stack, customers: int) -> dict[str, Any]:
    """The campaign scenario (bench/campaign.py) in its own process."""
    notification = stack.services["notification"]
    return load(stack, "campaign", 3600, "--notification", notification.url, "--customers", str(customers),
                "--campaign-rate", notification.env["CAMPAIGN_RATE_PER_S"], "--rate", str(CAMPAIGN_FRESH_RATE),
                "--drain-timeout", "300", module="bench.campaign")  # fmt: skip


def campaign_rows(result: dict[str, Any]) -> list[Row]:
    return [Row(name, value) for name, value in campaign.rows(result)]


def measure_campaign(customers: int, rate: float, data_dir: Path) -> tuple[list[Row], dict[str, str]]:
    """The campaign scenario alone (`--only campaign`), on a stack of its own."""
    env = {**STACK_ENV, "CAMPAIGN_RATE_PER_S": f"{rate:g}"}
    stack = Stack(data_dir, pg_port=0, kafka_port=0, service_ports={}, env=env)
    try:
        stack.start_infra()
        stack.start_services()
        result = send_campaign(stack, customers)
    finally:
        stack.stop()
    return campaign_rows(result), {"campaign": campaign.note(result)}


def measure(plan: Plan, data_dir: Path) -> tuple[list[Row], list[CpuCost], dict[str, str]]:
    stack = Stack(data_dir, pg_port=0, kafka_port=0, service_ports={}, env=STACK_ENV)
    notes: dict[str, str] = {}
    try:
        stack.start_infra()
        stack.start_services()
        print("stack ready; measuring ...", file=sys.stderr, flush=True)
        b = load(stack, "batch", plan.batch_s + 420, "--duration", str(plan.batch_s), "--concurrency", "4")
        # Each scenario starts once every database is vacuumed and the stack has projected what
        # the ones before sent (180 s at most, bench.load waits).
        vacuum_s = [vacuum(stack)]
        s = load(stack, "single", plan.single_s + 240, "--duration", str(plan.single_s), "--concurrency", "32",
                 "--drain-timeout", "180")  # fmt: skip
        vacuum_s.append(vacuum(stack))
        f = load(stack, "fresh", plan.fresh_s + 300, "--duration", str(plan.fresh_s), "--rate", "500",
                 "--drain-timeout", "180")  # fmt: skip
        seeded = load(stack, "seed", 600, "--events", str(plan.read_events))
        vacuum_s.append(vacuum(stack))
        r = load(stack, "read", plan.read_s + 240, "--customer", seeded["customer_id"], "--rate", "200",
                 "--duration", str(plan.read_s), "--drain-timeout", "180")  # fmt: skip
        vacuum_s.append(vacuum(stack))
        c = send_campaign(stack, plan.campaign_customers)
        rss = {name: rss_mb(svc.proc.pid) for name, svc in stack.services.items() if svc.proc is not None}

        # From here on the services are stopped: they would otherwise consume the rebuild's
        # copies of the log, and the raw limits and the peer get the machine to themselves.
        for svc in stack.services.values():
            svc.stop()
        # Vacuumed like the scenarios: autovacuum working through what the read scenario (and,
        # before the replay, the peer) left took ~10 % off the rebuild (54,000/s against 62,000).
        vacuum_s.append(vacuum(stack))
        bootstrap = stack.broker.bootstrap
        sample, have = asyncio.run(read_log(bootstrap, 50_000))
        print(f"  sample: {len(sample):,} of {have:,} messages on the event topics", file=sys.stderr, flush=True)
        produce = asyncio.run(raw_produce(bootstrap, sample, plan.raw_s))
        produce_one = asyncio.run(raw_produce_one_by_one(bootstrap, sample, plan.raw_s, 32))
        rows_sample = timeline_rows(sample)
        copy = asyncio.run(raw_copy(stack.postgres.dsn("crm_notification"), rows_sample, plan.raw_s))
        pipe = pipeline.measure(bootstrap, stack.postgres.dsn("crm_notification"), sample, plan.pipeline_events)
        peer = peer_eventsourcing(stack, sample, max(b["accepted"], 1000), plan.peer_cap_s)
        print(f"  raw: produce {produce:,.0f}/s, one by one {produce_one:,.0f}/s, COPY {copy:,.0f} rows/s,"
              f" pipeline {pipe['rate']:,.0f} events/s;"
              f" peer {peer}", file=sys.stderr, flush=True)  # fmt: skip
        log = asyncio.run(seed_log(bootstrap, plan.rebuild_events))
        print(f"  rebuild log: {log}", file=sys.stderr, flush=True)
        vacuum_s.append(vacuum(stack, [PEER_DATABASE]))
        replay_s, replayed, not_applicable, progress, replay_cpu = replay_rebuild(stack, 1800)
        rebuild = replayed / replay_s
        print(f"  rebuild: {replayed:,} in {replay_s:.1f} s", file=sys.stderr, flush=True)
    finally:
        stack.stop()

    sizes = [len(m.value or b"") + len(m.key or b"") + sum(len(k) + len(v) for k, v in m.headers) for m in sample]
    rows = [
        Row(ROWS[0], fmt(b["rate"], "events/s"), "≥ 10,000 events/s",
            f"produce {fmt(produce, 'msg/s')}; COPY {fmt(copy, 'rows/s')}; pipeline {fmt(pipe['rate'], 'events/s')}",
            f"{ratio(b['rate'], produce)} of produce; {ratio(b['rate'], pipe['rate'])} of pipeline",
            f"{fmt(peer.batch, 'events/s')} (1,000 per call); intake = {ratio(b['rate'], peer.batch)}x"),
        Row(ROWS[1], fmt(b["lag_s"], "s", 2), "< 5 s"),
        Row(ROWS[2], fmt(s["rate"], "req/s"), "≥ 1,500 req/s", f"send_and_wait x 32: {fmt(produce_one, 'msg/s')}",
            ratio(s["rate"], produce_one), f"{fmt(peer.single, 'events/s')} (one per call, one thread);"
            f" intake = {ratio(s['rate'], peer.single)}x"),
        Row(ROWS[3], fmt(s["p50_ms"], "ms", 1)),
        Row(ROWS[4], fmt(s["p99_ms"], "ms", 1), "< 50 ms"),
        Row(ROWS[5], fmt(f["p50_ms"], "ms", 1), "< 30 ms"),
        Row(ROWS[6], fmt(f["p99_ms"], "ms", 1), "< 150 ms"),
        Row(ROWS[7], fmt(rebuild, "events/s"), "≥ 50,000 events/s", f"COPY {fmt(copy, 'rows/s')}",
            ratio(rebuild, copy), f"{fmt(peer.read, 'events/s')} read back; replay = {ratio(rebuild, peer.read)}x"),
        Row(ROWS[8], fmt(r["p50_ms"], "ms", 1)),
        Row(ROWS[9], fmt(r["p99_ms"], "ms", 1), "< 10 ms"),
        *campaign_rows(c),
        *(Row(f"RSS {name}", fmt(rss.get(name), "MiB")) for name in SERVICES),
    ]  # fmt: skip
    costs = [
        CpuCost("intake batch", "event", b["accepted"], b["cpu_s"], b["cpu_window_s"], b["rate"], 10_000),
        CpuCost("single POST at 32 clients", "request", s["requests"], s["cpu_s"], s["cpu_window_s"], s["rate"], 1_500),
        CpuCost("single POST paced (freshness)", "request", f["sent"], f["cpu_s"], f["cpu_window_s"], f["rate"]),
        CpuCost("timeline read at 200/s", "request", r["requests"], r["cpu_s"], r["cpu_window_s"], r["rate"]),
        CpuCost("rebuild (crm replay)", "event", replayed, replay_cpu, replay_s, rebuild, 50_000),
    ]
    notes["batch"] = (
        f"{b['accepted']:,} items in {b['elapsed_s']:.1f} s, {b['errors']} failed batches; single, fresh, read,"
        f" the campaign, the raw limits and the rebuild each started after {', '.join(f'{v:.0f} s' for v in vacuum_s)}"
        " of VACUUM (ANALYZE) of every service database (and the peer's, before the rebuild)"
    )
    notes["single"] = f"{s['requests']:,} requests, {s['errors']} errors; {idle_note(s)}"
    notes["fresh"] = (
        f"{f['sent']:,} sent at {f['rate']:.0f}/s (the first {f['warmup_s']:.0f} s not sampled: the ramp from idle),"
        f" {f['samples']} samples, {f['missed']} missed or cut off,"
        f" {f['skipped_over_128_in_flight']:,} not sent (128 already in flight); {idle_note(f)}"
    )
    notes["read"] = (
        f"{r['requests']:,} reads of the newest page of 50 of a {plan.read_events:,}-event customer"
        f" at {r['rate']:.0f}/s, {r['errors']} errors; {idle_note(r)}"
    )
    notes["campaign"] = campaign.note(c)
    notes["raw limits and peer"] = (
        f"the first {len(sample):,} messages the services put on the event topics in this run"
        f" (on average {sum(sizes) / max(len(sizes), 1):,.0f} bytes with key and headers),"
        f" produced again to a scratch topic; their {len(rows_sample):,} timeline rows COPYed into a table shaped"
        f" like the timeline (primary key included); eventsourcing {peer.note}"
    )
    notes["raw pipeline"] = (
        f"{pipe['events']:,} copies of those messages (new event ids), each COPYed into a store table and a"
        f" timeline table (intake's, written as events are stored) and produced (1,000 at a time) to a"
        f" scratch topic of {pipe['partitions']} partitions, and read by"
        f" {pipeline.READERS} reader processes each COPYing them into a table of its own, all at once:"
        f" {pipe['seconds']:.1f} s from the first COPY to the last reader's last (`bench/pipeline.py`)"
    )
    notes["rebuild"] = (
        f"the log topped up to {plan.rebuild_events:,} messages with copies of those (new event ids;"
        f" {log['had']:,} were there, {log['sent']:,} added in {log['seconds']:.0f} s), services stopped;"
        f" `crm replay notification` replayed {replayed:,} ({not_applicable} not applicable) in {replay_s:.1f} s"
        f" wall, process start included; its own last line: `{progress.strip()}`"
    )
    return rows, costs, notes


def vacuum(stack: Stack, also: Sequence[str] = ()) -> float:
    """Seconds to VACUUM (ANALYZE) every service database (and the `also` ones), so a scenario is
    not measured while autovacuum works through what the one before left (after the batch, its
    workers took a third of a core for minutes, and the outbox's dead rows made every relay poll
    walk them)."""

    async def run() -> float:
        start = time.monotonic()
        for name in [f"crm_{name}" for name in SERVICES] + list(also):
            conn = await asyncpg.connect(stack.postgres.dsn(name))
            try:
                await conn.execute("VACUUM (ANALYZE)")
            finally:
                await conn.close()
        return time.monotonic() - start

    took = asyncio.run(run())
    print(f"  vacuum: {took:.0f} s", file=sys.stderr, flush=True)
    return took


def idle_note(result: dict[str, Any]) -> str:
    reached = "reached" if result["idle"] else "NOT reached: measured on a busy stack"
    return (
        f"started after {result['idle_wait_s']:.1f} s of waiting for every consumer lag (the KPI stream's too)"
        f" and outbox backlog to reach 0 and no service to apply anything for a second ({reached})"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| figure | measured | target (SPEC §13) | raw limit, same run | ratio to limit | eventsourcing peer |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.name} | {r.value} | {r.target} | {r.limit} | {r.ratio} | {r.peer} |" for r in rows]
    return "\n".join(lines)


CPU_HEADING = "### CPU per unit of work, same run"
CPU_INTRO = (
    "Every process shares the machine's cores, so a figure can go no further than the CPU one unit of"
    " work costs in all of them together allows (user + system time of each process and its children,"
    " over the scenario's window; the batch's to the end of its drain; bench/cpu.py)."
)

CALIBRATION_LOOPS = 5_000_000


def python_speed() -> float:
    """Millions of iterations a second of a fixed pure-Python loop, best of three: how fast one
    core runs Python on this machine, so that runs on different machines can be compared (one
    machine of this project ran the same code's batch at ~3.5x the CPU per event of another)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(CALIBRATION_LOOPS):
            total += i & 7
        best = min(best, time.perf_counter() - t0)
    return CALIBRATION_LOOPS / best / 1e6


def machine(load_before: float, load_after: float, speed: float) -> str:
    mem = psutil.virtual_memory().total / 2**30
    return "\n".join(
        [
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- cores: {os.cpu_count()} ({platform.processor() or platform.machine()})",
            f"- memory: {mem:.1f} GiB",
            f"- Python: {platform.python_version()} on {platform.platform()}",
            f"- 1-min load average: {load_before:.2f} before, {load_after:.2f} after",
            f"- Python speed: {speed:.1f} M loop iterations/s on one core (bench.run.python_speed; compare"
            " runs on different machines by it)",
        ]
    )


def only_campaign(customers: int, rate: float, output: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
        rows, notes = measure_campaign(customers, rate, Path(tmp))
    text = table(rows) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items())
    print(text)
    if output is not None:
        output.write_text(f"# Benchmarks\n\n`python -m bench.run --only campaign`\n\n{text}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (a smoke test, not a measurement)")
    p.add_argument("--output", type=Path, default=None, help="default BENCHMARKS.md; --only writes none unless given")
    p.add_argument("--only", choices=["campaign"], help="run this scenario alone and print its rows")
    p.add_argument("--campaign-customers", type=int, help="the campaign's audience (default 10,000; quick 200)")
    p.add_argument(
        "--campaign-rate",
        type=float,
        default=CAMPAIGN_RATE_PER_S,
        help=f"with --only campaign: the stack's CAMPAIGN_RATE_PER_S (default {CAMPAIGN_RATE_PER_S})",
    )
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    if a.campaign_customers:
        plan = replace(plan, campaign_customers=a.campaign_customers)
    if a.only:
        return only_campaign(plan.campaign_customers, a.campaign_rate, a.output)
    a.output = a.output or ROOT / "BENCHMARKS.md"
    load_before = os.getloadavg()[0]
    speed = python_speed()
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
        rows, costs, notes = measure(plan, Path(tmp))
    load_after = os.getloadavg()[0]
    text = table(rows)
    costs_text = cpu_table(costs, os.cpu_count() or 1)
    print(text)
    print(f"\n{costs_text}")
    details = "\n".join(f"- {k}: {v}" for k, v in notes.items())
    mode = "quick (smoke test; figures not meaningful)" if a.quick else "full"
    keep = ""
    if a.output.exists():  # keep a hand-written "what bounds each figure" section
        old = a.output.read_text()
        i = old.find("## What bounds each figure")
        keep = "\n" + old[i:] if i >= 0 else ""
    a.output.write_text(
        f"# Benchmarks\n\n`make bench` ({mode} run), embedded stack and all four services.\n\n"
        f"## Machine\n\n{machine(load_before, load_after, speed)}\n\n"
        f"## Results\n\n{text}\n\n{CPU_HEADING}\n\n{CPU_INTRO}\n\n{costs_text}\n\n## Details\n\n{details}\n{keep}"
    )
    print(f"written to {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
