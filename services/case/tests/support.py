"""What the case's pure tests share: a controllable clock, a Berlin calendar, and cases built by
folding the drafts of real decisions."""

from datetime import UTC, date, datetime, timedelta

from case import domain, rules
from case.calendar import BusinessCalendar
from case.domain import CaseState

BERLIN = BusinessCalendar(time_zone="Europe/Berlin", holidays=frozenset({date(2026, 4, 3)}))  # Good Friday
RULES = rules.CaseRules()
H = 3600.0


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


class Clock:
    """A controllable clock: tests move time, the domain reads it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, t: datetime) -> datetime:
        self.now = t
        return t


def fold(state: CaseState, drafts: list[domain.Draft], at: datetime) -> CaseState:
    for d in drafts:
        state.apply(d.type, d.data, at)
    return state


def new_case(at: datetime, priority: str = "normal", vip: bool = False, type_: str = "complaint") -> CaseState:
    drafts = domain.open_case("case-1", "cust-1", rules.OpenRule(type_, priority), vip, opened_by="ev-1")
    return fold(CaseState("case-1"), drafts, at)


def step(state: CaseState, to: str, at: datetime) -> CaseState:
    return fold(state, domain.change_status(state, to, None, at, RULES), at)
