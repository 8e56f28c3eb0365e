"""The case's pure rules: every transition, the SLA clock in business hours (nights, weekends,
holidays, DST, pending spans) under a controllable clock, alerts exactly once, priority rules."""

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from case import domain, rules, sla
from case.calendar import BusinessCalendar, ConfigError
from case.domain import CaseState, CommandRejected, Conflict, IllegalTransition, Invalid
from case.sla import Targets
from contracts import case as c

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


PATH_TO = {  # one legal way to reach each status from new
    "new": [],
    "open": ["open"],
    "pending": ["open", "pending"],
    "resolved": ["open", "resolved"],
    "closed": ["open", "resolved", "closed"],
}


def case_in(status: str) -> CaseState:
    at = utc(2026, 1, 5, 9)
    state = new_case(at)
    for to in PATH_TO[status]:
        state = step(state, to, at)
    assert state.status == status
    return state


# --- lifecycle -------------------------------------------------------------------------------


@pytest.mark.parametrize(("from_status", "to_status"), list(itertools.product(c.STATUSES, c.STATUSES)))
def test_every_transition_is_decided_by_the_table(from_status: str, to_status: str) -> None:
    state = case_in(from_status)
    at = utc(2026, 1, 5, 10)
    if to_status in domain.TRANSITIONS[from_status]:
        drafts = domain.change_status(state, to_status, "because", at, RULES)
        assert drafts[0].type == c.CASE_STATUS_CHANGED
        assert drafts[0].data["from_status"] == from_status
        assert drafts[0].data["to_status"] == to_status
        assert drafts[0].data["type"] == "complaint" and drafts[0].data["priority"] == "normal"
        assert fold(state, drafts, at).status == to_status
    else:
        with pytest.raises(IllegalTransition) as err:
            domain.change_status(state, to_status, None, at, RULES)
        assert isinstance(err.value, Conflict)
        assert err.value.error == "illegal_transition"
        assert err.value.extra["allowed"] == list(domain.TRANSITIONS[from_status])


def test_the_lifecycle_table_is_the_one_the_issue_asks_for() -> None:
    assert domain.TRANSITIONS == {
        "new": ("open",),
        "open": ("pending", "resolved"),
        "pending": ("open", "resolved"),
        "resolved": ("closed", "open"),
        "closed": (),
    }


def test_resolution_requests_a_csat_survey_and_a_reopen_clears_the_resolution() -> None:
    clock = Clock(utc(2026, 1, 5, 9))
    state = step(new_case(clock()), "open", clock.advance(minutes=10))
    drafts = domain.change_status(state, "resolved", "fixed", clock.advance(hours=1), RULES)
    assert [d.type for d in drafts] == [c.CASE_STATUS_CHANGED, c.CASE_FOLLOWUP_REQUESTED]
    assert drafts[1].data["kind"] == "csat_survey"
    assert datetime.fromisoformat(drafts[1].data["due_at"]) == clock() + RULES.followup_delay
    state = fold(state, drafts, clock())
    assert state.resolved_at == clock() and state.awaiting_survey

    state = step(state, "open", clock.advance(hours=1))  # reopen
    assert state.resolved_at is None and state.status == "open"
    again = domain.change_status(state, "resolved", None, clock.advance(hours=1), RULES)
    assert [d.type for d in again] == [c.CASE_STATUS_CHANGED]  # the first survey is still unanswered


def test_status_timestamps_come_from_the_events() -> None:
    clock = Clock(utc(2026, 1, 5, 9))
    state = new_case(clock())
    assert state.first_response_at is None
    opened_at = clock.advance(minutes=30)
    state = step(state, "open", opened_at)
    pending_from = clock.advance(hours=1)
    state = step(state, "pending", pending_from)
    pending_to = clock.advance(hours=2)
    state = step(state, "open", pending_to)
    state = step(state, "resolved", clock.advance(hours=1))
    state = step(state, "closed", clock.advance(days=1))
    assert state.first_response_at == opened_at
    assert state.pending_spans() == [(pending_from, pending_to)]
    assert state.resolved_at == utc(2026, 1, 5, 13, 30)
    assert state.closed_at == utc(2026, 1, 6, 13, 30)
    assert state.version == 7  # opened, five status changes, the follow-up


