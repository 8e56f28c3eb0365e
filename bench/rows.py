"""The rows of `make bench`'s tables: each scenario's answer turned into its result rows, its CPU
rows and its note (pure, no stack), and the tables they make."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crmtools.devstack import SERVICES

from bench import campaign
from bench.raw import Peer
from bench.scaleout import Checks

# The target's pace first; 500/s kept beside it so runs before and after the change compare.
FRESH_RATES = (250, 500)


FRESH_TARGETS = ("≤ 50 ms", "≤ 150 ms")


SCALE_OUT_ROWS = (
    "batch to all caught up, 1 instance of case and analytics",
    "batch to all caught up, 2 instances of case and analytics",
)


def fresh_row(q: str, rate: int) -> str:
    return f"freshness {q} ({rate} events/s)"


ROWS = (
    "intake batch throughput",
    "intake batch timeline lag",
    "single POST rate",
    "single POST p50",
    "single POST p99",
    *(fresh_row(q, rate) for rate in FRESH_RATES for q in ("p50", "p99")),
    "rebuild (crm replay notification)",
    "timeline read p50",
    "timeline read p99",
    *(f"RSS {name}" for name in SERVICES),
    *SCALE_OUT_ROWS,
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
class CpuCost:
    """What one unit of a scenario's work cost in CPU, all processes together (bench/cpu.py)."""

    scenario: str
    unit: str  # "event", "request"
    units: int
    cpu_s: dict[str, float]  # by process, over the scenario's window
    window_s: float
    measured: float  # the scenario's rate, units/s
    target_us: float | None = None  # the CPU per unit docs/product.md §13 allows, where it names one

    def per_unit_us(self) -> float:
        return sum(self.cpu_s.values()) / max(self.units, 1) * 1e6


def cpu_table(costs: Sequence[CpuCost], cores: int) -> str:
    """Per scenario: CPU per unit, all processes and by process; how busy the cores were; the
    rate that cost allows with every core busy; and the CPU per unit §13 allows."""
    lines = [
        "| scenario | CPU per unit, all processes | by process (µs per unit) | cores busy"
        f" | at most on {cores} cores | measured | target (§13) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        per_unit = c.per_unit_us()
        split = ", ".join(f"{name} {seconds / max(c.units, 1) * 1e6:,.0f}"
                          for name, seconds in sorted(c.cpu_s.items(), key=lambda kv: -kv[1]) if seconds)  # fmt: skip
        busy = sum(c.cpu_s.values()) / max(c.window_s * cores, 1e-9)
        ceiling = cores / (per_unit / 1e6) if per_unit else None
        needs = f"≤ {c.target_us:,.0f} µs per {c.unit}" if c.target_us else ""
        lines.append(
            f"| {c.scenario} | {per_unit:,.0f} µs | {split} | {busy:.0%} | {fmt(ceiling, c.unit + 's/s')}"
            f" | {fmt(c.measured, c.unit + 's/s')} | {needs} |"
        )
    return "\n".join(lines)


def fmt(x: float | None, unit: str, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f} {unit}"


def ratio(a: float | None, b: float | None) -> str:
    return "" if not a or not b else f"{a / b:.2f}"


def campaign_rows(result: dict[str, Any]) -> list[Row]:
    return [Row(name, value) for name, value in campaign.rows(result)]


@dataclass
class Report:
    """What one or more scenarios measured: their result rows, CPU rows and notes."""

    rows: list[Row] = field(default_factory=list)
    costs: list[CpuCost] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, other: "Report") -> "Report":
        self.rows += other.rows
        self.costs += other.costs
        self.notes.update(other.notes)
        return self


@dataclass
class Raw:
    """The raw limits of the same run (full run only: they need the services stopped)."""

    produce: float
    produce_one: float
    copy: float
    pipe: dict[str, Any]
    peer: Peer


