"""The case's rules: pure functions and in-memory decisions, no I/O, no framework.

- A case's state is rebuilt from its events (CaseState.from_events); nothing else is the truth.
- The lifecycle is one table, TRANSITIONS; an illegal step names the allowed ones.
- Decisions (open, assign, change status, ...) return event drafts; the handler stores them.
- The SLA clock counts business time of a calendar while the case is new or open; pending,
  resolved and closed pause it. Due instants are recomputed from the events every time, so the
  timers table is only a cache of "when to look again", never the truth.
"""

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contracts import case as c

Clock = Callable[[], datetime]
Level = Literal["warning", "breach"]

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("open",),
    "open": ("pending", "resolved"),
    "pending": ("open", "resolved"),
    "resolved": ("closed", "open"),  # resolved -> open is the reopen
    "closed": (),
}
OPEN_STATUSES: tuple[str, ...] = ("new", "open", "pending")  # "an open case" for the rules
RUNNING_STATUSES: frozenset[str] = frozenset({"new", "open"})  # the SLA clock runs only here
VIP_MINIMUM_PRIORITY = "high"
SURVEY_KIND = "csat_survey"
_CASE_NAMESPACE = uuid.UUID("5b0d7a0e-3c41-4b8e-9a57-0c2f9d3c1a11")


def system_clock() -> datetime:
    return datetime.now(UTC)


# --- errors ----------------------------------------------------------------------------------


class CommandRejected(Exception):
    """A command that breaks a rule; becomes a 4xx with a machine-readable `error`."""

    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.extra = extra


class IllegalTransition(CommandRejected):
    def __init__(self, from_status: str, to_status: str) -> None:
        allowed = list(TRANSITIONS[from_status])
        super().__init__(
            409,
            "illegal_transition",
            f"a {from_status} case cannot become {to_status}; allowed: {', '.join(allowed) or 'none'}",
            current_status=from_status,
            allowed=allowed,
        )


class ConfigError(ValueError):
    """A setting that cannot work (no working days, unknown time zone...)."""


# --- business calendar -------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessCalendar:
    """Working hours on working days in one time zone, minus holidays. Minutes from local midnight;
    end 1440 means midnight at the end of the day."""

    time_zone: str = "UTC"
    working_days: frozenset[int] = frozenset(range(5))  # Monday = 0
    start_minute: int = 9 * 60
    end_minute: int = 17 * 60
    holidays: frozenset[date] = frozenset()

    MAX_DAYS = 3 * 366  # a target further out than this is a configuration error

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"unknown time zone {self.time_zone!r}") from exc
        if not self.working_days or not self.working_days <= set(range(7)):
            raise ConfigError("working_days must name at least one day, Monday = 0 ... Sunday = 6")
        if not 0 <= self.start_minute < self.end_minute <= 24 * 60:
            raise ConfigError("working hours must start before they end, within one day")

    @classmethod
    def always_open(cls) -> "BusinessCalendar":
        """24x7: every second counts."""
        return cls(time_zone="UTC", working_days=frozenset(range(7)), start_minute=0, end_minute=24 * 60)

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working span of a local date, in UTC; None on days off and holidays."""
        if day.weekday() not in self.working_days or day in self.holidays:
            return None
        tz = ZoneInfo(self.time_zone)
        midnight = datetime(day.year, day.month, day.day)
        # Wall-clock times made aware in the zone, so a DST change day is as long as it is.
        start = (midnight + timedelta(minutes=self.start_minute)).replace(tzinfo=tz)
        end = (midnight + timedelta(minutes=self.end_minute)).replace(tzinfo=tz)
        return start.astimezone(UTC), end.astimezone(UTC)

    def _days_from(self, t: datetime) -> Iterable[date]:
        first = t.astimezone(ZoneInfo(self.time_zone)).date() - timedelta(days=1)
        return (first + timedelta(days=n) for n in range(self.MAX_DAYS))

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Working time between two instants."""
        total = 0.0
        if end <= start:
            return total
        for day in self._days_from(start):
            w = self.window(day)
            if w is None:
                continue
            if w[0] >= end:
                break
            lo, hi = max(w[0], start), min(w[1], end)
            if hi > lo:
                total += (hi - lo).total_seconds()
        return total

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which `seconds` of working time have passed since `start`."""
        if seconds <= 0:
            return start
        for day in self._days_from(start):
            w = self.window(day)
            if w is None:
                continue
            lo = max(w[0], start)
            if lo >= w[1]:
                continue
            available = (w[1] - lo).total_seconds()
            if seconds <= available:
                return lo + timedelta(seconds=seconds)
            seconds -= available
        raise ConfigError(f"an SLA target does not fit in {self.MAX_DAYS} days of this calendar")


# --- SLA policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Business seconds allowed for each SLA target."""

    first_response: float
    resolution: float

    def of(self, target: str) -> float:
        return self.first_response if target == "first_response" else self.resolution


