"""A customer's answer reaches their case: which case it answers (reply_target), what it does to
that case (customer_replied), the automatic close of a resolved case nobody answered, and the
next-reply target an agent has to answer a customer's answer in."""

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from case import domain, sla
from case.domain import CaseState, Conflict, ReplyCandidate
from case.tests.support import BERLIN, RULES, H, fold, new_case, step, utc
from contracts import case as c

AT = utc(2026, 3, 2, 12)
WEEK = timedelta(days=7)


def cand(
    case_id: str, status: str, active_h_ago: float, type_: str = "complaint", resolved_h_ago: float | None = None
) -> ReplyCandidate:
    resolved = AT - timedelta(hours=resolved_h_ago) if resolved_h_ago is not None else None
    return ReplyCandidate(case_id, type_, status, AT - timedelta(hours=active_h_ago), resolved)


def target(
    candidates: list[ReplyCandidate], case_type: str | None = None, named: str | None = None
) -> tuple[str, bool] | None:
    found = domain.reply_target(candidates, AT, WEEK, case_type, named)
    return (found.case_id, found.reopen) if found else None


def test_the_only_open_case_takes_the_answer_whatever_its_type() -> None:
    assert target([cand("a", "pending", 5, type_="billing")]) == ("a", False)
    assert target([cand("a", "new", 5)]) == ("a", False)


def test_of_several_open_cases_the_most_recently_active_one() -> None:
    cases = [cand("old", "open", 30), cand("recent", "pending", 1), cand("mid", "new", 10)]
    assert target(cases) == ("recent", False)


def test_the_case_named_in_the_metadata_wins_if_it_can_take_the_answer() -> None:
    cases = [cand("old", "open", 30), cand("recent", "open", 1), cand("done", "resolved", 50, resolved_h_ago=50)]
    assert target(cases, named="old") == ("old", False)
    assert target(cases, named="done") == ("done", True)  # resolved within the window: reopens
    assert target(cases, named="someone-elses") == ("recent", False)  # not among the customer's: ignored
    late = [cand("recent", "open", 1), cand("done", "resolved", 200, resolved_h_ago=200)]
    assert target(late, named="done") == ("recent", False)  # resolved too long ago


def test_a_rule_kind_answers_only_a_case_of_its_type() -> None:
    cases = [cand("bill", "open", 1, type_="billing"), cand("comp", "open", 9)]
    assert target(cases, case_type="complaint") == ("comp", False)
    assert target(cases, case_type="request") is None  # the rule opens a new request case
    assert target(cases, case_type="request", named="bill") == ("bill", False)  # unless it names one


def test_a_resolved_case_reopens_within_the_window_and_not_after() -> None:
    assert target([cand("r", "resolved", 24, resolved_h_ago=24)]) == ("r", True)
    assert target([cand("r", "resolved", 168, resolved_h_ago=168)]) is None  # exactly a week: too late
    assert target([cand("r", "resolved", 1, resolved_h_ago=1), cand("o", "open", 50)]) == ("o", False)
    newer = [cand("r1", "resolved", 30, resolved_h_ago=30), cand("r2", "resolved", 2, resolved_h_ago=2)]
    assert target(newer) == ("r2", True)
    assert domain.reply_target(newer, AT, timedelta(0)) is None  # a zero window never reopens


def test_an_answer_made_before_the_resolution_reopens_nothing() -> None:
    # Recorded an hour before the case was resolved, met by the consumer only now: the customer
    # wrote before seeing the resolution, so it is no answer to it.
    resolved_after = [cand("a", "resolved", 0, resolved_h_ago=-1)]
    assert target(resolved_after) is None


def test_closed_cases_and_no_cases_take_no_answer() -> None:
    assert target([cand("x", "closed", 1, resolved_h_ago=2)]) is None
    assert target([]) is None


