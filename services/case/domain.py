"""The case aggregate: its state, rebuilt from its events, and the decisions on it. Pure: no I/O.

- A case's state is rebuilt from its events (CaseState.from_events); nothing else is the truth.
- The lifecycle is one table, TRANSITIONS; an illegal step names the allowed ones.
- Decisions (open, assign, change status, ...) return event drafts; the handler stores them.
- A decision that breaks a rule raises a domain error (NotFound, Conflict, Invalid); only the
  HTTP edge (errors.py) knows which status each becomes.

The business calendar, the SLA clock, the opening rules and the agents' view live beside it:
calendar.py, sla.py, rules.py, views.py.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from case.field_rules import Defs, fold_values, missing_to_resolve
from case.rules import VIP_MINIMUM_PRIORITY, CaseRules, OpenRule, effective_priority
from contracts import case as c
from contracts import fields as f

Clock = Callable[[], datetime]

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("open",),
    "open": ("pending", "resolved"),
    "pending": ("open", "resolved"),
    "resolved": ("closed", "open"),  # resolved -> open is the reopen
    "closed": (),
}
OPEN_STATUSES: tuple[str, ...] = ("new", "open", "pending")  # "an open case" for the rules
RUNNING_STATUSES: frozenset[str] = frozenset({"new", "open"})  # the SLA clock runs only here
SURVEY_KIND = "csat_survey"
NEXT_REPLY = "next_reply"
CUSTOMER_REPLIED = "customer_replied"  # status_changed reason: the customer's answer moved the case
AUTO_CLOSED = "auto_closed"  # status_changed reason: resolved long enough without an answer


def next_reply_key(reply_to: str) -> str:
    """The SLA target key of one customer answer's next-reply round (in `fired` and case_timers)."""
    return f"{NEXT_REPLY}:{reply_to}"


def system_clock() -> datetime:
    return datetime.now(UTC)


# --- errors ----------------------------------------------------------------------------------


