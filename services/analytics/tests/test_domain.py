"""analytics' rules as pure functions: RFM, churn risk with its reasons and bands, segments."""

from datetime import UTC, datetime, timedelta

from analytics import domain
from analytics.domain import Profile

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def profile(**fields: object) -> Profile:
    return Profile(first_seen=NOW - timedelta(days=365), **fields)  # type: ignore[arg-type]


def test_recency_counts_whole_days_and_never_goes_below_zero() -> None:
    assert domain.rfm(profile(), NOW).recency_days is None  # never interacted
    just_under = profile(last_interaction_at=NOW - timedelta(days=3, seconds=-1))
    assert domain.rfm(just_under, NOW).recency_days == 2
    assert domain.rfm(profile(last_interaction_at=NOW - timedelta(days=3)), NOW).recency_days == 3
    # an event stamped a little after the time asked about (clocks differ) reads as today
    assert domain.rfm(profile(last_interaction_at=NOW + timedelta(minutes=5)), NOW).recency_days == 0


def test_frequency_and_value_are_the_profile_s_rounded_to_cents() -> None:
    rfm = domain.rfm(profile(interactions=7, purchase_value=19.99 + 0.004), NOW)
    assert (rfm.frequency, rfm.monetary) == (7, 19.99)
    assert domain.rfm(profile(purchase_value=19.996), NOW).monetary == 20.0


def test_risk_adds_the_points_of_every_reason_and_caps_at_100() -> None:
    quiet = profile(last_interaction_at=NOW - timedelta(days=60))  # exactly the inactivity bound
    risk = domain.churn_risk(quiet, NOW)
    assert [r.code for r in risk.reasons] == ["inactive"]
    assert (risk.score, risk.band) == (30, "medium")
    everything = profile(
        last_interaction_at=NOW - timedelta(days=90),
        recent_complaints=2,
        sla_breaches=1,
        last_csat=3,
        open_cases=2,
    )
    risk = domain.churn_risk(everything, NOW)
    codes = [r.code for r in risk.reasons]
    assert codes == ["inactive", "repeated_complaints", "sla_breached", "low_csat", "open_cases"]
    assert (risk.score, risk.band) == (100, "high")  # 30 + 25 + 20 + 20 + 10, capped


def test_risk_bands_at_their_bounds() -> None:
    recent = NOW - timedelta(days=1)
    low = domain.churn_risk(profile(last_interaction_at=recent, recent_complaints=1, open_cases=2), NOW)
    assert (low.score, low.band) == (20, "low")  # complaint 10 + open cases 10
    medium = domain.churn_risk(profile(last_interaction_at=recent, recent_complaints=2), NOW)
    assert (medium.score, medium.band) == (25, "medium")
    high = domain.churn_risk(profile(last_interaction_at=NOW - timedelta(days=61), last_csat=6), NOW)
    assert (high.score, high.band) == (50, "high")
    satisfied = domain.churn_risk(profile(last_interaction_at=recent, last_csat=7), NOW)
    assert satisfied.reasons == ()


def test_without_any_interaction_inactivity_counts_from_first_seen() -> None:
    seen_long_ago = domain.churn_risk(profile(), NOW)
    assert [r.code for r in seen_long_ago.reasons] == ["inactive"]
    assert "365 days" in seen_long_ago.reasons[0].detail
    just_arrived = Profile(first_seen=NOW - timedelta(days=2))
    assert domain.churn_risk(just_arrived, NOW).reasons == ()


def test_segments_in_order_of_precedence() -> None:
    def segment_of(p: Profile) -> str:
        return domain.segment(p, NOW, domain.churn_risk(p, NOW))

    recent = NOW - timedelta(days=1)
    # vip wins over everything, even a high risk
    assert segment_of(profile(vip=True, last_interaction_at=NOW - timedelta(days=200), sla_breaches=3)) == "vip"
    assert segment_of(profile(last_interaction_at=NOW - timedelta(days=61), last_csat=2)) == "at_risk"
    assert segment_of(profile(last_interaction_at=NOW - timedelta(days=120))) == "dormant"
    assert segment_of(Profile(first_seen=NOW - timedelta(days=29), last_interaction_at=recent)) == "new"
    champion = profile(last_interaction_at=recent, purchases=5, purchase_value=1000.0, interactions=12)
    assert segment_of(champion) == "champion"
    just_short = profile(last_interaction_at=recent, purchases=5, purchase_value=999.99, interactions=12)
    assert segment_of(just_short) == "loyal"
    assert segment_of(profile(last_interaction_at=recent, interactions=9)) == "regular"
