"""`make run`'s entry point, `python -m crmtools.devstack run`, as a newcomer would use it: it
starts everything and prints the URLs and the admin key; one POST shows on all four timelines;
Ctrl-C stops it with no process left behind; a second run starts again on the same data.

It runs in a temporary directory (the default data directory `.data` is relative to it) on free
ports (CRM_PG_PORT, CRM_KAFKA_PORT, CRM_<SERVICE>_PORT), so it never touches a real `make run`.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from crmtools import devstack, processes
from crmtools.devstack import SERVICES
from crmtools.processes import free_port

from tests.e2e.helpers import interaction_body

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 180  # four services, PostgreSQL and the broker on a shared 2-core machine
STOP_TIMEOUT_S = 30  # Ctrl-C to exit: services, broker, then PostgreSQL's fast shutdown


class Runner:
    """One `python -m crmtools.devstack run` process; its output is read all the time (the
    services log to it, and a full pipe would block them)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crmtools.devstack", "run"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def wait_for_line(self, text: str, timeout_s: float) -> int:
        """The index of the first line that is `text` (stripped); fails if the runner exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for n, line in enumerate(list(self.lines)):
                if line.strip() == text:
                    return n
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"exited with {self.proc.returncode} before {text!r}:\n{self.output()}")
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.output()}")

    def admin_key(self) -> str:
        n = next(i for i, line in enumerate(self.lines) if line.startswith("Development admin key"))
        return self.lines[n + 1].strip()

    def urls(self) -> dict[str, str]:
        found = (re.match(r"\s+(\w+)\s+(http://\S+)", line) for line in self.lines)
        return {m[1]: m[2] for m in found if m and m[1] in SERVICES}

    def mail_url(self) -> str:
        found = (re.match(r"\s+mail\s+(http://\S+)", line) for line in self.lines)
        return next(m[1] for m in found if m)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> None:
        """Last resort when a test failed midway: whatever this runner started goes too."""
        if self.proc.poll() is None:
            left = self.descendants()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for p in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        self._reader.join(5)


def still_running(processes: list[psutil.Process]) -> list[str]:
    """Those still alive (same pid and start time, so a reused pid is not mistaken for one)."""
    alive = []
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
    return alive


def start(tmp_path: Path, env: dict[str, str]) -> Runner:
    runner = Runner(tmp_path, env)
    try:
        runner.wait_for_line("Ctrl-C stops everything.", START_TIMEOUT_S)
    except BaseException:
        runner.stop()
        raise
    return runner


def stop_with_ctrl_c(runner: Runner) -> None:
    """SIGINT, as Ctrl-C sends it; a clean exit within the bound and none of its processes left."""
    children = runner.descendants()
    commands = " ".join(" ".join(p.cmdline()) for p in children)
    for expected in ("postgres", "tansu", *(f"{name}.main" for name in SERVICES)):
        assert expected in commands, (expected, commands)  # so the check below looks at all of them
    started = time.monotonic()
    runner.proc.send_signal(signal.SIGINT)
    try:
        code = runner.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running {STOP_TIMEOUT_S} s after SIGINT:\n{runner.output()}") from exc
    took = time.monotonic() - started
    runner._reader.join(5)
    assert code == 0, runner.output()
    assert "stopped." in runner.lines, runner.output()
    assert still_running(children) == [], f"left behind after {took:.1f} s"


def test_make_run_starts_serves_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    ports = {"CRM_PG_PORT": free_port(), "CRM_KAFKA_PORT": free_port()}
    ports |= {f"CRM_{name.upper()}_PORT": free_port() for name in SERVICES}
    ports |= {"CRM_MAIL_SMTP_PORT": free_port(), "CRM_MAIL_PORT": free_port()}
    # As on a newcomer's machine: no admin key given (it makes one), the default data directory,
    # no mail server of their own.
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_ADMIN_KEY", "CRM_DATA_DIR", "SMTP_HOST")}
    env |= {k: str(v) for k, v in ports.items()} | {"PYTHONUNBUFFERED": "1"}

    runner = start(tmp_path, env)
    try:
        # The terminal shows log lines a person reads; the files keep the JSON for machines.
        assert any(re.fullmatch(r"\d\d:\d\d:\d\d intake +INFO +intake ready on \S+", line) for line in runner.lines)
        assert not [line for line in runner.lines if line.lstrip().startswith('{"')], runner.output()
        logged = (tmp_path / ".data" / "logs" / "intake.log").read_text().splitlines()
        assert any(json.loads(line)["msg"].startswith("intake ready on") for line in logged if line.startswith("{"))
        urls = runner.urls()
        assert urls == {name: f"http://127.0.0.1:{ports[f'CRM_{name.upper()}_PORT']}" for name in SERVICES}
        key = runner.admin_key()
        assert key == (tmp_path / ".data" / "admin.key").read_text().strip()
        with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {key}"}) as client:
            for name, url in urls.items():
                assert client.get(f"{url}/readyz").status_code == 200, name
            body = interaction_body("ada@example.com", content="hello from make run")
            r = client.post(f"{urls['intake']}/v1/interactions", json=body)
            assert r.status_code == 202, r.text
            posted = r.json()
            for name, url in urls.items():  # the "shows in all four timelines within a second"
                page = client.get(
                    f"{url}/v1/customers/{posted['customer_id']}/timeline",
                    params={"wait_for": posted["event_id"], "timeout_ms": 1000},
                )
                assert page.status_code == 200, (name, page.text)
                assert posted["event_id"] in [e["event_id"] for e in page.json()["events"]], name
            # A complaint opens a case, whose email lands in the dev mail sink, listed on its page.
            mail = runner.mail_url()
            assert mail == f"http://127.0.0.1:{ports['CRM_MAIL_PORT']}/"
            complaint = interaction_body("ada@example.com", kind="complaint", content="my router is broken")
            assert client.post(f"{urls['intake']}/v1/interactions", json=complaint).status_code == 202
            deadline = time.monotonic() + 60
            while not (listed := [m for m in client.get(f"{mail}messages.json").json() if
                                  m["headers"].get("X-CRM-Rule") == "case_opened"]):  # fmt: skip
                assert time.monotonic() < deadline, f"no case_opened mail in the sink:\n{runner.output()}"
                time.sleep(0.2)
            assert listed[0]["recipients"] == ["ada@example.com"]
            assert "is open" in listed[0]["body"]
            page = client.get(mail)
            assert page.status_code == 200 and listed[0]["subject"] in page.text
            config = client.get(f"{urls['intake']}/console/config.json").json()
            assert config["mail"] == mail.rstrip("/")  # the console links the page
        stop_with_ctrl_c(runner)
    finally:
        runner.stop()

    again = start(tmp_path, env)  # same directory, same data
    try:
        assert again.admin_key() == key
        with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {key}"}) as client:
            page = client.get(f"{urls['intake']}/v1/customers/{posted['customer_id']}/timeline")
            assert page.status_code == 200, page.text
            assert posted["event_id"] in [e["event_id"] for e in page.json()["events"]]
        stop_with_ctrl_c(again)
    finally:
        again.stop()


def _run_env(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    ports = {"CRM_PG_PORT": free_port(), "CRM_KAFKA_PORT": free_port()}
    ports |= {f"CRM_{name.upper()}_PORT": free_port() for name in SERVICES}
    ports |= {"CRM_MAIL_SMTP_PORT": free_port(), "CRM_MAIL_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_ADMIN_KEY", "CRM_DATA_DIR", "SMTP_HOST")}
    return env | {k: str(v) for k, v in ports.items()} | {"PYTHONUNBUFFERED": "1"}, ports


def test_make_run_right_after_a_sigkill_of_the_whole_stack_comes_back(tmp_path: Path) -> None:
    """Runner, database, broker and services killed at once; the next run starts at once on the
    same ports and data (the broker's port may still be held while the kernel tears it down)."""
    env, _ = _run_env(tmp_path)
    crashed = start(tmp_path, env)
    try:
        everything = [psutil.Process(crashed.proc.pid), *crashed.descendants()]
        for proc in everything:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        crashed.proc.wait(10)
    finally:
        crashed.stop()
    again = start(tmp_path, env)
    try:
        assert not [line for line in again.lines if "Traceback" in line], again.output()
        stop_with_ctrl_c(again)
    finally:
        again.stop()


def test_make_run_says_in_one_line_which_port_is_taken(tmp_path: Path) -> None:
    env, ports = _run_env(tmp_path)
    with socket.socket() as squatter:  # someone else's server on the broker's port
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ports["CRM_KAFKA_PORT"]))
        squatter.listen()
        result = subprocess.run(
            [sys.executable, "-m", "crmtools.devstack", "run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"make run: port {ports['CRM_KAFKA_PORT']} (broker) is in use by pid {os.getpid()} ")
    assert last.endswith("set CRM_KAFKA_PORT")


def test_no_parent_death_signal_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    """prctl is Linux-only: elsewhere the children start without it (the runner stops them)."""
    assert callable(processes.die_with_parent(signal.SIGTERM)) == (sys.platform == "linux")
    monkeypatch.setattr(processes.sys, "platform", "darwin")
    assert processes.die_with_parent(signal.SIGTERM) is None


def test_port_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_CASE_PORT", raising=False)
    assert devstack._port_setting("CRM_CASE_PORT", 8002) == 8002
    monkeypatch.setenv("CRM_CASE_PORT", "0")
    assert devstack._port_setting("CRM_CASE_PORT", 8002) == 0  # any free port
    monkeypatch.setenv("CRM_CASE_PORT", "eighty")
    with pytest.raises(SystemExit, match="CRM_CASE_PORT"):
        devstack._port_setting("CRM_CASE_PORT", 8002)
