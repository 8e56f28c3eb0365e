"""The case service's event payloads, all on crm.case.v1, keyed by customer id (agents' by
`agent:<agent_id>`: they are about staff, and on no customer's timeline).

Every payload names the case and the customer; `type` and `priority` travel wherever analytics
groups by them. SLA state is never an event field to edit: it is derived from these events.
"""

from datetime import datetime
from typing import Literal, get_args

from pydantic import Field

from contracts import topics
from contracts.events import Channel, EventData, EventType, InteractionKind, SealedData

CaseType = Literal["repair", "installation", "billing", "complaint", "request", "inquiry", "other"]
CASE_TYPES: tuple[str, ...] = get_args(CaseType)
Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[str, ...] = get_args(Priority)  # lowest first
Status = Literal["new", "open", "pending", "resolved", "closed"]
STATUSES: tuple[str, ...] = get_args(Status)
SlaTarget = Literal["first_response", "resolution"]
FollowupKind = Literal["csat_survey"]


class CaseEvent(EventData):
    case_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)


class CaseOpened(CaseEvent, SealedData):
    type: CaseType
    priority: Priority
    status: Status = Field(description="Always 'new' for a case opened now.")
    team: str = Field(min_length=1, max_length=64)
    queue: str | None = Field(default=None, max_length=128, description="The team queue the case waits in.")
    opened_by: str | None = Field(description="Event id of the interaction that opened it; null when an agent did.")
    title: str | None = Field(default=None, max_length=200)


class CaseAssigned(CaseEvent):
    owner: str = Field(min_length=1, max_length=64)
    previous_owner: str | None = Field(description="The owner handing over; null for the first assignment.")
    team: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(
        default=None, max_length=64, description="'auto' when automatic assignment chose the owner; null by hand."
    )


class CaseStatusChanged(CaseEvent, SealedData):
    from_status: Status
    to_status: Status = Field(description="'resolved' is the resolution; 'open' from 'resolved' is a reopen.")
    reason: str | None = Field(max_length=500)
    type: CaseType
    priority: Priority


class CasePriorityChanged(CaseEvent, SealedData):
    from_priority: Priority
    to_priority: Priority
    reason: str | None = Field(default=None, max_length=500)
    type: CaseType


class CaseNoteAdded(CaseEvent, SealedData):
    author: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=10_000, description="Personal data: sealed.")


class CaseInteractionLinked(CaseEvent):
    interaction_event_id: str = Field(min_length=1, max_length=64)
    kind: InteractionKind | None = None
    channel: Channel | None = None
    direction: Literal["inbound", "outbound"] | None = Field(
        default=None, description="An outbound interaction linked before any other response is the first response."
    )


class CaseSla(CaseEvent):
    target: SlaTarget
    due_at: datetime = Field(description="When the target's business time ran out (or its warning share).")
    owner: str | None
    team: str = Field(min_length=1, max_length=64)
    priority: Priority
    type: CaseType


class CaseEscalated(CaseEvent):
    team: str = Field(min_length=1, max_length=64)
    queue: str = Field(min_length=1, max_length=128, description="The team's escalation queue the case moved to.")
    reason: str = Field(max_length=500)


class CaseFollowupRequested(CaseEvent):
    kind: FollowupKind
    due_at: datetime = Field(description="When the survey should go out.")


class CaseSurveyRecorded(CaseEvent):
    score: int = Field(ge=0, le=10, description="The customer's satisfaction score.")
    interaction_event_id: str = Field(min_length=1, max_length=64)


# Issue 25, replies reach the case: the optional next-reply target. Its own types, since a new
# `target` value in CaseSla would break consumers of sla_warning/sla_breached (contracts/compat.py).
class CaseReplySla(CaseEvent):
    reply_to: str = Field(
        min_length=1, max_length=64, description="Event id of the customer's inbound interaction still unanswered."
    )
    due_at: datetime = Field(description="When the next-reply target's business time ran out (or its warning share).")
    owner: str | None
    team: str = Field(min_length=1, max_length=64)
    priority: Priority
    type: CaseType


ReplyChannel = Literal["email", "sms"]


class CaseReplySent(CaseEvent, SealedData):
    channel: ReplyChannel = Field(description="The channel notification delivers it on (rule agent_reply).")
    author: str = Field(min_length=1, max_length=64)
    body: str = Field(min_length=1, max_length=10_000, description="Personal data: sealed.")
    team: str = Field(min_length=1, max_length=64)
    type: CaseType
    priority: Priority


AgentStatus = Literal["online", "away", "offline"]
AGENT_STATUSES: tuple[str, ...] = get_args(AgentStatus)


class CaseUnassigned(CaseEvent):
    previous_owner: str = Field(min_length=1, max_length=64)
    team: str = Field(min_length=1, max_length=64)
    reason: str = Field(max_length=64, description="'agent_offline': the owner went offline; back to the queue.")


class AgentEvent(EventData):
    """About a member of staff, not a customer: subject `agent:<agent_id>`, on no timeline."""

    agent_id: str = Field(min_length=1, max_length=64)


