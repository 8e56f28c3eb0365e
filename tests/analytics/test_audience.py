"""Audience filters as pure functions: each filter, their combinations, erased customers."""

from datetime import UTC, datetime, timedelta

import pytest
from analytics import audience
from analytics.audience import Audience, AudienceError, CustomerRow
from hypothesis import given
from hypothesis import strategies as st

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def row(cid: str = "c1", **fields: object) -> CustomerRow:
    return CustomerRow(customer_id=cid, **fields)  # type: ignore[arg-type]


def test_an_empty_audience_is_everyone_not_erased() -> None:
    assert audience.matches(Audience(), row())
    assert not audience.matches(Audience(), row(erased=True))


@pytest.mark.parametrize(
    ("a", "yes", "no"),
    [
        (Audience(segment="vip"), row(segment="vip"), row(segment="loyal")),
        (Audience(risk_band="high"), row(risk_band="high"), row(risk_band="low")),
        (Audience(region="DE"), row(region="DE"), row(region=None)),
        (Audience(channel_used="sms"), row(channels=frozenset({"sms", "web"})), row(channels=frozenset({"web"}))),
        (Audience(vip=True), row(vip=True), row(vip=False)),
        (Audience(vip=False), row(vip=False), row(vip=True)),
        (Audience(last_contact_before=T0), row(last_contact=T0 - timedelta(seconds=1)), row(last_contact=T0)),
        (Audience(last_contact_after=T0), row(last_contact=T0), row(last_contact=T0 - timedelta(seconds=1))),
    ],
)
def test_each_filter_selects_its_customers(a: Audience, yes: CustomerRow, no: CustomerRow) -> None:
    assert audience.matches(a, yes)
    assert not audience.matches(a, no)
    assert not audience.matches(a, CustomerRow(**{**yes.__dict__, "erased": True}))


def test_never_contacted_is_before_any_time_and_after_none() -> None:
    assert audience.matches(Audience(last_contact_before=T0), row())
    assert not audience.matches(Audience(last_contact_after=T0), row())


def test_all_given_filters_must_match() -> None:
    a = Audience(segment="vip", region="DE", channel_used="email")
    assert audience.matches(a, row(segment="vip", region="DE", channels=frozenset({"email"})))
    assert not audience.matches(a, row(segment="vip", region="FR", channels=frozenset({"email"})))
    assert not audience.matches(a, row(segment="vip", region="DE"))


def test_parse_reads_the_event_object_and_refuses_what_it_cannot_resolve() -> None:
    a = audience.parse({"segment": "vip", "vip": True, "last_contact_after": "2026-06-01T00:00:00Z"})
    assert a == Audience(segment="vip", vip=True, last_contact_after=T0)
    for bad in (
        {"segment": "nobody"},
        {"risk_band": "extreme"},
        {"channel_used": "pigeon"},
        {"vip": "yes"},
        {"last_contact_before": "yesterday"},
        {"last_contact_before": "2026-06-01T00:00:00"},
        {"colour": "red"},
    ):
        with pytest.raises(AudienceError):
            audience.parse(bad)


def test_parts_hold_at_most_1000_ids_and_an_empty_audience_is_one_empty_part() -> None:
    ids = [f"c{i:05d}" for i in range(2001)]
    chunks = audience.parts(ids)
    assert [len(c) for c in chunks] == [1000, 1000, 1]
    assert [i for c in chunks for i in c] == ids
    assert audience.parts([]) == [[]]


rows = st.builds(
    CustomerRow,
    customer_id=st.sampled_from([f"c{i}" for i in range(8)]),
    segment=st.sampled_from([None, *sorted(audience.SEGMENTS)]),
    risk_band=st.sampled_from([None, "low", "medium", "high"]),
    region=st.sampled_from([None, "DE", "FR"]),
    vip=st.booleans(),
    last_contact=st.one_of(st.none(), st.integers(-5, 5).map(lambda d: T0 + timedelta(days=d))),
    channels=st.frozensets(st.sampled_from(["sms", "email", "web"])),
    erased=st.booleans(),
)


@given(st.lists(rows, max_size=20))
def test_select_is_each_matching_customer_once_and_never_an_erased_one(population: list[CustomerRow]) -> None:
    a = Audience(region="DE")
    chosen = audience.select(a, population)
    assert chosen == sorted(set(chosen))
    assert set(chosen) == {c.customer_id for c in population if c.region == "DE" and not c.erased}
    # a conjunction selects the intersection of what each filter selects alone
    both = Audience(region="DE", vip=True)
    assert set(audience.select(both, population)) <= set(chosen)
    assert set(audience.select(both, population)) == {c.customer_id for c in population if audience.matches(both, c)}
