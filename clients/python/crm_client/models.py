"""What the API answers, as pydantic models.

Each model mirrors one component schema of contracts/openapi/*.json (`SCHEMAS` says which); a test
in `make test` compares their fields, required-ness and types, so the client cannot drift from the
API. Unknown fields are ignored, so a newer server that adds a field does not break an older client.
Enumerations are plain strings for the same reason: a new case status is not a client error.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# ---- intake: interactions, timeline, customers -------------------------------------------------


class Accepted(_Model):
    """One recorded interaction."""

    event_id: str  # pass it as wait_for to a timeline read
    customer_id: str  # the customer it was recorded for (the survivor after a merge)
    event_ids: list[str]  # every event the interaction stored, in order (a merge first, if any)


class TimelineEvent(_Model):
    event_id: str
    type: str
    time: datetime
    source: str
    subject: str  # the customer id it was recorded under (a merged id included)
    data: dict[str, Any]


class Timeline(_Model):
    """One page of a customer's timeline, newest first."""

    customer_id: str  # the survivor's id when a merged id was asked for
    events: list[TimelineEvent]
    next_before: str | None  # pass as before= for the next page; None on the last one


class CustomerIdentifier(_Model):
    kind: str
    value: str | None
    channel: str | None
    trust: str


class QuietHours(_Model):
    start: str
    end: str
    time_zone: str


class Preferences(_Model):
    language: str | None = None
    preferred_channel: str | None = None
    quiet_hours: QuietHours | None = None
    region: str | None = None
    vip: bool = False


class Consent(_Model):
    purpose: str
    channel: str | None
    granted: bool
    updated_at: str


class Customer(_Model):
    customer_id: str  # the survivor's id when a merged id was asked for
    created_at: str
    erased_at: str | None
    name: str | None
    identifiers: list[CustomerIdentifier]
    merged_ids: list[str]
    preferences: Preferences
    consent: list[Consent]
    fields: dict[str, Any]  # typed fields by name; a personal one reads "[erased]" after erasure
    tags: list[str]


class CustomerFieldsChange(_Model):
    """The customer's fields after set_customer_fields, and the event it stored (none if nothing changed)."""

    customer_id: str
    event_ids: list[str]
    fields: dict[str, Any]


class CustomerTagsChange(_Model):
    """The customer's tags after change_customer_tags, and the event it stored (none if nothing changed)."""

    customer_id: str
    event_ids: list[str]
    tags: list[str]


class MergeResult(_Model):
    """A manual merge or an unmerge (docs/merge-and-unmerge.md)."""

    survivor_id: str
    merged_id: str
    event_ids: list[str]
    moved_ids: list[str]  # unmerge: ids merged into merged_id that came back with it


# ---- case: cases, queues, agents ---------------------------------------------------------------


class Handover(_Model):
    owner: str
    previous_owner: str | None
    team: str
    at: datetime


class Note(_Model):
    author: str
    text: str
    at: datetime


class PendingSpan(_Model):
    from_: datetime = Field(alias="from")
    to: datetime | None


class Survey(_Model):
    requested_at: datetime | None
    due_at: datetime | None
    score: int | None


class SlaTarget(_Model):
    target_seconds: float
    elapsed_seconds: float
    due_at: datetime | None
    met_at: datetime | None
    warned: bool
    breached: bool


class Sla(_Model):
    clock: str
    first_response: SlaTarget
    resolution: SlaTarget


class HistoryEntry(_Model):
    event_id: str
    version: int
    type: str
    time: datetime
    data: dict[str, Any]


class _CaseState(_Model):
    case_id: str
    customer_id: str
    version: int  # send it back as version= with the next command on this case
    type: str
    priority: str
    status: str
    allowed_transitions: list[str]
    team: str
    queue: str
    owner: str | None
    title: str | None
    opened_at: datetime | None
    opened_by: str | None
    updated_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    pending_spans: list[PendingSpan]
    handovers: list[Handover]
    notes: list[Note]
    interactions: list[str]
    escalated: bool
    breached: bool
    fields: dict[str, Any]  # typed fields by name; personal ones "[erased]" after the customer's erasure
    tags: list[str]
    survey: Survey