@dataclass(frozen=True)
class SlaPolicy:
    targets: Mapping[str, Targets]  # by priority
    warning_share: float = 0.8

    def __post_init__(self) -> None:
        missing = [p for p in c.PRIORITIES if p not in self.targets]
        if missing:
            raise ConfigError(f"SLA policy has no targets for {', '.join(missing)}")
        if not 0 < self.warning_share < 1:
            raise ConfigError("warning share must be between 0 and 1")
        for p, t in self.targets.items():
            if t.first_response <= 0 or t.resolution <= 0:
                raise ConfigError(f"SLA targets of {p} must be positive")


HOUR = 3600.0
DEFAULT_POLICY = SlaPolicy(
    {
        "urgent": Targets(first_response=1 * HOUR, resolution=4 * HOUR),
        "high": Targets(first_response=4 * HOUR, resolution=8 * HOUR),
        "normal": Targets(first_response=8 * HOUR, resolution=24 * HOUR),
        "low": Targets(first_response=16 * HOUR, resolution=40 * HOUR),
    }
)


# --- rules: interactions open or join cases -----------------------------------------------------


@dataclass(frozen=True)
class OpenRule:
    type: str
    priority: str = "normal"
    team: str = "support"


@dataclass(frozen=True)
class CaseRules:
    """Which interactions open a case (by kind), and the case they open."""

    open_on: Mapping[str, OpenRule] = field(
        default_factory=lambda: {"complaint": OpenRule("complaint"), "request": OpenRule("request")}
    )
    directions: frozenset[str] = frozenset({"inbound"})
    survey_kind: str = "survey_response"
    followup_delay: timedelta = timedelta(hours=24)
    escalation_queues: Mapping[str, str] = field(default_factory=dict)  # team -> queue

    def escalation_queue(self, team: str) -> str:
        return self.escalation_queues.get(team, f"{team}-escalations")


def opening_rule(rules: CaseRules, kind: str, direction: str, metadata: Mapping[str, Any]) -> OpenRule | None:
    """The case an interaction of this kind opens when the customer has no open case of that type
    (else it joins that one); None if the kind opens no case. metadata.case_type may name a more
    precise type (a request about a repair opens a repair case)."""
    rule = rules.open_on.get(kind)
    if rule is None or direction not in rules.directions:
        return None
    wanted = metadata.get("case_type")
    if isinstance(wanted, str) and wanted in c.CASE_TYPES:
        rule = replace(rule, type=wanted)
    return rule


def case_id_for(interaction_event_id: str) -> str:
    """The same interaction always opens the same case id, so a replay cannot open a second."""
    return str(uuid.uuid5(_CASE_NAMESPACE, interaction_event_id))


