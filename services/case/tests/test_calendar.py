"""Business time over nights, weekends, holidays and DST; 24x7; impossible calendars refused."""

from datetime import date

import pytest

from case.calendar import BusinessCalendar, ConfigError
from case.tests.support import BERLIN, H, utc


def test_business_time_stops_overnight() -> None:
    # Mon 16:00 Berlin (15:00 UTC) + 2 business hours = Tue 10:00 Berlin
    assert BERLIN.add(utc(2026, 1, 5, 15), 2 * H) == utc(2026, 1, 6, 9)
    assert BERLIN.business_seconds(utc(2026, 1, 5, 15), utc(2026, 1, 6, 9)) == 2 * H


def test_business_time_skips_the_weekend() -> None:
    # Fri 16:00 Berlin + 2 h = Mon 10:00 Berlin; Saturday and Sunday count nothing
    assert BERLIN.add(utc(2026, 1, 9, 15), 2 * H) == utc(2026, 1, 12, 9)
    assert BERLIN.business_seconds(utc(2026, 1, 10, 0), utc(2026, 1, 12, 0)) == 0


def test_business_time_skips_holidays() -> None:
    # Thu 2 April 16:00 Berlin (CEST, 14:00 UTC) + 2 h: Good Friday off, weekend, Mon 6 April 10:00
    assert BERLIN.add(utc(2026, 4, 2, 14), 2 * H) == utc(2026, 4, 6, 8)


def test_business_hours_follow_the_local_clock_across_dst() -> None:
    # Before DST 09:00 Berlin is 08:00 UTC, after it 07:00 UTC; a working day is 8 h either way.
    assert BERLIN.window(date(2026, 3, 27)) == (utc(2026, 3, 27, 8), utc(2026, 3, 27, 16))
    assert BERLIN.window(date(2026, 3, 30)) == (utc(2026, 3, 30, 7), utc(2026, 3, 30, 15))
    assert BERLIN.add(utc(2026, 3, 27, 15), 2 * H) == utc(2026, 3, 30, 8)


def test_a_24x7_calendar_counts_every_second() -> None:
    always = BusinessCalendar.always_open()
    assert always.add(utc(2026, 1, 10, 23, 30), 3 * H) == utc(2026, 1, 11, 2, 30)
    assert always.business_seconds(utc(2026, 1, 10), utc(2026, 1, 12)) == 48 * H


@pytest.mark.parametrize(
    "kwargs",
    [{"time_zone": "Mars/Olympus"}, {"working_days": frozenset()}, {"start_minute": 600, "end_minute": 500}],
)
def test_impossible_calendars_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        BusinessCalendar(**kwargs)