def test_an_answer_on_a_pending_case_opens_it_and_the_sla_clock_runs_again() -> None:
    opened = utc(2026, 3, 2, 9)
    state = step(step(new_case(opened), "open", opened), "pending", opened + timedelta(hours=1))
    assert sla.sla_view(state, sla.DEFAULT_POLICY, BERLIN, opened + timedelta(hours=2))["clock"] == "paused"
    at = opened + timedelta(hours=3)
    drafts = domain.customer_replied(state, "ev-2", "message", "email", at, at, RULES)
    assert [(d.type, d.data.get("to_status"), d.data.get("reason")) for d in drafts] == [
        (c.CASE_INTERACTION_LINKED, None, None),
        (c.CASE_STATUS_CHANGED, "open", "customer_replied"),
    ]
    assert drafts[0].data["direction"] == "inbound"
    state = fold(state, drafts, at)
    assert state.status == "open" and "ev-2" in state.interactions
    view = sla.sla_view(state, sla.DEFAULT_POLICY, BERLIN, at + timedelta(hours=1))
    assert view["clock"] == "running"
    assert view["resolution"]["elapsed_seconds"] == 2 * H  # 1 h before the pause + 1 h since the answer


def test_an_answer_on_a_resolved_case_reopens_it_and_on_an_open_one_only_links() -> None:
    at = utc(2026, 3, 2, 9)
    resolved = step(step(new_case(at), "open", at), "resolved", at)
    drafts = domain.customer_replied(resolved, "ev-2", "message", "email", at, at, RULES)
    assert [d.type for d in drafts] == [c.CASE_INTERACTION_LINKED, c.CASE_STATUS_CHANGED]
    assert (drafts[1].data["from_status"], drafts[1].data["to_status"]) == ("resolved", "open")
    assert fold(resolved, drafts, at).resolved_at is None
    open_ = step(new_case(at), "open", at)
    assert [d.type for d in domain.customer_replied(open_, "ev-2", "message", "chat", at, at, RULES)] == [
        c.CASE_INTERACTION_LINKED
    ]
    closed = step(step(step(new_case(at), "open", at), "resolved", at), "closed", at)
    with pytest.raises(Conflict):
        domain.customer_replied(closed, "ev-2", "message", "chat", at, at, RULES)


def test_an_answer_chosen_for_a_case_resolved_since_only_links_to_it() -> None:
    # The case was open when the answer was matched to it, resolved by an agent before the link
    # was written: the customer wrote before the resolution, so the case stays resolved.
    opened = new_case(at=utc(2026, 3, 2, 9))
    opened = fold(
        opened, domain.change_status(opened, "open", None, utc(2026, 3, 2, 9, 5), RULES), utc(2026, 3, 2, 9, 5)
    )
    written_at, resolved_at = utc(2026, 3, 2, 10), utc(2026, 3, 2, 10, 1)
    resolved = fold(opened, domain.change_status(opened, "resolved", None, resolved_at, RULES), resolved_at)
    drafts = domain.customer_replied(resolved, "ev-2", "message", "email", written_at, resolved_at, RULES)
    assert [d.type for d in drafts] == [c.CASE_INTERACTION_LINKED]


def test_a_resolved_case_closes_by_itself_after_the_delay_unless_reopened() -> None:
    at = utc(2026, 3, 2, 9)
    resolved = step(step(new_case(at), "open", at), "resolved", at)
    assert domain.auto_close_at(resolved, RULES) == at + RULES.auto_close_after  # type: ignore[operator]
    assert domain.auto_close(resolved, RULES, at + timedelta(days=6)) == []
    [closing] = domain.auto_close(resolved, RULES, at + timedelta(days=7))
    assert (closing.data["from_status"], closing.data["to_status"], closing.data["reason"]) == (
        "resolved",
        "closed",
        "auto_closed",
    )
    reopened = fold(resolved, domain.customer_replied(resolved, "ev-2", "message", "email", at, at, RULES), at)
    assert domain.auto_close_at(reopened, RULES) is None
    assert domain.auto_close_at(domain.CaseState("x"), RULES) is None
    assert domain.auto_close_at(resolved, replace(RULES, auto_close_after=None)) is None