def test_an_outbound_interaction_is_a_first_response() -> None:
    state = new_case(utc(2026, 1, 5, 9))
    inbound = domain.link_interaction(state, "ev-2", "message", "chat", "inbound")
    state = fold(state, inbound, utc(2026, 1, 5, 9, 5))
    assert state.first_response_at is None
    outbound = domain.link_interaction(state, "ev-3", "message", "email", "outbound")
    state = fold(state, outbound, utc(2026, 1, 5, 9, 20))
    assert state.first_response_at == utc(2026, 1, 5, 9, 20)
    assert state.interactions == ["ev-1", "ev-2", "ev-3"]
    with pytest.raises(CommandRejected) as err:
        domain.link_interaction(state, "ev-2", "message", "chat", "inbound")
    assert err.value.error == "already_linked"


def test_one_owner_at_a_time_with_handover_history() -> None:
    state = new_case(utc(2026, 1, 5, 9))
    state = fold(state, domain.assign(state, "ana"), utc(2026, 1, 5, 9, 1))
    state = fold(state, domain.assign(state, "ben", "billing"), utc(2026, 1, 5, 9, 2))
    assert state.owner == "ben" and state.team == "billing" and state.queue == "billing"
    assert [(h["owner"], h["previous_owner"]) for h in state.handovers] == [("ana", None), ("ben", "ana")]
    with pytest.raises(CommandRejected) as err:
        domain.assign(state, "ben")
    assert isinstance(err.value, Conflict) and err.value.error == "no_change"
    closed = case_in("closed")
    with pytest.raises(CommandRejected) as err:
        domain.assign(closed, "ana")
    assert err.value.error == "case_closed"


# --- priority and rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "vip", "gets"),
    [
        ("low", False, "low"),
        ("normal", False, "normal"),
        ("low", True, "high"),
        ("normal", True, "high"),
        ("high", True, "high"),
        ("urgent", True, "urgent"),
    ],
)
def test_vip_customers_get_at_least_high(asked: str, vip: bool, gets: str) -> None:
    assert rules.effective_priority(asked, vip) == gets
    assert new_case(utc(2026, 1, 5, 9), priority=asked, vip=vip).priority == gets


def test_a_vip_case_cannot_be_set_below_high() -> None:
    state = new_case(utc(2026, 1, 5, 9), vip=True)
    with pytest.raises(CommandRejected) as err:
        domain.set_priority(state, "normal", None, vip=True)
    assert isinstance(err.value, Invalid) and err.value.error == "priority_below_vip_minimum"
    drafts = domain.set_priority(state, "urgent", "angry", vip=True)
    assert drafts[0].data == {
        "case_id": "case-1",
        "customer_id": "cust-1",
        "from_priority": "high",
        "to_priority": "urgent",
        "reason": "angry",
        "type": "complaint",
    }
    with pytest.raises(CommandRejected) as err:
        domain.set_priority(state, "high", None, vip=True)
    assert err.value.error == "no_change"


def test_rules_open_cases_for_inbound_complaints_and_requests_only() -> None:
    assert rules.opening_rule(RULES, "complaint", "inbound", {}) == rules.OpenRule("complaint")
    assert rules.opening_rule(RULES, "request", "inbound", {}) == rules.OpenRule("request")
    assert rules.opening_rule(RULES, "request", "inbound", {"case_type": "repair"}) == rules.OpenRule("repair")
    assert rules.opening_rule(RULES, "request", "inbound", {"case_type": "nonsense"}) == rules.OpenRule("request")
    assert rules.opening_rule(RULES, "complaint", "outbound", {}) is None
    assert rules.opening_rule(RULES, "message", "inbound", {}) is None
    custom = rules.CaseRules(open_on={"call": rules.OpenRule("inquiry", "low", "phone-desk")})
    assert rules.opening_rule(custom, "call", "inbound", {}) == rules.OpenRule("inquiry", "low", "phone-desk")
    assert rules.opening_rule(custom, "complaint", "inbound", {}) is None


def test_the_same_interaction_always_names_the_same_case() -> None:
    assert rules.case_id_for("ev-1") == rules.case_id_for("ev-1") != rules.case_id_for("ev-2")


