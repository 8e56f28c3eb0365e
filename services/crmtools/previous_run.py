"""What a `make run` that ended badly can leave behind, and how the next one deals with it.

A run records the processes it starts in `<data dir>/run.pids`. The next run on the same data
directory stops those that outlived their runner (a SIGKILL of the runner alone, a closed
terminal on a system without parent-death signals), refuses to start beside a runner that is
still alive, and waits a few seconds for the ports it needs: a process killed a moment ago may
still hold one while the kernel tears it down. What is still busy after that is reported in one
line, with the process that holds it.
"""

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson
import psutil

PORT_WAIT_S = 5.0  # a killed process lets go of its ports well within this


class StartRefused(Exception):
    """Why this run cannot start, in one line for the terminal."""


def _same_process(pid: int, started: float) -> psutil.Process | None:
    """The process `pid` if it is still the one recorded (same start time), not a reused pid."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) < 1 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    return None


def record(path: Path, pids: Iterable[int]) -> None:
    """Note this runner and its children, with their start times to tell them from reused pids."""
    entries = []
    for pid in [os.getpid(), *pids]:
        with contextlib.suppress(psutil.Error):
            entries.append({"pid": pid, "started": psutil.Process(pid).create_time()})
    path.write_bytes(orjson.dumps(entries))


def clear(path: Path) -> None:
    """Forget this run's processes (not another run's: a refused start leaves its record alone)."""
    with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError, LookupError, TypeError):
        if orjson.loads(path.read_bytes())[0]["pid"] == os.getpid():
            path.unlink()


def stop_leftovers(path: Path, timeout_s: float = PORT_WAIT_S) -> list[str]:
    """Stop what an earlier run on this data directory left running; what was stopped.

    Raises StartRefused if that run's own runner is still alive: two runs on one data directory
    would share its database.
    """
    if not path.exists():
        return []
    try:
        entries = orjson.loads(path.read_bytes())
        runner, *children = [_same_process(int(e["pid"]), float(e["started"])) for e in entries]
    except (orjson.JSONDecodeError, LookupError, TypeError, ValueError):
        path.unlink()  # unreadable: written by a run killed mid-write; nothing to go on
        return []
    if runner is not None:
        raise StartRefused(
            f"another `make run` (pid {runner.pid}) is using {path.parent}; stop it first (Ctrl-C in its terminal)"
        )
    alive = [p for p in children if p is not None]
    stopped = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            name = proc.name()
            proc.kill()
            stopped.append(f"{proc.pid} {name}")
    psutil.wait_procs(alive, timeout=timeout_s)
    path.unlink()
    return stopped


def _is_free(port: int) -> bool:
    # SO_REUSEADDR as the servers set it: connections of a dead process in TIME_WAIT do not count.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _holder(port: int) -> str:
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                command = " ".join(" ".join(proc.cmdline()).split())  # one line, whatever the arguments
                return f"pid {conn.pid} ({command[:80] or proc.name()})"
    return "another process"


def wait_for_free_ports(ports: Mapping[str, int], timeout_s: float = PORT_WAIT_S) -> None:
    """Wait until every named port can be bound; StartRefused names the first still taken."""
    deadline = time.monotonic() + timeout_s
    busy = [name for name, port in ports.items() if port and not _is_free(port)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.1)
        busy = [name for name in busy if not _is_free(ports[name])]
    if busy:
        name = busy[0]
        port = ports[name]
        raise StartRefused(f"port {port} ({name}) is in use by {_holder(port)}; stop it or set {_setting(name)}")


def _setting(name: str) -> str:
    return {
        "postgresql": "CRM_PG_PORT",
        "broker": "CRM_KAFKA_PORT",
        "mail (SMTP)": "CRM_MAIL_SMTP_PORT",
        "mail": "CRM_MAIL_PORT",
    }.get(name, f"CRM_{name.upper()}_PORT")
