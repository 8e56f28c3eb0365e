"""Child processes of the dev stack: free ports, waiting for a listener, stopping, and a child
that dies with its runner."""

import contextlib
import ctypes
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send `sig` to the child when the runner dies, on Linux.

    prctl is Linux-only; elsewhere (macOS) there is none, and the runner's signal handler stops
    the children (each in its own process group) on Ctrl-C or SIGTERM. Only a SIGKILLed runner
    can leave them behind there.
    """
    if sys.platform != "linux":
        return None

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


def spawn(argv: list[str], log_path: Path | None, death_signal: int, **options: Any) -> subprocess.Popen[bytes]:
    """A child of the dev stack: in its own process group, so that the runner stops it (a Ctrl-C
    does not reach it first), sent `death_signal` if the runner dies, its output appended to
    `log_path` (none: the runner's own). `options`: more Popen arguments (env, user)."""
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115  (owned by the process)
    return subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        process_group=0,
        preexec_fn=die_with_parent(death_signal),
        **options,
    )


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port that is free now, outside the kernel's ephemeral range, and not handed out before
    by this process.

    Port 0 would hand out an ephemeral port, which an outgoing connection (say, to the broker)
    may take before the service binds it; below 32768 that cannot happen. A Stack picks all its
    ports before anything binds one, so "free now" alone can give two of them the same port (seen
    once in a test run: the broker failed with "Address in use" while something else answered on
    its port, and intake never became ready).
    """
    rng = random.SystemRandom()
    while True:
        port = rng.randint(20_000, 32_000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
