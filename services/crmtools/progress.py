"""Progress of a long `crm` command (`crm replay`): a rich bar on a terminal, quiet elsewhere.

The total is given when it starts (replay takes it from the partitions' ends before it reads a
message), so the first thing shown is `0/<total>`, never `0/0`. Events that arrive during the
run may raise it (`update(total=...)`). When the stream is not a terminal (a pipe, a file, a CI
log) nothing is redrawn: one line states the total at the start and the caller prints its own
summary at the end, so logs hold no carriage returns or escape codes.
"""

import sys
import time
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _Rate(ProgressColumn):
    """Messages per second since the start (rich's own speed column shows bytes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} events/s")


class ReplayProgress:
    """Use as a context manager; update() with the counts read so far."""

    def __init__(self, total: int, what: str = "messages", stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.done = 0
        self.what = what
        self.start = time.monotonic()
        # isatty, not rich's own test: that one takes FORCE_COLOR (set in many CI runners) as a terminal.
        self.interactive = self.stream.isatty()
        self._bar: Progress | None = None
        self._task = None
        if self.interactive:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                _Rate(),
                TimeRemainingColumn(),
                console=Console(file=self.stream, force_terminal=True),
            )
            self._task = self._bar.add_task(f"replaying {what}", total=total)

    def __enter__(self) -> Self:
        self.start = time.monotonic()
        if self._bar is not None:
            self._bar.start()
        else:
            print(f"replaying {self.total:,} {self.what}", file=self.stream, flush=True)
        return self

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = max(self.total, total)  # a worker saw later ends: more arrived meanwhile
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=self.total)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.start

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()  # the last state stays on screen
