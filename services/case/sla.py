"""The SLA clock: targets per priority, and when warnings and breaches fall due.

The clock counts business time of a calendar while the case is new or open; pending, resolved
and closed pause it. Due instants are recomputed from the events every time, so the timers
table is only a cache of "when to look again", never the truth. Pure: no I/O.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from case.calendar import BusinessCalendar, ConfigError
from case.domain import NEXT_REPLY, CaseState, Draft, draft, next_reply_key
from case.rules import CaseRules
from contracts import case as c
from contracts.case import Priority

Level = Literal["warning", "breach"]


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
    # Business seconds an agent has to answer a customer's answer, by priority; absent: no target.
    next_reply: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [p for p in c.PRIORITIES if p not in self.targets]
        if missing:
            raise ConfigError(f"SLA policy has no targets for {', '.join(missing)}")
        if not 0 < self.warning_share < 1:
            raise ConfigError("warning share must be between 0 and 1")
        for p, t in self.targets.items():
            if t.first_response <= 0 or t.resolution <= 0:
                raise ConfigError(f"SLA targets of {p} must be positive")
        if any(seconds <= 0 for seconds in self.next_reply.values()):
            raise ConfigError("next-reply targets must be positive")


HOUR = 3600.0
DEFAULT_TARGETS: dict[Priority, Targets] = {
    "urgent": Targets(first_response=1 * HOUR, resolution=4 * HOUR),
    "high": Targets(first_response=4 * HOUR, resolution=8 * HOUR),
    "normal": Targets(first_response=8 * HOUR, resolution=24 * HOUR),
    "low": Targets(first_response=16 * HOUR, resolution=40 * HOUR),
}
DEFAULT_POLICY = SlaPolicy({p: t for p, t in DEFAULT_TARGETS.items()})


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
    alerts += _next_reply_alerts(state, policy, calendar, levels)
    return sorted(alerts, key=lambda a: (a.at, a.level == "breach"))


def _next_reply_alerts(
    state: CaseState, policy: SlaPolicy, calendar: BusinessCalendar, levels: tuple[tuple[Level, float], ...]
) -> list[Alert]:
    """The unanswered customer answer's alerts: its clock counts running time since the answer. An
    answer (outbound link) ends the round, so alerts not fired by then are never sent."""
    seconds = policy.next_reply.get(state.priority)
    if seconds is None or state.reply_to is None or state.reply_since is None:
        return []
    since = state.reply_since
    intervals = [(max(s, since), e) for s, e in state.running_intervals() if e is None or e > since]
    key = next_reply_key(state.reply_to)
    alerts = []
    for level, share in levels:
        at = instant_reaching(intervals, seconds * share, calendar)
        if (level, key) not in state.fired and at is not None:
            alerts.append(Alert(level, key, at))
    return alerts


def due_alerts(state: CaseState, policy: SlaPolicy, calendar: BusinessCalendar, now: datetime) -> list[Alert]:
    return [a for a in scheduled_alerts(state, policy, calendar) if a.at <= now]


def fire_alerts(state: CaseState, alerts: Sequence[Alert], policy: SlaPolicy, rules: CaseRules) -> list[Draft]:
    """The SLA events for alerts that fell due; the first breach also escalates the case."""
    drafts: list[Draft] = []
    for a in alerts:
        common = {"due_at": a.at, "owner": state.owner, "team": state.team, "priority": state.priority}
        if a.target.startswith(f"{NEXT_REPLY}:"):
            type_ = c.CASE_REPLY_SLA_WARNING if a.level == "warning" else c.CASE_REPLY_SLA_BREACHED
            reply_to = a.target.removeprefix(f"{NEXT_REPLY}:")
            drafts.append(draft(type_, **state.base(), reply_to=reply_to, **common, type=state.type))
            continue
        type_ = c.CASE_SLA_WARNING if a.level == "warning" else c.CASE_SLA_BREACHED
        drafts.append(draft(type_, **state.base(), target=a.target, **common, type=state.type))
    breach = next((a for a in alerts if a.level == "breach"), None)
    if breach is not None and not state.escalated:
        drafts.append(
            draft(
                c.CASE_ESCALATED,
                **state.base(),
                team=state.team,
                queue=rules.escalation_queue(state.team),
                reason=f"{breach.target.split(':')[0].replace('_', ' ')} target breached",
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
