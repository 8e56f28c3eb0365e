"""`make bench`: the docs/product.md §13 figures on this machine, beside the raw limits of the same run.

    python -m bench.run [--quick] [--output BENCHMARKS.md]
                        [--only batch|single|freshness|read|campaign|rebuild|scale-out]
                        [--campaign-customers N]

`--only` runs one scenario on a stack of its own and prints its rows and CPU rows (without the
raw limits, which need the whole run's log). Without it, every scenario runs on one stack, then
the scale-out (bench/scaleout.py) on a stack of its own.

Starts the embedded stack and the four services on free 127.0.0.1 ports in a temporary
directory, drives load from a separate process (`bench.load`), prints one table and writes it
with the machine facts to the output file. Everything is bounded in time; the stack is stopped
whatever happens.
"""

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from crmtools.devstack import SERVICES, Stack  # noqa: E402

from bench import campaign, cpu, pipeline, scaleout  # noqa: E402
from bench.drive import load, rss_mb, stack_pids, vacuum  # noqa: E402
from bench.raw import (  # noqa: E402
    PEER_DATABASE,
    peer_eventsourcing,
    raw_copy,
    raw_produce,
    raw_produce_one_by_one,
    timeline_rows,
)
from bench.rebuild import read_log  # noqa: E402
from bench.rebuild import seed as seed_log  # noqa: E402
from bench.rows import (  # noqa: E402
    CPU_HEADING,
    CPU_INTRO,
    FRESH_RATES,
    Raw,
    Rebuild,
    Report,
    Row,
    batch_report,
    campaign_rows,
    cpu_table,
    fmt,
    fresh_report,
    read_report,
    rebuild_report,
    scaleout_report,
    single_report,
    table,
)

SCENARIOS = ("batch", "single", "freshness", "read", "campaign", "rebuild", "scale-out")
ALIASES = {"fresh": "freshness"}  # bench.load's name for it


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
    scaleout_s: float  # each of the two batches of the scale-out


FULL = Plan(batch_s=60, single_s=20, fresh_s=20, read_events=10_000, read_s=10, raw_s=10, peer_cap_s=60,
            rebuild_events=1_000_000, pipeline_events=150_000, campaign_customers=10_000,
            scaleout_s=30)  # fmt: skip
QUICK = Plan(batch_s=5, single_s=3, fresh_s=3, read_events=500, read_s=3, raw_s=2, peer_cap_s=5,
             rebuild_events=60_000, pipeline_events=5_000, campaign_customers=200,
             scaleout_s=3)  # fmt: skip
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


def run_batch(stack: Stack, plan: Plan, duration_s: float | None = None) -> dict[str, Any]:
    duration = plan.batch_s if duration_s is None else duration_s
    return load(stack, "batch", duration + 420, "--duration", str(duration), "--concurrency", "4")


def run_single(stack: Stack, plan: Plan) -> dict[str, Any]:
    return load(stack, "single", plan.single_s + 240, "--duration", str(plan.single_s), "--concurrency", "32",
                "--drain-timeout", "180")  # fmt: skip


def run_fresh(stack: Stack, plan: Plan, rate: int) -> dict[str, Any]:
    return load(stack, "fresh", plan.fresh_s + 300, "--duration", str(plan.fresh_s), "--rate", str(rate),
                "--drain-timeout", "180")  # fmt: skip


def run_read(stack: Stack, plan: Plan) -> dict[str, Any]:
    seeded = load(stack, "seed", 600, "--events", str(plan.read_events))
    vacuum(stack)
    return load(stack, "read", plan.read_s + 240, "--customer", seeded["customer_id"], "--rate", "200",
                "--duration", str(plan.read_s), "--drain-timeout", "180")  # fmt: skip


