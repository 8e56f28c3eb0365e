"""A clock the tests move by hand, for code that takes `now` as a callable."""

from datetime import datetime, timedelta


class Clock:
    """A controllable clock: tests move time, the code under test reads it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, t: datetime) -> datetime:
        self.now = t
        return t
