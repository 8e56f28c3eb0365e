"""Scale-out, for information: the batch scenario with one instance of case and of analytics,
then with a second of each on the same machine (a consumer group of two, one database).

The second instance is started as the chaos tests start one (tests/chaos/test_recovery.py): the
first one's settings with an HTTP port of its own. What is checked, and reported rather than
asserted: each consumer group (case's and analytics') splits its partitions between the two,
none read by both; after each batch every service's timeline digest
of a sample of its customers is equal; and analytics' KPI fold counted each accepted interaction
once.
"""

import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from crmtools.devstack import SERVICES, ServiceProcess, Stack
from crmtools.processes import free_port

from bench.drive import load, vacuum

SCALED = ("case", "analytics")
# The consumer groups of the scaled services, by the service label of their lag gauges.
GROUPS = ("case", "analytics")
LAG = re.compile(r"^crm_consumer_lag\{(?P<labels>[^}]*)\}")
LABEL = re.compile(r'(\w+)="([^"]*)"')
SPLIT_WAIT_S = 90.0


@dataclass
class Checks:
    """What the two-instance run showed about correctness (reported, not asserted)."""

    split: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # group -> (first, second, both)
    digests: tuple[int, int] = (0, 0)  # customers whose digests agree in every service, of those checked
    kpi: tuple[int | None, int] = (None, 0)  # interactions the KPI fold counted, of those accepted
    problems: list[str] = field(default_factory=list)


Result = tuple[dict[str, Any], dict[str, Any], Checks]  # the batch with one instance, with two, the checks


def assigned(url: str, key: str) -> dict[str, set[tuple[str, str]]]:
    """The partitions each consumer of one instance reads."""
    return partitions_in(httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text)


def partitions_in(metrics: str) -> dict[str, set[tuple[str, str]]]:
    """By consumer (the service label), the (topic, partition)s with a lag gauge: a consumer
    drops the gauges of the partitions it hands on (eventkit.consumer on_assigned)."""
    out: dict[str, set[tuple[str, str]]] = {}
    for line in metrics.splitlines():
        m = LAG.match(line)
        if m:
            labels = dict(LABEL.findall(m.group("labels")))
            out.setdefault(labels["service"], set()).add((labels["topic"], labels["partition"]))
    return out


def split_of(stack: Stack, seconds: dict[str, ServiceProcess]) -> dict[str, tuple[int, int, int]]:
    """For each group: partitions the first instance reads, the second reads, and both read."""
    split = {}
    for name, second in seconds.items():
        a, b = assigned(stack.services[name].url, stack.admin_key), assigned(second.url, stack.admin_key)
        for group in (g for g in GROUPS if g.split("-")[0] == name):
            pa, pb = a.get(group, set()), b.get(group, set())
            split[group] = (len(pa), len(pb), len(pa & pb))
    return split


def wait_split(stack: Stack, seconds: dict[str, ServiceProcess]) -> dict[str, tuple[int, int, int]]:
    """Until every group has partitions on both instances and none on both (or SPLIT_WAIT_S)."""
    deadline = time.monotonic() + SPLIT_WAIT_S
    while True:
        split = split_of(stack, seconds)
        done = len(split) == len(GROUPS) and all(a and b and not both for a, b, both in split.values())
        if done or time.monotonic() > deadline:
            return split
        time.sleep(1)


def digests_agree(stack: Stack, customers: list[str]) -> tuple[int, int]:
    """(customers whose timeline digest every service answers alike, customers checked)."""
    agree = 0
    with httpx.Client(headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30) as http:
        for customer in customers:
            answers = [http.get(f"{stack.services[n].url}/v1/customers/{customer}/timeline/digest") for n in SERVICES]
            seen = {(r.json()["events"], r.json()["digest"]) for r in answers if r.status_code == 200}
            agree += len(seen) == 1 and all(r.status_code == 200 for r in answers)
    return agree, len(customers)


