"""`crm`'s progress and addresses: replay's bar on a terminal (a real pseudo-terminal) and a
single line elsewhere; `crm status` and the other commands find a stack moved with `make run`'s
settings (CRM_<SERVICE>_PORT, CRM_KAFKA_PORT, CRM_PG_PORT)."""

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from crmtools import cli
from crmtools.devstack import ROOT
from crmtools.processes import free_port
from crmtools.progress import ReplayProgress

from contracts.services import SERVICE_NAMES


def read_all(fd: int) -> bytes:
    """Everything written to the terminal so far (the writer has finished)."""
    out = b""
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        out += chunk
    return out


def test_on_a_terminal_replay_draws_a_bar_that_knows_its_total_from_the_start() -> None:
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    with open(child, "w", closefd=True) as terminal, ReplayProgress(1234, stream=terminal) as progress:
        assert progress.interactive
        progress.update(600, total=1000)  # a worker's partial count never lowers the total
        progress.update(1300, total=1300)  # more arrived meanwhile
    shown = read_all(main).decode()  # every frame drawn, the first one on start
    os.close(main)
    counts = re.findall(r"(\d+)/(\d+)", shown)
    assert counts[0] == ("0", "1234") and counts[-1] == ("1300", "1300")
    assert ("0", "0") not in counts
    assert "replaying messages" in shown and "━" in shown  # rich's bar
    assert "\r" in shown or "\x1b[" in shown  # drawn over in place
    assert "100%" in shown and "events/s" in shown
    assert progress.total == 1300


def test_in_a_pipe_replay_states_the_total_once_and_redraws_nothing() -> None:
    stream = io.StringIO()  # not a terminal, like a pipe or a CI log
    with ReplayProgress(1234, stream=stream) as progress:
        assert not progress.interactive
        progress.update(600, total=1000)
        progress.update(1234)
    assert stream.getvalue() == "replaying 1,234 messages\n"


def test_a_pipe_gets_no_bar_even_when_force_color_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many CI runners set FORCE_COLOR, which rich takes for a terminal: the log still gets no
    carriage returns."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    read, write = os.pipe()
    with open(write, "w") as pipe, ReplayProgress(10, stream=pipe) as progress:
        progress.update(10)
    with open(read) as out:
        text = out.read()
    assert text == "replaying 10 messages\n"


@contextmanager
def ready_service() -> Iterator[tuple[int, list[str]]]:
    """A stand-in for a service: answers /readyz and /metrics on a free port; records the paths."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b'{"ready": true}' if self.path == "/readyz" else b"crm_consumer_lag 7\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


def crm_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "KAFKA_"))}
    nobody = free_port()  # nothing listens: the other services are down, the broker unreachable
    env |= {f"CRM_{name.upper()}_URL": f"http://127.0.0.1:{nobody}" for name in SERVICE_NAMES if name != "case"}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{nobody}", "PYTHONPATH": f"{ROOT / 'services'}:{ROOT}"}
    return env | extra


def test_status_asks_the_service_on_the_port_make_run_was_moved_to() -> None:
    with ready_service() as (port, asked):
        result = subprocess.run(
            [sys.executable, "-m", "crmtools.cli", "status"],
            env=crm_env(CRM_CASE_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    [line] = [line for line in result.stdout.splitlines() if line.startswith("case ")]
    assert line.split()[:3] == ["case", "yes", "7"], result.stdout
    assert line.endswith(f"http://127.0.0.1:{port}")
    assert "/readyz" in asked


@pytest.mark.parametrize(
    ("value", "reason"),
    [("0", "CRM_CASE_PORT=0 means any free port"), ("eighty", "CRM_CASE_PORT must be a port number")],
)
def test_status_refuses_a_port_setting_it_cannot_use(value: str, reason: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crmtools.cli", "status"],
        env=crm_env(CRM_CASE_PORT=value),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_the_broker_and_the_databases_follow_make_runs_port_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CRM_CASE_DATABASE_URL", "CRM_CASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_KAFKA_PORT", "19092")
    monkeypatch.setenv("CRM_PG_PORT", "15432")
    monkeypatch.setenv("CRM_CASE_PORT", "18002")
    assert cli._bootstrap() == "127.0.0.1:19092"
    assert cli._database_url("case") == "postgresql://postgres@127.0.0.1:15432/crm_case"
    assert cli._service_url("case") == "http://127.0.0.1:18002"
    # an address named outright wins over the port
    monkeypatch.setenv("CRM_CASE_URL", "http://case.internal:8002")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert cli._service_url("case") == "http://case.internal:8002" and cli._bootstrap() == "kafka:9092"
