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
import termios

import pytest
from crmtools.progress import ReplayProgress


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
