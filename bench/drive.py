"""Driving the bench's stack: a load process, the processes whose CPU counts, VACUUM between
scenarios, resident memory."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from crmtools.devstack import SERVICES, Stack

from bench import cpu

ROOT = Path(__file__).resolve().parents[1]


def load(
    stack: Stack,
    mode: str,
    timeout_s: float,
    *args: str,
    module: str = "bench.load",
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Run one `bench.load` (or `module`) mode in its own process and return its JSON answer;
    the CPU it reports is the stack's processes' and `pids`' (more instances)."""
    readers = ",".join(stack.services[name].url for name in SERVICES)
    env = {**os.environ, "BENCH_API_KEY": stack.admin_key, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", module, mode, "--intake", stack.services["intake"].url, "--readers", readers,
           "--cpu-pids", cpu.format_pids({**stack_pids(stack), **(pids or {})})]  # fmt: skip
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


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 2**20


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
