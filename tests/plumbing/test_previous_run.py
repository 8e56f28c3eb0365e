"""What `make run` does about an earlier run that ended badly (crmtools.previous_run)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from crmtools import previous_run
from crmtools.processes import free_port

LISTENER = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); " \
    "print('up', flush=True); time.sleep(60)"  # fmt: skip


def _listener(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    return proc


def _dead_runner() -> tuple[int, float]:
    proc = psutil.Popen([sys.executable, "-c", "pass"])
    started = proc.create_time()
    proc.wait()
    return proc.pid, started


def test_leftovers_of_a_dead_runner_are_stopped_and_free_their_ports(tmp_path: Path) -> None:
    port = free_port()
    leftover = _listener(port)
    try:
        pid, started = _dead_runner()
        record = tmp_path / "run.pids"
        record.write_text(
            f'[{{"pid": {pid}, "started": {started}}}, '
            f'{{"pid": {leftover.pid}, "started": {psutil.Process(leftover.pid).create_time()}}}]'
        )
        stopped = previous_run.stop_leftovers(record)
        assert len(stopped) == 1 and stopped[0].startswith(f"{leftover.pid} python")
        assert leftover.wait(5) is not None
        assert not record.exists()
        previous_run.wait_for_free_ports({"broker": port}, timeout_s=2)
    finally:
        leftover.kill()


def test_a_live_runner_on_the_same_data_is_refused_and_its_record_kept(tmp_path: Path) -> None:
    record = tmp_path / "run.pids"
    record.write_text(f'[{{"pid": {os.getppid()}, "started": {psutil.Process(os.getppid()).create_time()}}}]')
    with pytest.raises(previous_run.StartRefused, match=f"another `make run` \\(pid {os.getppid()}\\)"):
        previous_run.stop_leftovers(record)
    previous_run.clear(record)  # not this process's record
    assert record.exists()


def test_a_reused_pid_is_not_taken_for_a_leftover(tmp_path: Path) -> None:
    record = tmp_path / "run.pids"
    pid, started = _dead_runner()
    me = psutil.Process(os.getpid())
    record.write_text(f'[{{"pid": {pid}, "started": {started}}}, {{"pid": {me.pid}, "started": 1.0}}]')
    assert previous_run.stop_leftovers(record) == []  # this process's pid, but not its start time


def test_a_port_still_taken_names_its_holder_and_setting() -> None:
    port = free_port()
    holder = _listener(port)
    try:
        with pytest.raises(previous_run.StartRefused) as refused:
            previous_run.wait_for_free_ports({"postgresql": port, "case": free_port()}, timeout_s=0.3)
        message = str(refused.value)
        assert message.startswith(f"port {port} (postgresql) is in use by pid {holder.pid} (")
        assert message.endswith("stop it or set CRM_PG_PORT") and "\n" not in message
    finally:
        holder.kill()


def test_a_port_in_time_wait_counts_as_free() -> None:
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
        client.close()
    previous_run.wait_for_free_ports({"broker": port}, timeout_s=0.3)
