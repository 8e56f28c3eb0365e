"""Agents and the automatic assignment choice: who gets a waiting case, in which order, and what
the agent and case events say. Pure: no database."""

from datetime import datetime

import pytest

from case import agents
from case.agents import AgentState, Candidate, Waiting
from case.domain import Conflict
from case.tests.support import fold, new_case, utc
from contracts import case as c

ALL = frozenset(c.CASE_TYPES)
T0 = utc(2026, 3, 2, 9)


def agent(
    agent_id: str,
    load: int = 0,
    capacity: int = 2,
    status: str = "online",
    skills: frozenset[str] = ALL,
    idle_since: datetime | None = None,
) -> Candidate:
    return Candidate(agent_id, status, capacity, load, skills, idle_since)


def chosen(pool: list[Candidate], case_type: str = "repair") -> str | None:
    choice = agents.choose(pool, case_type)
    return choice.agent_id if choice else None


def test_the_least_loaded_online_agent_with_the_skill_and_free_capacity_gets_the_case() -> None:
    pool = [
        agent("away", status="away"),
        agent("offline", status="offline"),
        agent("full", load=2),
        agent("billing-only", skills=frozenset({"billing"})),
        agent("busy", load=1),
        agent("free", load=0, idle_since=utc(2026, 3, 2, 8)),
    ]
    assert agents.choose(pool, "repair") == pool[-1]
    assert agents.choose(pool, "billing") == pool[3]  # never assigned: idle the longest
    assert agents.choose(pool[:3], "repair") is None  # away, offline and full agents take nothing


def test_equal_load_goes_to_the_longest_idle_then_by_agent_id() -> None:
    pool = [
        agent("b", idle_since=utc(2026, 3, 2, 8)),
        agent("a", idle_since=utc(2026, 3, 2, 9)),
        agent("c", idle_since=utc(2026, 3, 2, 7)),
    ]
    assert chosen(pool) == "c"
    never = [*pool, agent("z", idle_since=None)]  # never assigned nor online since: idle the longest
    assert chosen(never) == "z"
    tied = [agent("y", idle_since=T0), agent("x", idle_since=T0)]
    assert chosen(tied) == "x"
    assert agents.choose([agent("a", capacity=0)], "repair") is None  # capacity 0: nothing automatic


def test_three_agents_of_capacity_two_take_six_of_seven_cases_in_queue_order_spread_evenly() -> None:
    pool = [agent("ana"), agent("ben"), agent("cem")]
    waiting = [Waiting(f"case-{n}", "repair") for n in range(7)]
    plan = agents.plan(waiting, pool, T0)
    assert [case for case, _ in plan] == [f"case-{n}" for n in range(6)]  # the oldest due first; the last waits
    owners = [owner for _, owner in plan]
    assert owners[:3] == ["ana", "ben", "cem"]  # one each before anyone gets a second
    assert sorted(owners) == ["ana", "ana", "ben", "ben", "cem", "cem"]


def test_a_case_no_agent_fits_waits_and_the_next_one_may_still_be_assigned() -> None:
    pool = [agent("billing", skills=frozenset({"billing"}), capacity=1)]
    plan = agents.plan([Waiting("r", "repair"), Waiting("b1", "billing"), Waiting("b2", "billing")], pool, T0)
    assert plan == [("b1", "billing")]


def test_agent_events_are_idempotent_puts_and_a_new_agent_starts_offline() -> None:
    state = AgentState("ana")
    drafts = agents.update(state, "Ana", ["support", "billing", "support"], 2, ["repair"])
    assert [d.type for d in drafts] == [c.AGENT_UPDATED]
    assert drafts[0].data["teams"] == ["billing", "support"]
    state = AgentState.from_events("ana", [(d.type, d.data, T0) for d in drafts])
    assert (state.status, state.capacity, state.exists) == ("offline", 2, True)
    assert agents.update(state, "Ana", ["support", "billing"], 2, ["repair"]) == []
    online = agents.set_status(state, "online")
    assert online[0].data == {"agent_id": "ana", "from_status": "offline", "to_status": "online"}
    state.apply(online[0].type, online[0].data, T0)
    assert state.online_since == T0 and agents.set_status(state, "online") == []


def test_auto_assignment_and_hand_back_events() -> None:
    case = new_case(T0)
    [assigned] = agents.auto_assign(case, "ana")
    assert (assigned.type, assigned.data["owner"], assigned.data["reason"]) == (c.CASE_ASSIGNED, "ana", "auto")
    fold(case, [assigned], T0)
    with pytest.raises(Conflict):
        agents.auto_assign(case, "ben")  # owned meanwhile: never assigned twice
    [back] = agents.hand_back(case, agents.AGENT_OFFLINE)
    assert back.data["previous_owner"] == "ana" and back.data["reason"] == "agent_offline"
    fold(case, [back], T0)
    assert case.owner is None and agents.hand_back(case, agents.AGENT_OFFLINE) == []