def run_rebuild(stack: Stack, plan: Plan, also_vacuum: Sequence[str] = ()) -> Rebuild:
    """Top the log up to the plan's size and time `crm replay notification` (services stopped)."""
    log = asyncio.run(seed_log(stack.broker.bootstrap, plan.rebuild_events))
    print(f"  rebuild log: {log}", file=sys.stderr, flush=True)
    vacuum(stack, also_vacuum)
    seconds, replayed, not_applicable, progress, cpu_s = replay_rebuild(stack, 1800)
    print(f"  rebuild: {replayed:,} in {seconds:.1f} s", file=sys.stderr, flush=True)
    return Rebuild(seconds, replayed, not_applicable, progress, cpu_s, log)


def stop_services(stack: Stack) -> None:
    # The services would otherwise consume the rebuild's copies of the log, and the raw limits
    # and the peer get the machine to themselves.
    for svc in stack.services.values():
        svc.stop()


def measure_only(scenario: str, plan: Plan, campaign_rate: float, data_dir: Path) -> Report:
    """One scenario alone (`--only`), on a stack of its own: its rows and CPU rows, without the raw
    limits (they need the whole run's log and the services stopped)."""
    env = {**STACK_ENV, "CAMPAIGN_RATE_PER_S": f"{campaign_rate:g}"}
    stack = Stack(data_dir, pg_port=0, kafka_port=0, service_ports={}, env=env)
    try:
        stack.start_infra()
        stack.start_services()
        print(f"stack ready; measuring {scenario} ...", file=sys.stderr, flush=True)
        if scenario == "batch":
            return batch_report(run_batch(stack, plan))
        if scenario == "single":
            return single_report(run_single(stack, plan))
        if scenario == "freshness":
            by_rate = {}
            for rate in FRESH_RATES:
                by_rate[rate] = run_fresh(stack, plan, rate)
                vacuum(stack)
            return fresh_report(by_rate)
        if scenario == "read":
            return read_report(run_read(stack, plan), plan.read_events)
        if scenario == "campaign":
            c = send_campaign(stack, plan.campaign_customers)
            return Report(campaign_rows(c), [], {"campaign": campaign.note(c)})
        if scenario == "rebuild":
            # A short batch puts the services' own messages on the log, which is then topped up.
            run_batch(stack, plan, min(plan.batch_s, 10))
            stop_services(stack)
            return rebuild_report(run_rebuild(stack, plan), plan.rebuild_events)
        if scenario == "scale-out":
            return scaleout_report(*scaleout.measure(stack, plan.scaleout_s))
        raise ValueError(f"unknown scenario {scenario}")
    finally:
        stack.stop()


