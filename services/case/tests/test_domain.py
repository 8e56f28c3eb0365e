"""The case aggregate: every transition against the table, status timestamps and first response
from the events, handovers, the VIP floor on commands, survey answers."""

import itertools
from datetime import datetime

import pytest

from case import domain
from case.domain import CaseState, CommandRejected, Conflict, IllegalTransition, Invalid
from case.tests.support import RULES, Clock, fold, new_case, step, utc
from contracts import case as c

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


def test_a_survey_answer_links_and_records_the_score() -> None:
    state = case_in("resolved")
    drafts = domain.record_survey(state, "ev-9", "survey", 8)
    assert [d.type for d in drafts] == [c.CASE_INTERACTION_LINKED, c.CASE_SURVEY_RECORDED]
    state = fold(state, drafts, utc(2026, 1, 6))
    assert state.survey_score == 8 and not state.awaiting_survey and "ev-9" in state.interactions