@pytest.mark.parametrize(
    ("metadata", "content", "score"),
    [
        ({"score": 9}, None, 9),
        ({"score": "4"}, None, 4),
        ({}, " 7 ", 7),
        ({}, "great", None),
        ({"score": 11}, None, None),
    ],
)
def test_survey_scores(metadata: dict, content: str | None, score: int | None) -> None:
    assert rules.survey_score(metadata, content) == score


def test_a_survey_answer_links_and_records_the_score() -> None:
    state = case_in("resolved")
    drafts = domain.record_survey(state, "ev-9", "survey", 8)
    assert [d.type for d in drafts] == [c.CASE_INTERACTION_LINKED, c.CASE_SURVEY_RECORDED]
    state = fold(state, drafts, utc(2026, 1, 6))
    assert state.survey_score == 8 and not state.awaiting_survey and "ev-9" in state.interactions


# --- business calendar -----------------------------------------------------------------------


def test_business_time_stops_overnight() -> None:
    # Mon 16:00 Berlin (15:00 UTC) + 2 business hours = Tue 10:00 Berlin
    assert BERLIN.add(utc(2026, 1, 5, 15), 2 * H) == utc(2026, 1, 6, 9)
    assert BERLIN.business_seconds(utc(2026, 1, 5, 15), utc(2026, 1, 6, 9)) == 2 * H


def test_business_time_skips_the_weekend() -> None:
    # Fri 16:00 Berlin + 2 h = Mon 10:00 Berlin; Saturday and Sunday count nothing
    assert BERLIN.add(utc(2026, 1, 9, 15), 2 * H) == utc(2026, 1, 12, 9)
    assert BERLIN.business_seconds(utc(2026, 1, 10, 0), utc(2026, 1, 12, 0)) == 0


def test_business_time_skips_holidays() -> None:
    # Thu 2 April 16:00 Berlin (CEST, 14:00 UTC) + 2 h: Good Friday off, weekend, Mon 6 April 10:00
    assert BERLIN.add(utc(2026, 4, 2, 14), 2 * H) == utc(2026, 4, 6, 8)


def test_business_hours_follow_the_local_clock_across_dst() -> None:
    # Before DST 09:00 Berlin is 08:00 UTC, after it 07:00 UTC; a working day is 8 h either way.
    assert BERLIN.window(date(2026, 3, 27)) == (utc(2026, 3, 27, 8), utc(2026, 3, 27, 16))
    assert BERLIN.window(date(2026, 3, 30)) == (utc(2026, 3, 30, 7), utc(2026, 3, 30, 15))
    assert BERLIN.add(utc(2026, 3, 27, 15), 2 * H) == utc(2026, 3, 30, 8)


def test_a_24x7_calendar_counts_every_second() -> None:
    always = BusinessCalendar.always_open()
    assert always.add(utc(2026, 1, 10, 23, 30), 3 * H) == utc(2026, 1, 11, 2, 30)
    assert always.business_seconds(utc(2026, 1, 10), utc(2026, 1, 12)) == 48 * H


@pytest.mark.parametrize(
    "kwargs",
    [{"time_zone": "Mars/Olympus"}, {"working_days": frozenset()}, {"start_minute": 600, "end_minute": 500}],
)
def test_impossible_calendars_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        BusinessCalendar(**kwargs)


# --- the SLA clock -----------------------------------------------------------------------------

POLICY = sla.SlaPolicy({p: Targets(first_response=2 * H, resolution=8 * H) for p in c.PRIORITIES}, 0.5)


def test_sla_due_instants_in_business_hours() -> None:
    state = new_case(utc(2026, 1, 9, 14))  # Fri 15:00 Berlin
    alerts = {(a.level, a.target): a.at for a in sla.scheduled_alerts(state, POLICY, BERLIN)}
    assert alerts == {
        ("warning", "first_response"): utc(2026, 1, 9, 15),  # 1 h: Fri 16:00 Berlin
        ("breach", "first_response"): utc(2026, 1, 9, 16),  # 2 h: Fri 17:00 Berlin
        ("warning", "resolution"): utc(2026, 1, 12, 10),  # 4 h: Mon 11:00 Berlin
        ("breach", "resolution"): utc(2026, 1, 12, 14),  # 8 h: Mon 15:00 Berlin
    }


