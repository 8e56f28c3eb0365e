"""bench/cpu.py counts a process's CPU with its descendants', living and ended."""

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

from bench import cpu

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


@contextmanager
def parent(child_code: str, then: str) -> Iterator[int]:
    """A process that starts a child running child_code, does `then` (wait for the child, or not),
    says so and sleeps: idle itself, so all the CPU its tree shows is its child's. Yields its pid."""
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child_code!r}])\n"
        f"{then}\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        yield p.pid
    finally:
        for child in psutil.Process(p.pid).children(recursive=True):
            child.kill()
        p.kill()
        p.wait()


def until(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.05)


def test_a_child_that_ended_counts_once_its_parent_waited_for_it() -> None:
    with parent(BURN, "child.wait()") as pid:
        assert cpu.cpu_seconds(pid) >= 0.29


def test_a_living_child_counts_and_a_meter_gives_what_was_spent_since_it_was_made() -> None:
    with parent(BURN + "time.sleep(30)\n", "") as pid:
        until(lambda: cpu.cpu_seconds(pid) >= 0.29)  # the child burnt its 0.3 s and sleeps on
        meter = cpu.Meter({"tree": pid})
        time.sleep(0.3)
        assert meter.spent()["tree"] < 0.1  # all idle since


def test_a_process_gone_reads_as_no_cpu() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu.cpu_seconds(gone.pid) == 0.0


def test_pids_go_to_the_load_generator_and_back_with_its_own_added() -> None:
    pids = cpu.parse_pids(cpu.format_pids({"intake": 11, "postgres": 12}))
    assert pids == {"intake": 11, "postgres": 12, cpu.LOAD_GENERATOR: psutil.Process().pid}


def test_children_seconds_counts_a_command_that_ran_to_its_end() -> None:
    before = cpu.children_seconds()
    subprocess.run([sys.executable, "-c", BURN], check=True)
    assert cpu.children_seconds() - before >= 0.29
