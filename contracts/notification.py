"""The notification service's event payloads, all on crm.notification.v1, keyed by customer id
(campaign lifecycle events: by `campaign:<campaign_id>`, on no customer's timeline).

Every decision about a message is an event on the customer's timeline: scheduled (with the
instant it may go out), sent, delivered (where the channel confirms receipt), failed (each
try; `final` after the last one, which also leaves a dead-letter record) and suppressed (with
the reason). Staff messages about a customer's case are on that customer's timeline too.
No payload carries an address or message text: those stay in notification's own database.
A message of a campaign carries its `campaign_id` (docs/campaigns.md).
"""

from datetime import datetime
from typing import Literal, get_args

from pydantic import Field

from contracts import topics
from contracts.analytics import RiskBand, Segment
from contracts.events import Channel, EventData, EventType

NotificationChannel = Literal["email", "sms", "webhook"]
NOTIFICATION_CHANNELS: tuple[str, ...] = get_args(NotificationChannel)
Audience = Literal["customer", "staff"]
Purpose = Literal["service", "marketing"]
# Quiet hours are not a suppression: they delay (scheduled.delayed_reason = "quiet_hours"). Set
# after a message was scheduled, they hold it when it is due and it is scheduled again: the
# latest scheduled event of a notification_id is its plan.
# Non-critical customer messages over the frequency cap go into a digest (scheduled.digest_id)
# rather than being suppressed, unless digests are switched off.
SuppressionReason = Literal["no_consent", "blocked_channel", "cap", "duplicate", "no_address"]
SUPPRESSION_REASONS: tuple[str, ...] = get_args(SuppressionReason)
DelayReason = Literal["quiet_hours", "not_before"]


class NotificationEvent(EventData):
    notification_id: str = Field(min_length=1, max_length=64, description="Stable id of this one message.")
    customer_id: str = Field(min_length=1, max_length=64, description="The customer the message is about.")
    rule: str = Field(min_length=1, max_length=64, description="The rule that made it.")
    channel: NotificationChannel | None = Field(description="null when no channel could be chosen.")
    audience: Audience
    campaign_id: str | None = Field(
        default=None, max_length=64, description="The campaign the message belongs to; null for a rule's message."
    )


class NotificationScheduled(NotificationEvent):
    source_event_id: str = Field(min_length=1, max_length=64, description="The event the rule matched.")
    source_event_type: str = Field(min_length=1, max_length=128)
    recipient: str = Field(min_length=1, max_length=200, description="customer:<id> or staff:<owner|team>:<name>.")
    purpose: Purpose
    critical: bool = Field(description="Service-critical: needs no marketing consent and passes frequency caps.")
    language: str = Field(min_length=1, max_length=16, description="The template language used.")
    deliver_at: datetime = Field(description="Not sent before this instant.")
    delayed_reason: DelayReason | None = Field(description="Why deliver_at is later than the decision, if it is.")
    digest_id: str | None = Field(
        default=None,
        max_length=64,
        description="Set when the message goes out as part of a digest: the digest's notification_id"
        " (its own sent/failed events follow under that id, rule `digest`). On the digest's own"
        " scheduled event it is the digest's id.",
    )


class NotificationSent(NotificationEvent):
    attempt: int = Field(ge=1)


class NotificationDelivered(NotificationEvent):
    attempt: int = Field(ge=1)


class NotificationFailed(NotificationEvent):
    attempt: int = Field(ge=0, description="0 when it failed before a try (e.g. its outcome was lost in a crash).")
    reason: str = Field(min_length=1, max_length=200, description="Machine-readable, e.g. http_503, smtp_550.")
    final: bool = Field(description="No more tries: the message is dead-lettered.")
    next_attempt_at: datetime | None = Field(description="When the next try is due; null when final.")


class NotificationSuppressed(NotificationEvent):
    source_event_id: str = Field(min_length=1, max_length=64)
    source_event_type: str = Field(min_length=1, max_length=128)
    recipient: str = Field(min_length=1, max_length=200)
    reason: SuppressionReason


