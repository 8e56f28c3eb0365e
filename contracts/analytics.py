"""analytics' events on crm.analytics.v1: what the front line should see of a customer's risk."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import topics
from contracts.events import EventData, EventType

RiskBand = Literal["low", "medium", "high"]
Segment = Literal["vip", "champion", "loyal", "new", "at_risk", "dormant", "regular"]

RISK_CHANGED = "crm.analytics.risk_changed.v1"
SEGMENT_CHANGED = "crm.analytics.segment_changed.v1"
CAMPAIGN_AUDIENCE_RESOLVED = "crm.analytics.campaign_audience_resolved.v1"
CAMPAIGN_RESPONSE = "crm.analytics.campaign_response.v1"
MAX_AUDIENCE_PART = 1000


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


class CampaignAudienceResolved(EventData):
    """Subject `campaign:<campaign_id>`: one part of the audience fixed when the campaign was due."""

    campaign_id: str = Field(min_length=1, max_length=64)
    part: int = Field(ge=1, description="1-based")
    parts: int = Field(ge=1)
    audience_size: int = Field(ge=0, description="Customers in all parts together")
    customer_ids: list[str] = Field(
        max_length=MAX_AUDIENCE_PART,
        description="Merged customers once, under the survivor; erased customers never",
    )
    resolved_at: str = Field(description="RFC 3339")


class CampaignResponse(EventData):
    """Subject: the customer. An inbound interaction attributed to a campaign that reached them."""

    campaign_id: str = Field(min_length=1, max_length=64)
    channel: str = Field(description="The channel the campaign reached them on")
    interaction_event_id: str
    kind: str = Field(description="The interaction's kind, e.g. purchase")
    amount: float | None = Field(description="metadata.amount of the interaction; null: none")
    attributed_by: Literal["metadata", "window"] = Field(
        description="metadata: the interaction named the campaign;"
        " window: its last touch within CAMPAIGN_ATTRIBUTION_WINDOW_S"
    )


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(RISK_CHANGED, topics.ANALYTICS, RiskChanged, "The customer's churn-risk band changed, with the reasons."),
    EventType(SEGMENT_CHANGED, topics.ANALYTICS, SegmentChanged, "The customer moved to another segment."),
    EventType(
        CAMPAIGN_AUDIENCE_RESOLVED,
        topics.ANALYTICS,
        CampaignAudienceResolved,
        "A part of a campaign's audience, fixed when the campaign was due.",
    ),
    EventType(CAMPAIGN_RESPONSE, topics.ANALYTICS, CampaignResponse, "The customer answered a campaign."),
)
