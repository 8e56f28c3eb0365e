"""Attribution as pure functions: last touch within the window, metadata wins, conversions, unsubscribes."""

from datetime import UTC, datetime, timedelta

from analytics import attribution
from analytics.attribution import Interaction, Touch

T0 = datetime(2026, 6, 1, tzinfo=UTC)
WEEK = timedelta(days=7)


def inbound(at: datetime, kind: str = "message", **fields: object) -> Interaction:
    return Interaction("e1", "c1", at, "web", kind, "inbound", **fields)  # type: ignore[arg-type]


TOUCHES = [Touch("spring", "c1", "email", T0), Touch("summer", "c1", "sms", T0 + timedelta(days=2))]


def test_the_last_touch_within_the_window_takes_the_response() -> None:
    r = attribution.attribute(inbound(T0 + timedelta(days=3)), TOUCHES, WEEK, {"spring", "summer"})
    assert r is not None and (r.campaign_id, r.channel, r.attributed_by) == ("summer", "sms", "window")
    r = attribution.attribute(inbound(T0 + timedelta(days=1)), TOUCHES, WEEK, {"spring", "summer"})
    assert r is not None and r.campaign_id == "spring"


def test_nothing_outside_the_window_before_the_touch_or_outbound_is_a_response() -> None:
    known = {"spring", "summer"}
    assert attribution.attribute(inbound(T0 + timedelta(days=9, seconds=1)), TOUCHES, WEEK, known) is None
    assert attribution.attribute(inbound(T0 - timedelta(seconds=1)), TOUCHES, WEEK, known) is None
    out = Interaction("e1", "c1", T0 + timedelta(days=1), "web", "message", "outbound")
    assert attribution.attribute(out, TOUCHES, WEEK, known) is None
    other = Interaction("e1", "c2", T0 + timedelta(days=1), "web", "message", "inbound")
    assert attribution.attribute(other, TOUCHES, WEEK, known) is None


def test_metadata_campaign_id_wins_over_the_last_touch_even_outside_the_window() -> None:
    late = T0 + timedelta(days=30)
    r = attribution.attribute(inbound(late, campaign_id="spring"), TOUCHES, WEEK, {"spring", "summer"})
    assert r is not None and (r.campaign_id, r.channel, r.attributed_by) == ("spring", "email", "metadata")
    # an unknown campaign id in metadata is ignored: the window decides
    r = attribution.attribute(inbound(T0 + timedelta(days=3), campaign_id="nope"), TOUCHES, WEEK, {"spring", "summer"})
    assert r is not None and r.campaign_id == "summer" and r.attributed_by == "window"


def test_purchases_are_conversions_and_their_amount_revenue() -> None:
    r = attribution.attribute(inbound(T0 + timedelta(days=3), "purchase", amount=49.5), TOUCHES, WEEK, {"summer"})
    assert r is not None and r.conversion and r.revenue == 49.5
    r = attribution.attribute(inbound(T0 + timedelta(days=3), "message", amount=10.0), TOUCHES, WEEK, {"summer"})
    assert r is not None and not r.conversion and r.revenue == 0.0
    assert attribution.amount_of({"amount": 12}) == 12.0
    assert attribution.amount_of({"amount": "12"}) is None
    assert attribution.amount_of({"amount": True}) is None
    assert attribution.amount_of(None) is None


def test_marketing_consent_withdrawn_within_the_window_unsubscribes_from_the_last_campaign() -> None:
    at = T0 + timedelta(days=3)
    t = attribution.unsubscribed("c1", "marketing", False, at, TOUCHES, WEEK)
    assert t is not None and t.campaign_id == "summer"
    assert attribution.unsubscribed("c1", "marketing", True, at, TOUCHES, WEEK) is None
    assert attribution.unsubscribed("c1", "service", False, at, TOUCHES, WEEK) is None
    assert attribution.unsubscribed("c1", "marketing", False, T0 + timedelta(days=10), TOUCHES, WEEK) is None
