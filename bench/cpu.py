"""CPU time of the stack's processes over a scenario.

Every process of the stack shares the machine's cores (PostgreSQL, the broker, the four services
and the load generator), so what bounds a figure is first the CPU one unit of work costs in all
of them together: a run spending 370 µs per event on 2 cores cannot go past ~5,400 events/s,
however the work is spread. `bench.load` reads these at the start and end of its measured window
and `bench.run` prints the cost per unit, split by process, beside the ceiling it implies.
"""

import contextlib
import os
import resource
from collections.abc import Mapping

import psutil

LOAD_GENERATOR = "load generator"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants, those that ended included as far as
    their parent waited for them (PostgreSQL's postmaster does for its backends and autovacuum
    workers). A process gone already counts 0."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # a child that ended meanwhile: its parent has its time
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def children_seconds() -> float:
    """User + system CPU of this process's children that ended and were waited for (a command run
    with subprocess.run, and whatever it waited for in turn)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_pids(text: str) -> dict[str, int]:
    """`name=pid,name=pid` (bench.load's --cpu-pids) as a mapping; the caller is added as the load generator."""
    pids = {name: int(pid) for name, _, pid in (part.partition("=") for part in text.split(",") if part)}
    return {**pids, LOAD_GENERATOR: os.getpid()}


def format_pids(pids: Mapping[str, int]) -> str:
    return ",".join(f"{name}={pid}" for name, pid in pids.items())


def reading(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process spent between two readings."""
    return {name: max(after[name] - before.get(name, 0.0), 0.0) for name in after}


class Meter:
    """The CPU each of these processes spent from the meter's making to each call of spent()."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start = reading(self._pids)

    def spent(self) -> dict[str, float]:
        return spent(self._start, reading(self._pids))