def survey_score(metadata: Mapping[str, Any], content: str | None) -> int | None:
    """The 0..10 score of a survey answer: metadata.score, else content that is just a number."""
    raw: Any = metadata.get("score")
    if raw is None and content is not None:
        raw = content.strip()
    if isinstance(raw, bool):
        return None
    try:
        score = int(raw)
    except (TypeError, ValueError):
        return None
    return score if 0 <= score <= 10 else None


def effective_priority(priority: str, vip: bool) -> str:
    """VIP customers get at least high."""
    if vip and c.PRIORITIES.index(priority) < c.PRIORITIES.index(VIP_MINIMUM_PRIORITY):
        return VIP_MINIMUM_PRIORITY
    return priority


# --- the aggregate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """An event decided but not yet stored: type and validated JSON payload."""

    type: str
    data: dict[str, Any]


_MODELS = {t.name: t.model for t in c.EVENT_TYPES}


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
            self.status = to
            self.status_log.append((time, to))
        elif type_ == c.CASE_PRIORITY_CHANGED:
            self.priority = data["to_priority"]
        elif type_ == c.CASE_NOTE_ADDED:
            self.notes.append({"author": data["author"], "text": data["text"], "at": time})
        elif type_ == c.CASE_INTERACTION_LINKED:
            self.interactions.append(data["interaction_event_id"])
            if data.get("direction") == "outbound" and self.first_response_at is None:
                self.first_response_at = time  # the customer got an answer
        elif type_ in (c.CASE_SLA_WARNING, c.CASE_SLA_BREACHED):
            level = "warning" if type_ == c.CASE_SLA_WARNING else "breach"
            self.fired.add((level, data["target"]))
        elif type_ == c.CASE_ESCALATED:
            self.escalated = True
            self.team, self.queue = data["team"], data["queue"]
        elif type_ == c.CASE_FOLLOWUP_REQUESTED:
            self.survey_requested_at, self.survey_due_at = time, datetime.fromisoformat(data["due_at"])
            self.survey_score = None
        elif type_ == c.CASE_SURVEY_RECORDED:
            self.survey_score = data["score"]

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
        raise CommandRejected(409, "case_closed", f"a closed case cannot {what}")


def assign(state: CaseState, owner: str, team: str | None = None) -> list[Draft]:
    _not_closed(state, "be assigned")
    team = team or state.team
    if owner == state.owner and team == state.team:
        raise CommandRejected(409, "no_change", f"the case is already owned by {owner}")
    return [draft(c.CASE_ASSIGNED, **state.base(), owner=owner, previous_owner=state.owner, team=team)]