class CommandRejected(Exception):
    """A command that breaks a rule: `error` names the rule for the caller, `extra` details it.
    Raised as one of its kinds below, never itself."""

    def __init__(self, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error = error
        self.extra = extra


class NotFound(CommandRejected):
    """Something the command names does not exist (here, yet)."""


class Conflict(CommandRejected):
    """The case as it is now does not allow the command."""


class Invalid(CommandRejected):
    """The command's input breaks a rule whatever the case's state."""


class IllegalTransition(Conflict):
    def __init__(self, from_status: str, to_status: str) -> None:
        allowed = list(TRANSITIONS[from_status])
        super().__init__(
            "illegal_transition",
            f"a {from_status} case cannot become {to_status}; allowed: {', '.join(allowed) or 'none'}",
            current_status=from_status,
            allowed=allowed,
        )


# --- the aggregate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """An event decided but not yet stored: type and validated JSON payload."""

    type: str
    data: dict[str, Any]


_MODELS = {t.name: t.model for t in (*c.EVENT_TYPES, *f.EVENT_TYPES)}


def draft(type_: str, **data: Any) -> Draft:
    """Validate against the contract now, so a bad payload fails the command, not a consumer."""
    return Draft(type_, _MODELS[type_].model_validate(data).model_dump(mode="json", exclude={"sealed"}))


@dataclass
class CaseState:
    case_id: str
    customer_id: str = ""
    version: int = 0
    type: str = "other"
    priority: str = "normal"
    status: str = "new"
    team: str = ""
    queue: str = ""
    owner: str | None = None
    title: str | None = None
    title_sealed: tuple[str, str] | None = None  # (key owner, token) when the title is sealed
    opened_at: datetime | None = None
    opened_by: str | None = None
    updated_at: datetime | None = None
    handovers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    interactions: list[str] = field(default_factory=list)
    status_log: list[tuple[datetime, str]] = field(default_factory=list)
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    fired: set[tuple[str, str]] = field(default_factory=set)  # (level, target) alerts already sent
    escalated: bool = False
    survey_requested_at: datetime | None = None
    survey_due_at: datetime | None = None
    survey_score: int | None = None
    # The customer's answer no agent has answered yet (after the first response): the next-reply
    # target runs from reply_since. An outbound interaction linked, or a resolution, answers it.
    reply_to: str | None = None
    reply_since: datetime | None = None
    # Typed fields by name; personal ones apart, as sealed text (personal_text once unsealed).
    fields: dict[str, Any] = field(default_factory=dict)
    personal: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def breached(self) -> bool:
        return any(level == "breach" for level, _ in self.fired)

    @property
    def awaiting_survey(self) -> bool:
        return self.survey_requested_at is not None and self.survey_score is None

    @classmethod
    def from_events(cls, case_id: str, events: Iterable[tuple[str, Mapping[str, Any], datetime]]) -> "CaseState":
        state = cls(case_id)
        for type_, data, time in events:
            state.apply(type_, data, time)
        return state

    def apply(self, type_: str, data: Mapping[str, Any], time: datetime) -> None:
        """Fold one event into the state. Unknown types only bump the version."""
        self.version += 1
        self.updated_at = time
        if type_ == c.CASE_OPENED:
            self.customer_id = data["customer_id"]
            self.type, self.priority, self.status = data["type"], data["priority"], data["status"]
            self.team = data["team"]
            self.queue = data.get("queue") or data["team"]
            self.title = data.get("title")
            sealed = data.get("sealed") or {}
            if "title" in sealed.get("fields", {}):
                self.title_sealed = (sealed["key"], sealed["fields"]["title"])
            self.opened_at, self.opened_by = time, data.get("opened_by")
            self.status_log.append((time, self.status))
            if self.opened_by:
                self.interactions.append(self.opened_by)
        elif type_ == c.CASE_ASSIGNED:
            self.handovers.append(
                {"owner": data["owner"], "previous_owner": data["previous_owner"], "team": data["team"], "at": time}
            )
            if data["team"] != self.team:
                self.team, self.queue = data["team"], data["team"]
            self.owner = data["owner"]
        elif type_ == c.CASE_UNASSIGNED:
            self.owner = None  # back to the team's queue
        elif type_ == c.CASE_STATUS_CHANGED:
            to = data["to_status"]
            if self.status == "new" and self.first_response_at is None:
                self.first_response_at = time  # an agent took the case up
            if to == "resolved":
                self.resolved_at = time
            elif to == "open" and self.status == "resolved":
                self.resolved_at = None  # reopened: the resolution clock runs again
            if to == "closed":
                self.closed_at = time
            if to in ("resolved", "closed"):
                self.reply_to = self.reply_since = None
            self.status = to
            self.status_log.append((time, to))
        elif type_ == c.CASE_PRIORITY_CHANGED:
            self.priority = data["to_priority"]
        elif type_ == c.CASE_NOTE_ADDED:
            self.notes.append({"author": data["author"], "text": data["text"], "at": time})
        elif type_ == c.CASE_INTERACTION_LINKED:
            self.interactions.append(data["interaction_event_id"])
            if data.get("direction") == "outbound":
                if self.first_response_at is None:
                    self.first_response_at = time  # the customer got an answer
                self.reply_to = self.reply_since = None
            elif data.get("direction") == "inbound" and self.first_response_at is not None and self.reply_to is None:
                self.reply_to, self.reply_since = data["interaction_event_id"], time
        elif type_ in (c.CASE_SLA_WARNING, c.CASE_SLA_BREACHED):
            level = "warning" if type_ == c.CASE_SLA_WARNING else "breach"
            self.fired.add((level, data["target"]))
        elif type_ in (c.CASE_REPLY_SLA_WARNING, c.CASE_REPLY_SLA_BREACHED):
            level = "warning" if type_ == c.CASE_REPLY_SLA_WARNING else "breach"
            self.fired.add((level, next_reply_key(data["reply_to"])))
        elif type_ == c.CASE_ESCALATED:
            self.escalated = True
            self.team, self.queue = data["team"], data["queue"]
        elif type_ == c.CASE_FOLLOWUP_REQUESTED:
            self.survey_requested_at, self.survey_due_at = time, datetime.fromisoformat(data["due_at"])
            self.survey_score = None
        elif type_ == c.CASE_SURVEY_RECORDED:
            self.survey_score = data["score"]
        elif type_ == f.CASE_FIELDS_SET:
            fold_values(self.fields, data.get("values", {}))
            fold_values(self.personal, data.get("personal", {}))
        elif type_ == f.CASE_TAGS_CHANGED:
            self.tags = list(data["tags"])
        elif type_ == c.CASE_REPLY_SENT:
            if self.first_response_at is None:
                self.first_response_at = time  # the first reply is the first response
            self.reply_to = self.reply_since = None  # the customer's answer is answered

    def pending_spans(self) -> list[tuple[datetime, datetime | None]]:
        return [(start, end) for start, end, status in self._spans() if status == "pending"]

    def running_intervals(self) -> list[tuple[datetime, datetime | None]]:
        """Wall-clock spans in which the SLA clock runs; the last may be open-ended (now)."""
        return [(start, end) for start, end, status in self._spans() if status in RUNNING_STATUSES]

    def _spans(self) -> list[tuple[datetime, datetime | None, str]]:
        log = self.status_log
        return [(t, log[i + 1][0] if i + 1 < len(log) else None, s) for i, (t, s) in enumerate(log)]

    def met_at(self, target: str) -> datetime | None:
        return self.first_response_at if target == "first_response" else self.resolved_at

    def base(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "customer_id": self.customer_id}


# --- commands --------------------------------------------------------------------------------


def open_case(
    case_id: str,
    customer_id: str,
    rule: OpenRule,
    vip: bool,
    opened_by: str | None,
    title: str | None = None,
) -> list[Draft]:
    return [
        draft(
            c.CASE_OPENED,
            case_id=case_id,
            customer_id=customer_id,
            type=rule.type,
            priority=effective_priority(rule.priority, vip),
            status="new",
            team=rule.team,
            queue=rule.team,
            opened_by=opened_by,
            title=title,
        )
    ]


def _not_closed(state: CaseState, what: str) -> None:
    if state.status == "closed":
        raise Conflict("case_closed", f"a closed case cannot {what}")


def assign(state: CaseState, owner: str, team: str | None = None) -> list[Draft]:
    _not_closed(state, "be assigned")
    team = team or state.team
    if owner == state.owner and team == state.team:
        raise Conflict("no_change", f"the case is already owned by {owner}")
    return [draft(c.CASE_ASSIGNED, **state.base(), owner=owner, previous_owner=state.owner, team=team)]


def change_status(
    state: CaseState, to_status: str, reason: str | None, now: datetime, rules: CaseRules, fields: Defs = None
) -> list[Draft]:
    if to_status not in TRANSITIONS[state.status]:
        raise IllegalTransition(state.status, to_status)
    if to_status == "resolved" and (missing := missing_to_resolve(state.type, state.fields | state.personal, fields)):
        raise Conflict(
            "fields_required",
            f"set {', '.join(missing)} before resolving the case",
            errors=[{"field": f"fields.{name}", "reason": "required to resolve"} for name in missing],
        )
    drafts = [
        draft(
            c.CASE_STATUS_CHANGED,
            **state.base(),
            from_status=state.status,
            to_status=to_status,
            reason=reason,
            type=state.type,
            priority=state.priority,
        )
    ]
    if to_status == "resolved" and not state.awaiting_survey:
        drafts.append(
            draft(c.CASE_FOLLOWUP_REQUESTED, **state.base(), kind=SURVEY_KIND, due_at=now + rules.followup_delay)
        )
    return drafts


def set_priority(state: CaseState, priority: str, reason: str | None, vip: bool) -> list[Draft]:
    _not_closed(state, "change priority")
    if priority == state.priority:
        raise Conflict("no_change", f"the priority is already {priority}")
    if effective_priority(priority, vip) != priority:
        raise Invalid(
            "priority_below_vip_minimum",
            f"the customer is a VIP: priority must be at least {VIP_MINIMUM_PRIORITY}",
            errors=[{"field": "priority", "reason": f"VIP customers get at least {VIP_MINIMUM_PRIORITY}"}],
        )
    return [
        draft(
            c.CASE_PRIORITY_CHANGED,
            **state.base(),
            from_priority=state.priority,
            to_priority=priority,
            reason=reason,
            type=state.type,
        )
    ]


def add_note(state: CaseState, author: str, text: str) -> list[Draft]:
    return [draft(c.CASE_NOTE_ADDED, **state.base(), author=author, text=text)]


def link_interaction(
    state: CaseState, interaction_event_id: str, kind: str | None, channel: str | None, direction: str | None
) -> list[Draft]:
    if interaction_event_id in state.interactions:
        raise Conflict("already_linked", "this interaction is already linked to the case")
    return [
        draft(
            c.CASE_INTERACTION_LINKED,
            **state.base(),
            interaction_event_id=interaction_event_id,
            kind=kind,
            channel=channel,
            direction=direction,
        )
    ]


def record_survey(state: CaseState, interaction_event_id: str, channel: str | None, score: int) -> list[Draft]:
    drafts = []
    if interaction_event_id not in state.interactions:
        drafts = link_interaction(state, interaction_event_id, "survey_response", channel, "inbound")
    drafts.append(draft(c.CASE_SURVEY_RECORDED, **state.base(), score=score, interaction_event_id=interaction_event_id))
    return drafts


# --- customers' replies ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyCandidate:
    """One of the customer's cases an inbound interaction may answer (from the case list)."""

    case_id: str
    type: str
    status: str
    last_active_at: datetime
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class ReplyTarget:
    case_id: str
    reopen: bool  # the case is resolved: the answer reopens it


def reply_target(
    candidates: Sequence[ReplyCandidate],
    at: datetime,
    reopen_window: timedelta,
    case_type: str | None = None,
    named: str | None = None,
) -> ReplyTarget | None:
    """The case an inbound interaction at `at` answers, or None.

    Only open cases and cases resolved less than `reopen_window` before `at` take answers. The
    case the interaction names (metadata.case_id) wins if it is one of them; else, when the
    interaction is of a kind that opens cases of `case_type`, only cases of that type qualify
    (so a complaint still opens a complaint case beside an open billing case). Among those, the
    most recently active open case; else the most recently resolved one, which reopens.
    """

    def live(r: ReplyCandidate) -> bool:
        return r.status in OPEN_STATUSES

    def reopenable(r: ReplyCandidate) -> bool:
        # Only an answer made after the resolution: one the consumer meets late (it was recorded
        # before the case was resolved) answers nothing the customer has seen.
        return (
            r.status == "resolved" and r.resolved_at is not None and timedelta(0) <= at - r.resolved_at < reopen_window
        )

    eligible = [r for r in candidates if live(r) or reopenable(r)]
    for r in eligible:
        if r.case_id == named:
            return ReplyTarget(r.case_id, reopen=not live(r))
    if case_type is not None:
        eligible = [r for r in eligible if r.type == case_type]
    open_ = [r for r in eligible if live(r)]
    if open_:
        return ReplyTarget(max(open_, key=lambda r: (r.last_active_at, r.case_id)).case_id, reopen=False)
    resolved = [r for r in eligible if reopenable(r)]
    if resolved:
        latest = max(resolved, key=lambda r: (r.resolved_at or at, r.case_id))
        return ReplyTarget(latest.case_id, reopen=True)
    return None


def customer_replied(
    state: CaseState,
    interaction_event_id: str,
    kind: str | None,
    channel: str | None,
    answered_at: datetime,
    now: datetime,
    rules: CaseRules,
) -> list[Draft]:
    """Link the customer's answer; a pending case opens again (its SLA clock runs), and a resolved
    one reopens if the answer came after the resolution, within the reopen window (the case may
    have been resolved after the answer was chosen for it). A new or open case only gains the
    link; a closed one takes no answers."""
    _not_closed(state, "take the customer's answer")
    drafts = link_interaction(state, interaction_event_id, kind, channel, "inbound")
    resolved_at = state.resolved_at
    reopens = (
        state.status == "resolved"
        and resolved_at is not None
        and timedelta(0) <= answered_at - resolved_at < rules.reopen_window
    )
    if state.status == "pending" or reopens:
        drafts += change_status(state, "open", CUSTOMER_REPLIED, now, rules)
    return drafts


# --- automatic close ---------------------------------------------------------------------------


def auto_close_at(state: CaseState, rules: CaseRules) -> datetime | None:
    """When a resolved case closes by itself; None if it is not resolved or auto close is off."""
    if state.status != "resolved" or state.resolved_at is None or rules.auto_close_after is None:
        return None
    return state.resolved_at + rules.auto_close_after


def auto_close(state: CaseState, rules: CaseRules, now: datetime) -> list[Draft]:
    """Close a case resolved long enough ago without an answer (a reopen clears resolved_at)."""
    at = auto_close_at(state, rules)
    if at is None or at > now:
        return []
    return change_status(state, "closed", AUTO_CLOSED, now, rules)


def reply(state: CaseState, channel: str, author: str, body: str) -> list[Draft]:
    """An agent's answer to the customer, which notification delivers on `channel`."""
    _not_closed(state, "be replied to")
    return [
        draft(
            c.CASE_REPLY_SENT,
            **state.base(),
            channel=channel,
            author=author,
            body=body,
            team=state.team,
            type=state.type,
            priority=state.priority,
        )
    ]