# --- campaigns: events about a campaign, not a customer (subject campaign:<campaign_id>) ----------

CAMPAIGN_SUBJECT_PREFIX = "campaign:"  # servicekit.timeline keeps these on no customer's timeline
CampaignStatus = Literal["scheduled", "sending", "paused", "cancelled", "completed"]
CAMPAIGN_STATUSES: tuple[str, ...] = get_args(CampaignStatus)
CAMPAIGN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def campaign_subject(campaign_id: str) -> str:
    return f"{CAMPAIGN_SUBJECT_PREFIX}{campaign_id}"


class CampaignAudience(EventData):
    """Who a campaign is for: every filter given must match (none given: every customer)."""

    segment: Segment | None = None
    risk_band: RiskBand | None = None
    region: str | None = Field(default=None, pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$", examples=["DE", "US-CA"])
    channel_used: Channel | None = Field(default=None, description="The customer has interacted on this channel.")
    vip: bool | None = None
    last_contact_before: datetime | None = Field(default=None, description="Last interaction before this instant.")
    last_contact_after: datetime | None = Field(default=None, description="Last interaction after this instant.")


class CampaignTemplate(EventData):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=10_000)


class CampaignCreated(EventData):
    campaign_id: str = Field(pattern=CAMPAIGN_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    audience: CampaignAudience
    purpose: Purpose
    templates: dict[str, CampaignTemplate] = Field(description="Per language; the default language is required.")
    send_at: datetime = Field(description="When the campaign is due (its creation time when not given).")
    created_by: str = Field(min_length=1, max_length=100, description="The API key that created it.")


class CampaignStatusChanged(EventData):
    campaign_id: str = Field(pattern=CAMPAIGN_ID_PATTERN)
    status: CampaignStatus
    reason: str | None = Field(max_length=200, description="Why, when known: paused, cancelled, all_decided...")


CAMPAIGN_CREATED = "crm.notification.campaign_created.v1"
CAMPAIGN_STATUS_CHANGED = "crm.notification.campaign_status_changed.v1"
CAMPAIGN_EVENT_PREFIX = "crm.notification.campaign_"

NOTIFICATION_SCHEDULED = "crm.notification.scheduled.v1"
NOTIFICATION_SENT = "crm.notification.sent.v1"
NOTIFICATION_DELIVERED = "crm.notification.delivered.v1"
NOTIFICATION_FAILED = "crm.notification.failed.v1"
NOTIFICATION_SUPPRESSED = "crm.notification.suppressed.v1"

EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        NOTIFICATION_SCHEDULED,
        topics.NOTIFICATION,
        NotificationScheduled,
        "A rule made a message; it goes out on `channel` at `deliver_at` or later.",
    ),
    EventType(NOTIFICATION_SENT, topics.NOTIFICATION, NotificationSent, "The channel accepted the message."),
    EventType(
        NOTIFICATION_DELIVERED,
        topics.NOTIFICATION,
        NotificationDelivered,
        "The receiver confirmed the message (webhooks: a 2xx answer).",
    ),
    EventType(
        NOTIFICATION_FAILED,
        topics.NOTIFICATION,
        NotificationFailed,
        "A try failed; retried with backoff unless `final`, which dead-letters the message.",
    ),
    EventType(
        NOTIFICATION_SUPPRESSED,
        topics.NOTIFICATION,
        NotificationSuppressed,
        "No message goes out, with the reason (consent, blocked channel, cap, duplicate, no address).",
    ),
    EventType(
        CAMPAIGN_CREATED,
        topics.NOTIFICATION,
        CampaignCreated,
        "A campaign was created (subject campaign:<id>; on no customer's timeline).",
    ),
    EventType(
        CAMPAIGN_STATUS_CHANGED,
        topics.NOTIFICATION,
        CampaignStatusChanged,
        "A campaign's status changed (subject campaign:<id>; on no customer's timeline).",
    ),
)
