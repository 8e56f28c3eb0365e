"""analytics' events on crm.analytics.v1: what the front line should see of a customer's risk."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import topics
from contracts.events import EventData, EventType

RiskBand = Literal["low", "medium", "high"]
Segment = Literal["vip", "champion", "loyal", "new", "at_risk", "dormant", "regular"]

RISK_CHANGED = "crm.analytics.risk_changed.v1"
SEGMENT_CHANGED = "crm.analytics.segment_changed.v1"


class RiskReason(BaseModel):
    model_config = ConfigDict(frozen=True)
    code: str = Field(description="Machine-readable, e.g. inactive, repeated_complaints, sla_breached, low_csat")
    points: int = Field(description="How much this reason adds to the score")
    detail: str = Field(description="In words, without personal data")


class RiskChanged(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    band: RiskBand
    previous_band: RiskBand | None
    score: int = Field(ge=0, le=100)
    reasons: list[RiskReason]


class SegmentChanged(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    segment: Segment
    previous_segment: Segment | None


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(RISK_CHANGED, topics.ANALYTICS, RiskChanged, "The customer's churn-risk band changed, with the reasons."),
    EventType(SEGMENT_CHANGED, topics.ANALYTICS, SegmentChanged, "The customer moved to another segment."),
)