def test_pending_pauses_the_clock_and_moves_the_due_instant() -> None:
    clock = Clock(utc(2026, 1, 5, 8))  # Mon 09:00 Berlin
    state = step(new_case(clock()), "open", clock.advance(minutes=30))
    state = step(state, "pending", clock.set(utc(2026, 1, 5, 10)))  # 2 business hours used
    view = sla.sla_view(state, POLICY, BERLIN, clock.set(utc(2026, 1, 7, 12)))
    assert view["clock"] == "paused"
    assert view["resolution"]["elapsed_seconds"] == 2 * H
    assert view["resolution"]["due_at"] is None  # no due instant while paused
    assert [a.target for a in sla.scheduled_alerts(state, POLICY, BERLIN)] == []
    # Back to open on Wed 13:00 Berlin: 6 h left -> Wed 17:00 (4 h) + Thu 09:00-11:00
    state = step(state, "open", clock())
    due = {(a.level, a.target): a.at for a in sla.scheduled_alerts(state, POLICY, BERLIN)}
    assert due[("breach", "resolution")] == utc(2026, 1, 8, 10)
    assert due[("warning", "resolution")] == utc(2026, 1, 7, 14)  # 4 h: 2 before, 2 after the pause


def test_alerts_fall_due_in_order_and_fire_exactly_once() -> None:
    clock = Clock(utc(2026, 1, 5, 8))
    state = new_case(clock())
    assert sla.due_alerts(state, POLICY, BERLIN, clock.advance(minutes=59)) == []
    due = sla.due_alerts(state, POLICY, BERLIN, clock.advance(minutes=1))
    assert [(a.level, a.target) for a in due] == [("warning", "first_response")]
    state = fold(state, sla.fire_alerts(state, due, POLICY, RULES), clock())
    assert sla.due_alerts(state, POLICY, BERLIN, clock()) == []  # fired: never again

    # Down for a day: everything due since falls due at once, warning before breach, one escalation.
    due = sla.due_alerts(state, POLICY, BERLIN, clock.advance(days=2))
    assert [(a.level, a.target) for a in due] == [
        ("breach", "first_response"),
        ("warning", "resolution"),
        ("breach", "resolution"),
    ]
    drafts = sla.fire_alerts(state, due, POLICY, RULES)
    assert [d.type for d in drafts] == [
        c.CASE_SLA_BREACHED,
        c.CASE_SLA_WARNING,
        c.CASE_SLA_BREACHED,
        c.CASE_ESCALATED,
    ]
    assert drafts[0].data["due_at"] == "2026-01-05T10:00:00Z"
    assert drafts[-1].data["queue"] == "support-escalations"
    state = fold(state, drafts, clock())
    assert state.breached and state.escalated and state.queue == "support-escalations"
    assert sla.due_alerts(state, POLICY, BERLIN, clock.advance(days=30)) == []


def test_a_target_met_in_time_needs_no_alert_and_one_met_late_still_breached() -> None:
    in_time = step(new_case(utc(2026, 1, 5, 8)), "open", utc(2026, 1, 5, 8, 30))
    targets = {a.target for a in sla.scheduled_alerts(in_time, POLICY, BERLIN)}
    assert targets == {"resolution"}

    late = step(new_case(utc(2026, 1, 5, 8)), "open", utc(2026, 1, 5, 10, 30))  # after the 2 h target
    due = sla.due_alerts(late, POLICY, BERLIN, utc(2026, 1, 5, 10, 31))
    assert {(a.level, a.target) for a in due} == {("warning", "first_response"), ("breach", "first_response")}


def test_a_priority_change_changes_the_targets() -> None:
    policy = sla.SlaPolicy({**POLICY.targets, "urgent": Targets(first_response=0.5 * H, resolution=H)}, 0.5)
    state = new_case(utc(2026, 1, 5, 8))
    state = fold(state, domain.set_priority(state, "urgent", None, vip=False), utc(2026, 1, 5, 8, 1))
    breach = next(a for a in sla.scheduled_alerts(state, policy, BERLIN) if a.level == "breach")
    assert breach.target == "first_response" and breach.at == utc(2026, 1, 5, 8, 30)


def test_a_policy_needs_every_priority() -> None:
    with pytest.raises(ConfigError):
        sla.SlaPolicy({"urgent": Targets(1, 2)})