class Case(_CaseState):
    """A case with its SLA and whole history (GET /v1/cases/{case_id})."""

    sla: Sla
    history: list[HistoryEntry]


class CaseChange(_CaseState):
    """The case after a command (assign, reply, note, status...), and the events it stored."""

    event_ids: list[str]


class CaseRow(_Model):
    case_id: str
    customer_id: str
    version: int
    type: str
    priority: str
    status: str
    team: str
    queue: str
    owner: str | None
    title: str | None
    opened_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    breached: bool
    escalated: bool
    awaiting_survey: bool


class CaseList(_Model):
    cases: list[CaseRow]  # newest first
    next_before: str | None


class QueueCase(_Model):
    case_id: str
    customer_id: str
    version: int
    type: str
    priority: str
    status: str
    team: str
    queue: str
    owner: str | None
    title: str | None
    opened_at: datetime
    updated_at: datetime
    breached: bool
    escalated: bool
    due_at: datetime | None


class OwnerAgent(_Model):
    agent_id: str
    name: str
    status: str
    capacity: int
    load: int


class OwnerQueue(_Model):
    owner: str
    agent: OwnerAgent | None
    cases: list[QueueCase]


class Queue(_Model):
    """A team's work: unassigned cases (oldest due first), per owner, and escalations."""

    team: str
    unassigned: list[QueueCase]
    owners: list[OwnerQueue]
    escalations: list[QueueCase]


class AgentChange(_Model):
    agent_id: str
    version: int
    name: str
    teams: list[str]
    capacity: int
    skills: list[str]
    status: str
    load: int
    updated_at: datetime
    idle_since: datetime | None
    event_ids: list[str]
    handed_back: list[str]  # going offline: the cases given back to the team's queue


# ---- campaigns: notification sends them, analytics measures them --------------------------------


class CampaignCounts(_Model):
    """How far the campaign got: decisions per outcome (sent includes delivered)."""

    scheduled: int
    sent: int
    delivered: int
    failed: int
    suppressed: dict[str, int]  # by reason: no_consent, blocked_channel, cap, no_address...
    pending: int  # targets not decided yet


class Campaign(_Model):
    """A campaign as notification sends it (GET /v1/campaigns/{campaign_id}, and after each command)."""

    campaign_id: str
    name: str
    status: str  # scheduled, sending, paused, cancelled, completed
    reason: str | None
    purpose: str
    audience: dict[str, Any]
    templates: dict[str, Any]
    send_at: datetime
    created_by: str
    created_at: datetime
    updated_at: datetime
    audience_size: int | None  # None until analytics has resolved the audience
    counts: CampaignCounts


class CampaignList(_Model):
    campaigns: list[Campaign]  # newest first
    next_before: str | None


class ChannelResults(_Model):
    sent: int
    delivered: int
    responded: int
    response_rate: float | None
    conversions: int
    revenue: float
    unsubscribed: int


class CampaignResults(_Model):
    """What the campaign achieved, as analytics attributes responses (GET analytics /v1/campaigns/{id}/results)."""

    campaign_id: str
    name: str
    status: str
    audience_size: int | None
    sent: int
    delivered: int
    responded: int
    response_rate: float | None  # responders / sent; None while nothing was sent
    conversions: int  # attributed purchases
    revenue: float  # sum of metadata.amount of the attributed purchases
    unsubscribed: int
    by_channel: dict[str, ChannelResults]


# ---- analytics: KPIs and reports ---------------------------------------------------------------


class KpiFilters(_Model):
    channel: str | None
    region: str | None
    case_type: str | None
    priority: str | None
    team: str | None


class InteractionKpis(_Model):
    volume: int
    inbound: int
    complaints: int


class Durations(_Model):
    mean: float | None  # seconds; None without cases
    p90: float | None


class CaseKpis(_Model):
    opened: int
    first_response_seconds: Durations
    resolved: int
    resolution_seconds: Durations
    handle_seconds: Durations  # from the first assignment to resolution
    closed_same_day: int
    first_contact_resolution_pct: float | None
    sla_compliance_pct: float | None


class CsatKpis(_Model):
    responses: int
    mean: float | None
    satisfied_pct: float | None


class NpsKpis(_Model):
    responses: int
    score: float | None


