"""`make run`'s terminal: the services' JSON log lines, followed from their files and shown as
lines a person reads. The files keep the JSON for machines (`jq`, log shippers).

Following the files rather than the services' pipes means a slow terminal never blocks a
service's logging.
"""

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

# Fields of eventkit's JSON formatter shown after the message, in this order.
EXTRA_FIELDS = ("route", "event_type", "event_id", "topic", "partition", "offset", "reason", "trace_id")


def readable(service: str, line: str) -> str:
    """One JSON log line as `12:00:01 intake   WARNING message key=value`; other lines as they are."""
    try:
        entry: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict) or "msg" not in entry:
        return f"{service:<12} {line}"
    try:
        clock = datetime.fromisoformat(str(entry.get("ts"))).astimezone().strftime("%H:%M:%S")
    except ValueError:
        clock = "--:--:--"
    extras = " ".join(f"{key}={entry[key]}" for key in EXTRA_FIELDS if entry.get(key) is not None)
    text = f"{clock} {service:<12} {entry.get('level', ''):<7} {entry['msg']}"
    if extras:
        text += f"  {extras}"
    if entry.get("exc"):
        text += "\n" + "\n".join(f"    {exc_line}" for exc_line in str(entry["exc"]).splitlines())
    return text


class LogFollower:
    """Prints what is appended to each file from now on, until stopped."""

    def __init__(self, files: Mapping[str, Path], write: Callable[[str], None], poll_s: float = 0.2) -> None:
        self.files = dict(files)
        self.write = write
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._offsets = {name: (path.stat().st_size if path.exists() else 0) for name, path in self.files.items()}
        self._partial = dict.fromkeys(self.files, b"")
        self._thread = threading.Thread(target=self._run, name="log-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(2)
        self.poll()  # the last lines, written while stopping

    def poll(self) -> None:
        for name, path in self.files.items():
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets[name])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            if not chunk:
                continue
            self._offsets[name] += len(chunk)
            *lines, self._partial[name] = (self._partial[name] + chunk).split(b"\n")
            for raw in lines:
                if raw.strip():
                    self.write(readable(name, raw.decode("utf-8", "replace")))

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()