def kpi_interactions(stack: Stack) -> int | None:
    async def count() -> int | None:
        conn = await asyncpg.connect(stack.postgres.dsn("crm_analytics"))
        try:
            return int(await conn.fetchval("SELECT coalesce(sum(count), 0) FROM kpi_interactions"))
        except asyncpg.PostgresError:
            return None  # the table changed: nothing to compare
        finally:
            await conn.close()

    return asyncio.run(count())


def batch(stack: Stack, duration_s: float, seconds: dict[str, ServiceProcess]) -> tuple[dict[str, Any], int | None]:
    """One batch run to every instance caught up; and how many interactions the KPI fold added."""
    urls = [svc.url for svc in stack.services.values()] + [svc.url for svc in seconds.values()]
    pids = {f"{name}-2": svc.proc.pid for name, svc in seconds.items() if svc.proc is not None}
    before = kpi_interactions(stack)
    b = load(stack, "batch", duration_s + 420, "--duration", str(duration_s), "--concurrency", "4",
             "--metrics", ",".join(urls), pids=pids)  # fmt: skip
    after = kpi_interactions(stack)
    counted = None if before is None or after is None else after - before
    return b, counted


def measure(stack: Stack, duration_s: float) -> Result:
    """The batch with one instance of case and analytics, then with two; the stack is running."""
    checks = Checks()
    one, counted_one = batch(stack, duration_s, {})
    if counted_one is not None and counted_one != one["accepted"]:
        checks.problems.append(f"one instance: the KPI fold counted {counted_one:,} of {one['accepted']:,}")
    vacuum(stack)
    seconds = {
        name: ServiceProcess(name, port := free_port(), {**stack.services[name].env, "HTTP_PORT": str(port)},
                             stack.logs / f"{name}-2.log")
        for name in SCALED
    }  # fmt: skip
    try:
        for svc in seconds.values():
            svc.start()
        for svc in seconds.values():
            svc.wait_ready(120)  # ready = its timeline consumer was given partitions
        checks.split = wait_split(stack, seconds)
        print(f"  scale-out: partitions split {checks.split}", file=sys.stderr, flush=True)
        two, counted = batch(stack, duration_s, seconds)
        after_split = split_of(stack, seconds)
        checks.kpi = (counted, two["accepted"])
        checks.digests = digests_agree(stack, two["customers"])
    finally:
        for svc in seconds.values():
            svc.stop()
    for group in GROUPS:
        first, second, both = checks.split.get(group, (0, 0, 0))
        if not first or not second or both:
            checks.problems.append(f"{group}: partitions not split ({first} on the first, {second} on the second,"
                                   f" {both} on both)")  # fmt: skip
        if after_split.get(group) != checks.split.get(group):
            checks.problems.append(f"{group}: the split moved during the batch ({after_split.get(group)})")
    if counted is not None and counted != two["accepted"]:
        checks.problems.append(f"two instances: the KPI fold counted {counted:,} of {two['accepted']:,}")
    if checks.digests[0] != checks.digests[1]:
        checks.problems.append(f"digests differ between services for {checks.digests[1] - checks.digests[0]}"
                               f" of {checks.digests[1]} customers")  # fmt: skip
    for name, r in (("one instance", one), ("two instances", two)):
        if r["caught_up_s"] is None:
            checks.problems.append(f"{name}: not every instance caught up within the drain timeout")
    return one, two, checks


def measure_alone(
    data_dir: Path, env: dict[str, str], duration_s: float
) -> tuple[dict[str, Any], dict[str, Any], Checks]:
    """On a stack of its own, started empty (`--only scale-out`, and after the rest of `make bench`)."""
    stack = Stack(data_dir, pg_port=0, kafka_port=0, service_ports={}, env=env)
    try:
        stack.start_infra()
        stack.start_services()
        print("stack ready; measuring scale-out ...", file=sys.stderr, flush=True)
        return measure(stack, duration_s)
    finally:
        stack.stop()
