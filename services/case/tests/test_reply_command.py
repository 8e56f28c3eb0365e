"""An agent's reply (crm.case.reply_sent.v1): its payload, the first reply as the first response
for the SLA, and no reply on a closed case."""

import pytest

from case import domain, sla
from case.domain import Conflict
from case.sla import Targets
from case.tests.support import BERLIN, fold, new_case, step, utc
from contracts import case as c
from contracts.case import CASE_PERSONAL_FIELDS

POLICY = sla.SlaPolicy({p: Targets(first_response=2 * 3600, resolution=8 * 3600) for p in c.PRIORITIES}, 0.5)


def test_a_reply_names_channel_author_body_and_what_analytics_groups_by() -> None:
    state = new_case(utc(2026, 1, 5, 9), priority="high")
    [d] = domain.reply(state, "sms", "ana", "We are sending a technician.")
    assert d.type == c.CASE_REPLY_SENT
    assert d.data == {
        "case_id": "case-1",
        "customer_id": "cust-1",
        "channel": "sms",
        "author": "ana",
        "body": "We are sending a technician.",
        "team": state.team,
        "type": "complaint",
        "priority": "high",
    }
    assert CASE_PERSONAL_FIELDS[c.CASE_REPLY_SENT] == ("body",)  # sealed like a note's text


def test_the_first_reply_is_the_first_response_and_stops_its_sla_alerts() -> None:
    state = new_case(utc(2026, 1, 5, 8))  # Mon 09:00 Berlin
    assert {a.target for a in sla.scheduled_alerts(state, POLICY, BERLIN)} == {"first_response", "resolution"}
    state = fold(state, domain.reply(state, "email", "ana", "On it."), utc(2026, 1, 5, 8, 30))
    assert state.first_response_at == utc(2026, 1, 5, 8, 30)
    assert {a.target for a in sla.scheduled_alerts(state, POLICY, BERLIN)} == {"resolution"}
    view = sla.sla_view(state, POLICY, BERLIN, utc(2026, 1, 5, 12))
    assert view["first_response"]["met_at"] == utc(2026, 1, 5, 8, 30)
    # A later reply does not move it.
    state = fold(state, domain.reply(state, "email", "ana", "Still on it."), utc(2026, 1, 5, 9))
    assert state.first_response_at == utc(2026, 1, 5, 8, 30)


def test_a_resolved_case_may_be_replied_to_a_closed_one_not() -> None:
    at = utc(2026, 1, 5, 9)
    state = step(step(new_case(at), "open", at), "resolved", at)
    assert domain.reply(state, "email", "ana", "Anything else?")[0].type == c.CASE_REPLY_SENT
    closed = step(state, "closed", at)
    with pytest.raises(Conflict) as err:
        domain.reply(closed, "email", "ana", "Hello?")
    assert err.value.error == "case_closed"
