"""analytics' rules: recency, frequency and value (RFM), churn risk with its reasons, segments.

Pure functions of a customer's profile and a point in time. The time is the time of the event
being applied, never the wall clock, so a replay of the same events gives the same answers.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.analytics import RiskReason

INACTIVE_AFTER = timedelta(days=60)
DORMANT_AFTER = timedelta(days=120)
NEW_FOR = timedelta(days=30)


@dataclass(frozen=True)
class Profile:
    """What analytics knows about one customer, folded from their events."""

    first_seen: datetime
    last_interaction_at: datetime | None = None
    interactions: int = 0
    purchases: int = 0
    purchase_value: float = 0.0
    complaints: int = 0
    recent_complaints: int = 0  # in the last 90 days before last_interaction_at
    sla_breaches: int = 0
    open_cases: int = 0
    last_csat: int | None = None  # 0-10
    vip: bool = False


@dataclass(frozen=True)
class Rfm:
    recency_days: int | None  # days since the last interaction; None: never
    frequency: int  # interactions
    monetary: float  # purchase value


@dataclass(frozen=True)
class Risk:
    score: int  # 0-100
    band: str  # low | medium | high
    reasons: tuple[RiskReason, ...]


def rfm(p: Profile, now: datetime) -> Rfm:
    recency = None if p.last_interaction_at is None else max(0, (now - p.last_interaction_at).days)
    return Rfm(recency, p.interactions, round(p.purchase_value, 2))


def churn_risk(p: Profile, now: datetime) -> Risk:
    """A transparent points score: each reason adds points, capped at 100."""
    reasons: list[RiskReason] = []
    last = p.last_interaction_at or p.first_seen
    if now - last >= INACTIVE_AFTER:
        reasons.append(RiskReason(code="inactive", points=30, detail=f"no contact for {(now - last).days} days"))
    if p.recent_complaints >= 2:
        reasons.append(
            RiskReason(code="repeated_complaints", points=25, detail=f"{p.recent_complaints} complaints in 90 days")
        )
    elif p.recent_complaints == 1:
        reasons.append(RiskReason(code="complaint", points=10, detail="a complaint in the last 90 days"))
    if p.sla_breaches:
        reasons.append(
            RiskReason(code="sla_breached", points=20, detail=f"{p.sla_breaches} SLA breaches on their cases")
        )
    if p.last_csat is not None and p.last_csat <= 6:
        reasons.append(RiskReason(code="low_csat", points=20, detail=f"last satisfaction score {p.last_csat}/10"))
    if p.open_cases >= 2:
        reasons.append(RiskReason(code="open_cases", points=10, detail=f"{p.open_cases} cases open"))
    score = min(100, sum(r.points for r in reasons))
    band = "high" if score >= 50 else "medium" if score >= 25 else "low"
    return Risk(score, band, tuple(reasons))


def segment(p: Profile, now: datetime, risk: Risk) -> str:
    last = p.last_interaction_at or p.first_seen
    if p.vip:
        return "vip"
    if risk.band == "high":
        return "at_risk"
    if now - last >= DORMANT_AFTER:
        return "dormant"
    if now - p.first_seen < NEW_FOR:
        return "new"
    if p.purchases >= 5 and p.purchase_value >= 1000:
        return "champion"
    if p.interactions >= 10:
        return "loyal"
    return "regular"