class AgentUpdated(AgentEvent):
    name: str = Field(min_length=1, max_length=100, description="The staff member's name (not a customer's).")
    teams: list[str] = Field(max_length=32, description="The teams whose cases the agent works.")
    capacity: int = Field(ge=0, le=1000, description="How many open cases the agent takes at once.")
    skills: list[CaseType] = Field(description="The case types the agent handles.")


class AgentStatusChanged(AgentEvent):
    from_status: AgentStatus
    to_status: AgentStatus


CASE_OPENED = "crm.case.opened.v1"
CASE_ASSIGNED = "crm.case.assigned.v1"
CASE_STATUS_CHANGED = "crm.case.status_changed.v1"
CASE_PRIORITY_CHANGED = "crm.case.priority_changed.v1"
CASE_NOTE_ADDED = "crm.case.note_added.v1"
CASE_INTERACTION_LINKED = "crm.case.interaction_linked.v1"
CASE_SLA_WARNING = "crm.case.sla_warning.v1"
CASE_SLA_BREACHED = "crm.case.sla_breached.v1"
CASE_ESCALATED = "crm.case.escalated.v1"
CASE_FOLLOWUP_REQUESTED = "crm.case.followup_requested.v1"
CASE_SURVEY_RECORDED = "crm.case.survey_recorded.v1"
CASE_REPLY_SLA_WARNING = "crm.case.reply_sla_warning.v1"
CASE_REPLY_SLA_BREACHED = "crm.case.reply_sla_breached.v1"
# replies delivered (issue 25)
CASE_REPLY_SENT = "crm.case.reply_sent.v1"
CASE_UNASSIGNED = "crm.case.unassigned.v1"
AGENT_UPDATED = "crm.case.agent_updated.v1"
AGENT_STATUS_CHANGED = "crm.case.agent_status_changed.v1"
# Events about agents, not customers: on no customer's timeline, in no customer's insights.
AGENT_EVENT_PREFIX = "crm.case.agent_"

# Free text agents write may name people: sealed under the customer's data key (docs/product.md §9).
CASE_PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    CASE_OPENED: ("title",),
    CASE_STATUS_CHANGED: ("reason",),
    CASE_PRIORITY_CHANGED: ("reason",),
    CASE_NOTE_ADDED: ("text",),
    # replies delivered (issue 25)
    CASE_REPLY_SENT: ("body",),
}

EVENT_TYPES: tuple[EventType, ...] = (
    EventType(CASE_OPENED, topics.CASE, CaseOpened, "A case (ticket) was opened, by a rule or an agent."),
    EventType(CASE_ASSIGNED, topics.CASE, CaseAssigned, "The case has a new owner; previous_owner handed it over."),
    EventType(
        CASE_STATUS_CHANGED,
        topics.CASE,
        CaseStatusChanged,
        "Lifecycle step: new, open, pending, resolved, closed; resolved to open is a reopen.",
    ),
    EventType(CASE_PRIORITY_CHANGED, topics.CASE, CasePriorityChanged, "The case's priority changed."),
    EventType(CASE_NOTE_ADDED, topics.CASE, CaseNoteAdded, "An agent added a note."),
    EventType(CASE_INTERACTION_LINKED, topics.CASE, CaseInteractionLinked, "An interaction was linked to the case."),
    EventType(
        CASE_SLA_WARNING, topics.CASE, CaseSla, "A share of an SLA target's business time is used up (once per target)."
    ),
    EventType(CASE_SLA_BREACHED, topics.CASE, CaseSla, "An SLA target's business time ran out (once per target)."),
    EventType(CASE_ESCALATED, topics.CASE, CaseEscalated, "The case moved to its team's escalation queue."),
    EventType(
        CASE_FOLLOWUP_REQUESTED,
        topics.CASE,
        CaseFollowupRequested,
        "A follow-up task (CSAT survey) for a resolved case.",
    ),
    EventType(
        CASE_SURVEY_RECORDED,
        topics.CASE,
        CaseSurveyRecorded,
        "The customer's survey answer, linked back to the case with its score.",
    ),
    EventType(
        CASE_REPLY_SLA_WARNING,
        topics.CASE,
        CaseReplySla,
        "A share of the next-reply target's business time is used up since the customer's answer (once per answer).",
    ),
    EventType(
        CASE_REPLY_SLA_BREACHED,
        topics.CASE,
        CaseReplySla,
        "The next-reply target ran out before an agent answered the customer's answer (once per answer).",
    ),
    # replies delivered (issue 25)
    EventType(
        CASE_REPLY_SENT,
        topics.CASE,
        CaseReplySent,
        "An agent replied to the customer; notification delivers it (rule agent_reply). The first reply is the"
        " first response.",
    ),
    EventType(CASE_UNASSIGNED, topics.CASE, CaseUnassigned, "The case went back to its team's queue (no owner)."),
    EventType(AGENT_UPDATED, topics.CASE, AgentUpdated, "An agent's name, teams, capacity and skills were set."),
    EventType(AGENT_STATUS_CHANGED, topics.CASE, AgentStatusChanged, "An agent went online, away or offline."),
)