class NotificationKpis(_Model):
    scheduled: int
    sent: int
    delivered: int
    failed: int
    suppressed: int
    delivery_rate_pct: float | None
    suppression_rate_pct: float | None


class KpiTotals(_Model):
    interactions: InteractionKpis
    cases: CaseKpis
    csat: CsatKpis
    nps: NpsKpis
    notifications: NotificationKpis


class KpiBucket(KpiTotals):
    start: str  # RFC 3339, the start of the hour or day


class KpiGroup(_Model):
    """One value of group_by: the case KPIs and CSAT of its cases (docs/reports.md)."""

    group: str | None  # the team, owner, type, tag or field value; None: none
    cases: CaseKpis
    cases_handled: int  # cases resolved in the range; with group_by="owner", per agent
    csat: CsatKpis


class Kpis(_Model):
    """Customer-service KPIs over [from, to) (GET analytics /v1/kpis)."""

    from_: str = Field(alias="from")
    to: str
    window: str
    filters: KpiFilters
    totals: KpiTotals
    series: list[KpiBucket]
    group_by: str | None = None
    groups: list[KpiGroup] | None = None  # only with group_by: by value, None last
    sums_to_totals: bool | None = None  # only with group_by: False for "tag" (a case in each tag's row)


# ---- errors ----------------------------------------------------------------------------------


class FieldError(_Model):
    """One thing wrong with a request, named as the client wrote it (e.g. "channel", "customer.email")."""

    field: str
    reason: str
    index: int | None = None  # which item of a batch
    type: str | None = None


# The OpenAPI component schema each model mirrors: (service, schema name).
SCHEMAS: dict[type[BaseModel], tuple[str, str]] = {
    KpiFilters: ("analytics", "KpiFilters"),
    InteractionKpis: ("analytics", "InteractionKpis"),
    Durations: ("analytics", "Durations"),
    CaseKpis: ("analytics", "CaseKpis"),
    CsatKpis: ("analytics", "CsatKpis"),
    NpsKpis: ("analytics", "NpsKpis"),
    NotificationKpis: ("analytics", "NotificationKpis"),
    KpiTotals: ("analytics", "KpiTotals"),
    KpiBucket: ("analytics", "KpiBucket"),
    KpiGroup: ("analytics", "KpiGroup"),
    Kpis: ("analytics", "KpisOut"),
    Accepted: ("intake", "AcceptedOut"),
    TimelineEvent: ("intake", "TimelineItem"),
    Timeline: ("intake", "TimelinePage"),
    CustomerIdentifier: ("intake", "CustomerIdentifierOut"),
    QuietHours: ("intake", "QuietHours"),
    Preferences: ("intake", "Preferences"),
    Consent: ("intake", "ConsentOut"),
    MergeResult: ("intake", "MergeOut"),
    Customer: ("intake", "CustomerOut"),
    CustomerFieldsChange: ("intake", "FieldsChangedOut"),
    CustomerTagsChange: ("intake", "TagsChangedOut"),
    Handover: ("case", "HandoverOut"),
    Note: ("case", "NoteOut"),
    PendingSpan: ("case", "PendingSpan"),
    Survey: ("case", "SurveyOut"),
    SlaTarget: ("case", "SlaTargetOut"),
    Sla: ("case", "SlaOut"),
    HistoryEntry: ("case", "HistoryEntry"),
    Case: ("case", "CaseDetailOut"),
    CaseChange: ("case", "CommandOut"),
    CaseRow: ("case", "CaseRow"),
    CaseList: ("case", "CaseListOut"),
    QueueCase: ("case", "QueueCase"),
    OwnerAgent: ("case", "OwnerAgent"),
    OwnerQueue: ("case", "OwnerQueue"),
    Queue: ("case", "QueueOut"),
    AgentChange: ("case", "AgentCommandOut"),
    CampaignCounts: ("notification", "CountsOut"),
    Campaign: ("notification", "CampaignOut"),
    CampaignList: ("notification", "CampaignsOut"),
    ChannelResults: ("analytics", "ChannelResults"),
    CampaignResults: ("analytics", "CampaignResults"),
    FieldError: ("intake", "FieldError"),
}
