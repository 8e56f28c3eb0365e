"""The business calendar: working hours on working days in one time zone, minus holidays.

Pure: the SLA clock (sla.py) counts and adds business time with it; nothing here does I/O.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(ValueError):
    """A setting that cannot work (no working days, unknown time zone...)."""


@dataclass(frozen=True)
class BusinessCalendar:
    """Working hours on working days in one time zone, minus holidays. Minutes from local midnight;
    end 1440 means midnight at the end of the day."""

    time_zone: str = "UTC"
    working_days: frozenset[int] = frozenset(range(5))  # Monday = 0
    start_minute: int = 9 * 60
    end_minute: int = 17 * 60
    holidays: frozenset[date] = frozenset()

    MAX_DAYS = 3 * 366  # a target further out than this is a configuration error

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"unknown time zone {self.time_zone!r}") from exc
        if not self.working_days or not self.working_days <= set(range(7)):
            raise ConfigError("working_days must name at least one day, Monday = 0 ... Sunday = 6")
        if not 0 <= self.start_minute < self.end_minute <= 24 * 60:
            raise ConfigError("working hours must start before they end, within one day")

    @classmethod
    def always_open(cls) -> "BusinessCalendar":
        """24x7: every second counts."""
        return cls(time_zone="UTC", working_days=frozenset(range(7)), start_minute=0, end_minute=24 * 60)

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working span of a local date, in UTC; None on days off and holidays."""
        if day.weekday() not in self.working_days or day in self.holidays:
            return None
        tz = ZoneInfo(self.time_zone)
        midnight = datetime(day.year, day.month, day.day)
        # Wall-clock times made aware in the zone, so a DST change day is as long as it is.
        start = (midnight + timedelta(minutes=self.start_minute)).replace(tzinfo=tz)
        end = (midnight + timedelta(minutes=self.end_minute)).replace(tzinfo=tz)
        return start.astimezone(UTC), end.astimezone(UTC)

    def _days_from(self, t: datetime) -> Iterable[date]:
        first = t.astimezone(ZoneInfo(self.time_zone)).date() - timedelta(days=1)
        return (first + timedelta(days=n) for n in range(self.MAX_DAYS))

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Working time between two instants."""
        total = 0.0
        if end <= start:
            return total
        for day in self._days_from(start):
            w = self.window(day)
            if w is None:
                continue
            if w[0] >= end:
                break
            lo, hi = max(w[0], start), min(w[1], end)
            if hi > lo:
                total += (hi - lo).total_seconds()
        return total

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which `seconds` of working time have passed since `start`."""
        if seconds <= 0:
            return start
        for day in self._days_from(start):
            w = self.window(day)
            if w is None:
                continue
            lo = max(w[0], start)
            if lo >= w[1]:
                continue
            available = (w[1] - lo).total_seconds()
            if seconds <= available:
                return lo + timedelta(seconds=seconds)
            seconds -= available
        raise ConfigError(f"an SLA target does not fit in {self.MAX_DAYS} days of this calendar")
