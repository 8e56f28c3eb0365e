"""Agents and automatic assignment: the agent aggregate and the choice of an owner. Pure: no I/O.

- An agent's state is rebuilt from its events (stream `agent-<agent_id>`): name, teams, capacity
  (open cases at once), skills (case types) and status (online, away, offline).
- The choice: a waiting case goes to an online agent of its team with free capacity and the
  case's type among their skills; the least loaded first, ties to the longest idle, then the
  agent id (so that every instance would choose alike). Cases are served in the order given
  (the queue's: oldest due_at first); a case no agent fits waits and the next one may still fit.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from case.domain import CaseState, Conflict, Draft, draft
from contracts import case as c

NEVER = datetime.min.replace(tzinfo=UTC)  # idle since forever: first among equals
AUTO = "auto"
AGENT_OFFLINE = "agent_offline"


def stream_of(agent_id: str) -> str:
    return f"agent-{agent_id}"


def subject_of(agent_id: str) -> str:
    """The CloudEvents subject (and message key) of an agent's events: not a customer id."""
    return f"agent:{agent_id}"


@dataclass
class AgentState:
    agent_id: str
    version: int = 0
    name: str = ""
    teams: list[str] = field(default_factory=list)
    capacity: int = 0
    skills: list[str] = field(default_factory=list)
    status: str = "offline"  # a new agent starts offline: registering is not clocking in
    updated_at: datetime | None = None
    online_since: datetime | None = None

    @property
    def exists(self) -> bool:
        return self.version > 0

    @classmethod
    def from_events(cls, agent_id: str, events: Iterable[tuple[str, Mapping[str, Any], datetime]]) -> "AgentState":
        state = cls(agent_id)
        for type_, data, time in events:
            state.apply(type_, data, time)
        return state

    def apply(self, type_: str, data: Mapping[str, Any], time: datetime) -> None:
        self.version += 1
        self.updated_at = time
        if type_ == c.AGENT_UPDATED:
            self.name, self.teams = data["name"], list(data["teams"])
            self.capacity, self.skills = data["capacity"], list(data["skills"])
        elif type_ == c.AGENT_STATUS_CHANGED:
            self.status = data["to_status"]
            if self.status == "online":
                self.online_since = time


# --- decisions -------------------------------------------------------------------------------


def update(state: AgentState, name: str, teams: Sequence[str], capacity: int, skills: Sequence[str]) -> list[Draft]:
    """Set the agent's profile; the same profile again stores nothing (PUT is idempotent)."""
    teams, skills = sorted(set(teams)), sorted(set(skills))
    if state.exists and (state.name, state.teams, state.capacity, state.skills) == (name, teams, capacity, skills):
        return []
    return [draft(c.AGENT_UPDATED, agent_id=state.agent_id, name=name, teams=teams, capacity=capacity, skills=skills)]


def set_status(state: AgentState, status: str) -> list[Draft]:
    """The same status again stores nothing (PUT is idempotent)."""
    if status == state.status:
        return []
    return [draft(c.AGENT_STATUS_CHANGED, agent_id=state.agent_id, from_status=state.status, to_status=status)]


def auto_assign(case: CaseState, agent_id: str) -> list[Draft]:
    """The assigned event of an automatic assignment; only for a case still waiting unowned."""
    if case.owner is not None or case.status not in ("new", "open", "pending"):
        raise Conflict("not_waiting", "the case is no longer waiting in a queue")
    return [draft(c.CASE_ASSIGNED, **case.base(), owner=agent_id, previous_owner=None, team=case.team, reason=AUTO)]


def hand_back(case: CaseState, reason: str) -> list[Draft]:
    """Back to the team's queue: the owner went offline."""
    if case.owner is None:
        return []
    return [draft(c.CASE_UNASSIGNED, **case.base(), previous_owner=case.owner, team=case.team, reason=reason)]


# --- the choice ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    status: str
    capacity: int
    load: int  # open cases owned now
    skills: frozenset[str]
    idle_since: datetime | None  # None: never assigned nor online: idle the longest

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.load)


@dataclass(frozen=True)
class Waiting:
    case_id: str
    type: str


def choose(candidates: Iterable[Candidate], case_type: str) -> Candidate | None:
    """The agent for one case of this type, or None: it waits."""
    fit = [a for a in candidates if a.status == "online" and a.free > 0 and case_type in a.skills]
    return min(fit, key=lambda a: (a.load, a.idle_since or NEVER, a.agent_id), default=None)


def plan(waiting: Sequence[Waiting], candidates: Iterable[Candidate], now: datetime) -> list[tuple[str, str]]:
    """(case id, agent id) for the waiting cases, in their order, each choice counting the ones
    before it (the chosen agent's load goes up and they stop being idle)."""
    agents = {a.agent_id: a for a in candidates}
    out = []
    for case in waiting:
        chosen = choose(agents.values(), case.type)
        if chosen is None:
            continue
        agents[chosen.agent_id] = replace(chosen, load=chosen.load + 1, idle_since=now)
        out.append((case.case_id, chosen.agent_id))
    return out