def change_status(state: CaseState, to_status: str, reason: str | None, now: datetime, rules: CaseRules) -> list[Draft]:
    if to_status not in TRANSITIONS[state.status]:
        raise IllegalTransition(state.status, to_status)
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
        raise CommandRejected(409, "no_change", f"the priority is already {priority}")
    if effective_priority(priority, vip) != priority:
        raise CommandRejected(
            422,
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
        raise CommandRejected(409, "already_linked", "this interaction is already linked to the case")
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


# --- SLA -------------------------------------------------------------------------------------

SLA_TARGETS: tuple[str, ...] = ("first_response", "resolution")


@dataclass(frozen=True)
class Alert:
    level: Level
    target: str
    at: datetime  # when the share of the target's business time is used up


def instant_reaching(
    intervals: Sequence[tuple[datetime, datetime | None]], seconds: float, calendar: BusinessCalendar
) -> datetime | None:
    """When the running clock reaches `seconds` of business time; None while it is paused short of it."""
    remaining = seconds
    for start, end in intervals:
        if end is None:
            return calendar.add(start, remaining)
        span = calendar.business_seconds(start, end)
        if remaining <= span:
            return calendar.add(start, remaining)
        remaining -= span
    return None


def scheduled_alerts(state: CaseState, policy: SlaPolicy, calendar: BusinessCalendar) -> list[Alert]:
    """Alerts not sent yet whose instant is known: a target met before its instant needs none;
    one met after it was breached all the same (the alert goes out late rather than never)."""
    if not state.exists:
        return []
    targets = policy.targets[state.priority]
    intervals = state.running_intervals()
    levels: tuple[tuple[Level, float], ...] = (("warning", policy.warning_share), ("breach", 1.0))
    alerts: list[Alert] = []
    for target in SLA_TARGETS:
        met = state.met_at(target)
        for level, share in levels:
            if (level, target) in state.fired:
                continue
            at = instant_reaching(intervals, targets.of(target) * share, calendar)
            if at is not None and (met is None or at < met):
                alerts.append(Alert(level, target, at))
    return sorted(alerts, key=lambda a: (a.at, a.level == "breach"))


def due_alerts(state: CaseState, policy: SlaPolicy, calendar: BusinessCalendar, now: datetime) -> list[Alert]:
    return [a for a in scheduled_alerts(state, policy, calendar) if a.at <= now]


def fire_alerts(state: CaseState, alerts: Sequence[Alert], policy: SlaPolicy, rules: CaseRules) -> list[Draft]:
    """The SLA events for alerts that fell due; the first breach also escalates the case."""
    drafts: list[Draft] = []
    for a in alerts:
        type_ = c.CASE_SLA_WARNING if a.level == "warning" else c.CASE_SLA_BREACHED
        drafts.append(
            draft(
                type_,
                **state.base(),
                target=a.target,
                due_at=a.at,
                owner=state.owner,
                team=state.team,
                priority=state.priority,
                type=state.type,
            )
        )
    breach = next((a for a in alerts if a.level == "breach"), None)
    if breach is not None and not state.escalated:
        drafts.append(
            draft(
                c.CASE_ESCALATED,
                **state.base(),
                team=state.team,
                queue=rules.escalation_queue(state.team),
                reason=f"{breach.target.replace('_', ' ')} target breached",
            )
        )
    return drafts


def sla_view(state: CaseState, policy: SlaPolicy, calendar: BusinessCalendar, now: datetime) -> dict[str, Any]:
    """Where each target stands now, derived from the events (for the API)."""
    targets = policy.targets[state.priority]
    intervals = state.running_intervals()
    running = bool(intervals) and intervals[-1][1] is None
    view: dict[str, Any] = {"clock": "running" if running else "paused"}
    for target in SLA_TARGETS:
        met = state.met_at(target)
        until = min(met, now) if met else now
        elapsed = sum(calendar.business_seconds(s, min(e or until, until)) for s, e in intervals)
        due = instant_reaching(intervals, targets.of(target), calendar)
        view[target] = {
            "target_seconds": targets.of(target),
            "elapsed_seconds": round(elapsed, 3),
            "due_at": due,
            "met_at": met,
            "warned": ("warning", target) in state.fired,
            "breached": ("breach", target) in state.fired,
        }
    return view


def to_view(state: CaseState) -> dict[str, Any]:
    """The case as agents see it (without history and SLA, which the API adds)."""
    return {
        "case_id": state.case_id,
        "customer_id": state.customer_id,
        "version": state.version,
        "type": state.type,
        "priority": state.priority,
        "status": state.status,
        "allowed_transitions": list(TRANSITIONS[state.status]),
        "team": state.team,
        "queue": state.queue,
        "owner": state.owner,
        "title": state.title,
        "opened_at": state.opened_at,
        "opened_by": state.opened_by,
        "updated_at": state.updated_at,
        "first_response_at": state.first_response_at,
        "resolved_at": state.resolved_at,
        "closed_at": state.closed_at,
        "pending_spans": [{"from": s, "to": e} for s, e in state.pending_spans()],
        "handovers": state.handovers,
        "notes": state.notes,
        "interactions": state.interactions,
        "escalated": state.escalated,
        "breached": state.breached,
        "survey": {
            "requested_at": state.survey_requested_at,
            "due_at": state.survey_due_at,
            "score": state.survey_score,
        },
    }