def measure(plan: Plan, data_dir: Path) -> Report:
    stack = Stack(data_dir, pg_port=0, kafka_port=0, service_ports={}, env=STACK_ENV)
    try:
        stack.start_infra()
        stack.start_services()
        print("stack ready; measuring ...", file=sys.stderr, flush=True)
        b = run_batch(stack, plan)
        # Each scenario starts once every database is vacuumed and the stack has projected what
        # the ones before sent (180 s at most, bench.load waits).
        vacuum_s = [vacuum(stack)]
        s = run_single(stack, plan)
        vacuum_s.append(vacuum(stack))
        fresh = {}
        for rate in FRESH_RATES:
            fresh[rate] = run_fresh(stack, plan, rate)
            vacuum_s.append(vacuum(stack))
        r = run_read(stack, plan)
        vacuum_s.append(vacuum(stack))
        c = send_campaign(stack, plan.campaign_customers)
        rss = {name: rss_mb(svc.proc.pid) for name, svc in stack.services.items() if svc.proc is not None}

        stop_services(stack)
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
        raw = Raw(produce, produce_one, copy, pipe, peer)
        print(f"  raw: produce {produce:,.0f}/s, one by one {produce_one:,.0f}/s, COPY {copy:,.0f} rows/s,"
              f" pipeline {pipe['rate']:,.0f} events/s;"
              f" peer {peer}", file=sys.stderr, flush=True)  # fmt: skip
        rb = run_rebuild(stack, plan, [PEER_DATABASE])
    finally:
        stack.stop()
    # Last, on a stack of its own: the rest of the run measured as before, on one instance each.
    scaled = scaleout.measure_alone(data_dir / "scale-out", STACK_ENV, plan.scaleout_s)

    report = batch_report(b, raw).add(single_report(s, raw)).add(fresh_report(fresh))
    rebuild = rebuild_report(rb, plan.rebuild_events, raw)
    report.rows += rebuild.rows
    report.add(read_report(r, plan.read_events))
    report.rows += campaign_rows(c)
    report.rows += [Row(f"RSS {name}", fmt(rss.get(name), "MiB"), "≤ 150 MiB") for name in SERVICES]
    report.costs.append(rebuild.costs[0])
    report.notes["batch"] += (
        f"; single, fresh, read, the campaign, the raw limits and the rebuild each started after"
        f" {', '.join(f'{v:.0f} s' for v in vacuum_s)} of VACUUM (ANALYZE) of every service database"
        " (and the peer's, before the rebuild)"
    )
    report.notes["campaign"] = campaign.note(c)
    sizes = [len(m.value or b"") + len(m.key or b"") + sum(len(k) + len(v) for k, v in m.headers) for m in sample]
    report.notes["raw limits and peer"] = (
        f"the first {len(sample):,} messages the services put on the event topics in this run"
        f" (on average {sum(sizes) / max(len(sizes), 1):,.0f} bytes with key and headers),"
        f" produced again to a scratch topic; their {len(rows_sample):,} timeline rows COPYed into a table shaped"
        f" like the timeline (primary key included); eventsourcing {peer.note}"
    )
    report.notes["raw pipeline"] = (
        f"{pipe['events']:,} copies of those messages (new event ids), each COPYed into a store table and a"
        f" timeline table (intake's, written as events are stored) and produced (1,000 at a time) to a"
        f" scratch topic of {pipe['partitions']} partitions, and read by"
        f" {pipeline.READERS} reader processes each COPYing them into a table of its own, all at once:"
        f" {pipe['seconds']:.1f} s from the first COPY to the last reader's last (`bench/pipeline.py`)"
    )
    report.notes["rebuild"] = rebuild.notes["rebuild"]
    return report.add(scaleout_report(*scaled))


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


def only(scenario: str, plan: Plan, campaign_rate: float, output: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
        report = measure_only(scenario, plan, campaign_rate, Path(tmp))
    text = table(report.rows)
    if report.costs:
        text += f"\n\n{CPU_HEADING}\n\n{cpu_table(report.costs, os.cpu_count() or 1)}"
    text += "\n\n" + "\n".join(f"- {k}: {v}" for k, v in report.notes.items())
    print(text)
    if output is not None:
        output.write_text(f"# Benchmarks\n\n`python -m bench.run --only {scenario}`\n\n{text}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (a smoke test, not a measurement)")
    p.add_argument("--output", type=Path, default=None, help="default BENCHMARKS.md; --only writes none unless given")
    p.add_argument("--only", choices=[*SCENARIOS, *ALIASES], help="run this scenario alone and print its rows")
    p.add_argument("--campaign-customers", type=int, help="the campaign's audience (default 10,000; quick 200)")
    p.add_argument(
        "--campaign-rate",
        type=float,
        default=CAMPAIGN_RATE_PER_S,
        help=f"the stack's CAMPAIGN_RATE_PER_S with --only (default {CAMPAIGN_RATE_PER_S})",
    )
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    if a.campaign_customers:
        plan = replace(plan, campaign_customers=a.campaign_customers)
    if a.only:
        return only(ALIASES.get(a.only, a.only), plan, a.campaign_rate, a.output)
    a.output = a.output or ROOT / "BENCHMARKS.md"
    load_before = os.getloadavg()[0]
    speed = python_speed()
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
        report = measure(plan, Path(tmp))
    load_after = os.getloadavg()[0]
    text = table(report.rows)
    costs_text = cpu_table(report.costs, os.cpu_count() or 1)
    print(text)
    print(f"\n{costs_text}")
    details = "\n".join(f"- {k}: {v}" for k, v in report.notes.items())
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
