"""The SLA clock under a controllable clock: due instants in business hours, pending pauses,
alerts once each in order with one escalation, met-late targets, priority changes."""

import pytest

from case import domain, sla
from case.calendar import ConfigError
from case.sla import Targets
from case.tests.support import BERLIN, RULES, Clock, H, fold, new_case, step, utc
from contracts import case as c

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