def batch_report(b: dict[str, Any], raw: Raw | None = None) -> Report:
    limit = ratio_ = peer = ""
    if raw is not None:
        limit = (f"produce {fmt(raw.produce, 'msg/s')}; COPY {fmt(raw.copy, 'rows/s')};"
                 f" pipeline {fmt(raw.pipe['rate'], 'events/s')}")  # fmt: skip
        ratio_ = f"{ratio(b['rate'], raw.produce)} of produce; {ratio(b['rate'], raw.pipe['rate'])} of pipeline"
        peer = f"{fmt(raw.peer.batch, 'events/s')} (1,000 per call); intake = {ratio(b['rate'], raw.peer.batch)}x"
    return Report(
        [Row("intake batch throughput", fmt(b["rate"], "events/s"), "≥ 6,000 events/s; ≥ 0.6 of pipeline", limit,
             ratio_, peer),
         Row("intake batch timeline lag", fmt(b["lag_s"], "s", 2), "< 5 s")],
        [CpuCost("intake batch", "event", b["accepted"], b["cpu_s"], b["cpu_window_s"], b["rate"], 300)],
        {"batch": f"{b['accepted']:,} items in {b['elapsed_s']:.1f} s, {b['errors']} failed batches"},
    )  # fmt: skip


def single_report(s: dict[str, Any], raw: Raw | None = None) -> Report:
    limit = ratio_ = peer = ""
    if raw is not None:
        limit, ratio_ = f"send_and_wait x 32: {fmt(raw.produce_one, 'msg/s')}", ratio(s["rate"], raw.produce_one)
        peer = (f"{fmt(raw.peer.single, 'events/s')} (one per call, one thread);"
                f" intake = {ratio(s['rate'], raw.peer.single)}x")  # fmt: skip
    return Report(
        [Row("single POST rate", fmt(s["rate"], "req/s"), "≥ 1,200 req/s", limit, ratio_, peer),
         Row("single POST p50", fmt(s["p50_ms"], "ms", 1)),
         Row("single POST p99", fmt(s["p99_ms"], "ms", 1), "≤ 60 ms")],
        [CpuCost("single POST at 32 clients", "request", s["requests"], s["cpu_s"], s["cpu_window_s"], s["rate"],
                 1_500)],
        {"single": f"{s['requests']:,} requests, {s['errors']} errors; {idle_note(s)}"},
    )  # fmt: skip


def fresh_report(by_rate: dict[int, dict[str, Any]]) -> Report:
    report = Report()
    for rate, f in by_rate.items():
        target = FRESH_TARGETS if rate == FRESH_RATES[0] else ("", "")
        report.rows += [Row(fresh_row("p50", rate), fmt(f["p50_ms"], "ms", 1), target[0]),
                        Row(fresh_row("p99", rate), fmt(f["p99_ms"], "ms", 1), target[1])]  # fmt: skip
        report.costs.append(CpuCost(f"single POST paced at {rate}/s (freshness)", "request", f["sent"], f["cpu_s"],
                                    f["cpu_window_s"], f["rate"]))  # fmt: skip
        report.notes[f"fresh {rate}/s"] = (
            f"{f['sent']:,} sent at {f['rate']:.0f}/s (the first {f['warmup_s']:.0f} s not sampled: the ramp from"
            f" idle), {f['samples']} samples, {f['missed']} missed or cut off,"
            f" {f['skipped_over_128_in_flight']:,} not sent (128 already in flight); {idle_note(f)}"
        )
    return report


def read_report(r: dict[str, Any], read_events: int) -> Report:
    return Report(
        [Row("timeline read p50", fmt(r["p50_ms"], "ms", 1)),
         Row("timeline read p99", fmt(r["p99_ms"], "ms", 1), "≤ 5 ms")],
        [CpuCost("timeline read at 200/s", "request", r["requests"], r["cpu_s"], r["cpu_window_s"], r["rate"])],
        {"read": f"{r['requests']:,} reads of the newest page of 50 of a {read_events:,}-event customer"
                 f" at {r['rate']:.0f}/s, {r['errors']} errors; {idle_note(r)}"},
    )  # fmt: skip


