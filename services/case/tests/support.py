"""What the case's pure tests share: a controllable clock (tests/clock.py's), a Berlin calendar,
and cases built by folding the drafts of real decisions."""

from datetime import UTC, date, datetime

from case import domain, rules
from case.calendar import BusinessCalendar
from case.domain import CaseState
from tests.clock import Clock as Clock  # the tests import it from here

BERLIN = BusinessCalendar(time_zone="Europe/Berlin", holidays=frozenset({date(2026, 4, 3)}))  # Good Friday
RULES = rules.CaseRules()
H = 3600.0


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def fold(state: CaseState, drafts: list[domain.Draft], at: datetime) -> CaseState:
    for d in drafts:
        state.apply(d.type, d.data, at)
    return state


def new_case(at: datetime, priority: str = "normal", vip: bool = False, type_: str = "complaint") -> CaseState:
    drafts = domain.open_case("case-1", "cust-1", rules.OpenRule(type_, priority), vip, opened_by="ev-1")
    return fold(CaseState("case-1"), drafts, at)


def step(state: CaseState, to: str, at: datetime) -> CaseState:
    return fold(state, domain.change_status(state, to, None, at, RULES), at)