# --- the next-reply target -------------------------------------------------------------------

NEXT_REPLY_POLICY = replace(sla.DEFAULT_POLICY, next_reply={"normal": 2 * H})


def answered_case(at: datetime) -> CaseState:
    """A normal case an agent took up at `at`, with the customer's answer linked at `at` + 1 h."""
    state = step(new_case(at), "open", at)
    answer_at = at + timedelta(hours=1)
    return fold(
        state, domain.customer_replied(state, "ev-2", "message", "email", answer_at, answer_at, RULES), answer_at
    )


def test_a_customers_answer_starts_the_next_reply_clock_and_its_alerts_fire_once() -> None:
    at = utc(2026, 3, 2, 9)  # a Monday morning in Berlin
    state = answered_case(at)
    alerts = [(a.level, a.target, a.at) for a in sla.scheduled_alerts(state, NEXT_REPLY_POLICY, BERLIN)]
    key = domain.next_reply_key("ev-2")
    assert ("warning", key, at + timedelta(hours=1 + 1.6)) in alerts
    assert ("breach", key, at + timedelta(hours=3)) in alerts
    assert not any(t.startswith("next_reply") for _, t, _ in sla_alerts(state, sla.DEFAULT_POLICY))  # off

    due = [a for a in sla.due_alerts(state, NEXT_REPLY_POLICY, BERLIN, at + timedelta(hours=3)) if a.target == key]
    drafts = sla.fire_alerts(state, due, NEXT_REPLY_POLICY, RULES)
    assert [d.type for d in drafts] == [c.CASE_REPLY_SLA_WARNING, c.CASE_REPLY_SLA_BREACHED, c.CASE_ESCALATED]
    assert drafts[1].data["reply_to"] == "ev-2" and drafts[2].data["reason"] == "next reply target breached"
    state = fold(state, drafts, at + timedelta(hours=3))
    assert not [a for a in sla.scheduled_alerts(state, NEXT_REPLY_POLICY, BERLIN) if a.target == key]


def sla_alerts(state: CaseState, policy: sla.SlaPolicy) -> list[tuple[str, str, datetime]]:
    return [(a.level, a.target, a.at) for a in sla.scheduled_alerts(state, policy, BERLIN)]


def test_an_agents_answer_ends_the_round_and_pending_pauses_it() -> None:
    at = utc(2026, 3, 2, 9)
    state = answered_case(at)
    replied = fold(
        state, domain.link_interaction(state, "ev-3", "message", "email", "outbound"), at + timedelta(hours=2)
    )
    assert replied.reply_to is None
    assert not [t for _, t, _ in sla_alerts(replied, NEXT_REPLY_POLICY) if t.startswith("next_reply")]

    paused = step(answered_case(at), "pending", at + timedelta(hours=2))  # 1 h of the 2 used
    assert not [t for _, t, _ in sla_alerts(paused, NEXT_REPLY_POLICY) if t.startswith("next_reply")]
    back = step(paused, "open", at + timedelta(hours=5))
    breach = [a for lvl, t, a in sla_alerts(back, NEXT_REPLY_POLICY) if t.startswith("next_reply") and lvl == "breach"]
    assert breach == [at + timedelta(hours=6)]  # the other hour after the pause


def test_no_round_before_the_first_response_nor_after_the_resolution() -> None:
    at = utc(2026, 3, 2, 9)
    fresh = new_case(at)  # the first-response target covers answers before anyone took the case up
    fresh = fold(fresh, domain.customer_replied(fresh, "ev-2", "message", "email", at, at, RULES), at)
    assert fresh.reply_to is None
    resolved = step(answered_case(at), "resolved", at + timedelta(hours=2))
    assert resolved.reply_to is None