@dataclass
class Rebuild:
    seconds: float
    replayed: int
    not_applicable: int
    progress: str
    cpu_s: dict[str, float]
    log: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.replayed / self.seconds


def rebuild_report(rb: Rebuild, rebuild_events: int, raw: Raw | None = None) -> Report:
    limit = ratio_ = peer = ""
    if raw is not None:
        limit, ratio_ = f"COPY {fmt(raw.copy, 'rows/s')}", ratio(rb.rate, raw.copy)
        peer = f"{fmt(raw.peer.read, 'events/s')} read back; replay = {ratio(rb.rate, raw.peer.read)}x"
    log = rb.log
    return Report(
        [Row("rebuild (crm replay notification)", fmt(rb.rate, "events/s"), "≥ 60,000 events/s", limit, ratio_, peer)],
        [CpuCost("rebuild (crm replay)", "event", rb.replayed, rb.cpu_s, rb.seconds, rb.rate)],
        {"rebuild": f"the log topped up to {rebuild_events:,} messages with copies of the services' own"
                    f" (new event ids; {log['had']:,} were there, {log['sent']:,} added in {log['seconds']:.0f} s),"
                    f" services stopped; `crm replay notification` replayed {rb.replayed:,}"
                    f" ({rb.not_applicable} not applicable) in {rb.seconds:.1f} s wall, process start included;"
                    f" its own last line: `{rb.progress.strip()}`"},
    )  # fmt: skip


def idle_note(result: dict[str, Any]) -> str:
    reached = "reached" if result["idle"] else "NOT reached: measured on a busy stack"
    return (
        f"started after {result['idle_wait_s']:.1f} s of waiting for every consumer lag"
        f" and outbox backlog to reach 0 and no service to apply anything for a second ({reached})"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| figure | measured | target (§13, 2 cores) | raw limit, same run | ratio to limit | eventsourcing peer |",
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


def scaleout_report(one: dict[str, Any], two: dict[str, Any], checks: Checks) -> Report:
    """The two scale-out rows (bench/scaleout.py): events/s from the first batch sent to every
    instance caught up, and CPU per event; the checks in the note."""
    report = Report()
    for name, r, n in ((SCALE_OUT_ROWS[0], one, 1), (SCALE_OUT_ROWS[1], two, 2)):
        rate = r["accepted"] / r["caught_up_s"] if r["caught_up_s"] else None
        cost = CpuCost(f"intake batch, {n} instance{'s' if n > 1 else ''} of case and analytics", "event",
                       r["accepted"], r["cpu_s"], r["cpu_window_s"], rate or 0.0)  # fmt: skip
        ratio_ = ""
        if n == 2 and one["caught_up_s"] and rate:
            ratio_ = f"{rate / (one['accepted'] / one['caught_up_s']):.2f} of 1 instance"
        report.rows.append(Row(name, f"{fmt(rate, 'events/s')}, {cost.per_unit_us():,.0f} µs CPU per event",
                               ratio=ratio_))  # fmt: skip
        report.costs.append(cost)
    split = "; ".join(f"{group} {a}+{b} partitions ({both} on both)" for group, (a, b, both) in checks.split.items())
    counted, accepted = checks.kpi
    report.notes["scale-out"] = (
        f"the batch scenario ({one['accepted']:,} then {two['accepted']:,} items) on a stack of its own, first"
        " with one instance of each service, then with a second of case and of analytics (same database and"
        " consumer groups, an HTTP port of its own); events/s is the items over the time from the first batch"
        " sent to the last event applied by any instance (every lag and outbox backlog at 0, nothing applied"
        f" for 2 s). Two instances: partitions split {split}; timeline digests equal in all four services for"
        f" {checks.digests[0]} of {checks.digests[1]} sampled customers; the KPI fold counted"
        f" {'n/a' if counted is None else f'{counted:,}'} of {accepted:,} interactions."
        + (f" PROBLEMS: {'; '.join(checks.problems)}" if checks.problems else " No problem seen.")
    )
    return report
