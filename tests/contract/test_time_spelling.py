"""format_time spells every instant as the strftime it replaced ("%Y-%m-%dT%H:%M:%S.%fZ" in
UTC) did, whether it takes the isoformat shortcut or not: timelines, digests and ce_time
headers written before and after the change must agree."""

from datetime import UTC, datetime, timedelta, timezone

from eventkit.envelope import format_time
from hypothesis import given
from hypothesis import strategies as st

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets))
def test_one_spelling_for_one_instant(t: datetime) -> None:
    assert format_time(t) == t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_shortcut_and_the_old_way_meet_at_year_1000() -> None:
    for t in (datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(1000, 1, 1, tzinfo=UTC)):
        assert format_time(t) == t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert format_time(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == "2026-12-01T10:00:00.000000Z"
