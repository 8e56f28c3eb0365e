"""case's HTTP routes for agents and queues: who works which team's cases, and what waits.

- `PUT /v1/agents/{agent_id}`: a supervisor (scope `supervisor`, or admin) sets an agent's name,
  teams, capacity and skills.
- `PUT /v1/agents/{agent_id}/status`: the agent themselves (an `agent` key whose name is the
  agent id), or a supervisor, sets online, away or offline.
- `GET /v1/agents`, `GET /v1/agents/{agent_id}`, `GET /v1/queues/{team}`: agents and supervisors.
"""

from datetime import datetime
from typing import Annotated, Any, get_args

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit.auth import Caller, require
from servicekit.http import ApiError
from servicekit.inputs import SafeLine

from case import agent_handlers
from case.agent_handlers import AgentOutcome
from case.api import CaseSummary
from case.deps import CaseRuntime
from contracts.case import CASE_TYPES, AgentStatus, CaseType

router = APIRouter(tags=["agents"])

# An agent id is what auto-assigned cases name as owner: a plain token, no spaces.
AGENT_ID = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
AgentId = Annotated[str, Path(pattern=AGENT_ID, max_length=64, description="e.g. ana or ana@example.com")]
TeamName = Annotated[SafeLine, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
TeamPath = Annotated[SafeLine, Path(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
SUPERVISOR = "supervisor"


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeLine = Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")
    teams: list[TeamName] = Field(min_length=1, max_length=32)
    capacity: int = Field(ge=0, le=1000, description="Open cases at once; 0 takes none automatically")
    skills: list[CaseType] = Field(
        default_factory=lambda: list(get_args(CaseType)),
        max_length=len(CASE_TYPES),
        description="Case types; every type unless told",
    )


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: AgentStatus


class AgentOut(BaseModel):
    agent_id: str
    version: int
    name: str
    teams: list[str]
    capacity: int
    skills: list[CaseType]
    status: AgentStatus
    load: int = Field(description="Open cases (new, open, pending) the agent owns now")
    updated_at: datetime
    idle_since: datetime | None = Field(description="Last automatic assignment, or coming online if later")


class AgentCommandOut(AgentOut):
    event_ids: list[str] = Field(description="The events this command stored (none if nothing changed)")
    handed_back: list[str] = Field(description="Going offline: the cases given back to the team's queue")


class AgentListOut(BaseModel):
    agents: list[AgentOut] = Field(description="By agent id")


class QueueCase(CaseSummary):
    breached: bool
    escalated: bool
    due_at: datetime | None = Field(description="The earliest SLA breach time (passed, if breached); null: none")


class OwnerAgent(BaseModel):
    agent_id: str
    name: str
    status: AgentStatus
    capacity: int
    load: int


class OwnerQueue(BaseModel):
    owner: str
    agent: OwnerAgent | None = Field(description="null when the owner is not a registered agent")
    cases: list[QueueCase]


class QueueOut(BaseModel):
    team: str
    unassigned: list[QueueCase] = Field(description="Waiting for an agent, oldest due_at first")
    owners: list[OwnerQueue] = Field(description="Per owner, by owner")
    escalations: list[QueueCase] = Field(description="Escalated open cases, also listed above")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _not_found(agent_id: str) -> ApiError:
    return ApiError(404, "agent_not_found", f"no agent {agent_id}; a supervisor registers agents first")


async def _answer(rt: CaseRuntime, outcome: AgentOutcome, status: int = 200) -> Response:
    row = await agent_handlers.get_agent(rt.db, outcome.state.agent_id)
    return _json({**row, "event_ids": outcome.event_ids, "handed_back": outcome.handed_back}, status)


@router.get(
    "/v1/agents",
    operation_id="listAgents",
    summary="Agents with their status and load",
    dependencies=[require("agent", SUPERVISOR)],
    responses={200: {"model": AgentListOut}},
)
async def list_agents(
    rt: CaseRuntime,
    team: Annotated[SafeLine | None, Query(max_length=64)] = None,
    status: AgentStatus | None = None,
) -> Response:
    return _json({"agents": await agent_handlers.list_agents(rt.db, team, status)})


@router.get(
    "/v1/agents/{agent_id}",
    operation_id="getAgent",
    summary="One agent with status and load",
    dependencies=[require("agent", SUPERVISOR)],
    responses={200: {"model": AgentOut}, 404: {"description": "agent_not_found"}},
)
async def get_agent(rt: CaseRuntime, agent_id: AgentId) -> Response:
    try:
        return _json(await agent_handlers.get_agent(rt.db, agent_id))
    except agent_handlers.AgentNotFound as exc:
        raise _not_found(agent_id) from exc


@router.put(
    "/v1/agents/{agent_id}",
    operation_id="saveAgent",
    summary="Register or change an agent: name, teams, capacity, skills (supervisor)",
    dependencies=[require(SUPERVISOR)],
    responses={
        200: {"model": AgentCommandOut, "description": "changed (or unchanged: no event)"},
        201: {"model": AgentCommandOut, "description": "registered, offline"},
        422: {"description": "validation_failed"},
    },
)
async def put_agent(rt: CaseRuntime, agent_id: AgentId, body: AgentIn) -> Response:
    outcome = await agent_handlers.put_agent(
        rt.db, rt.context, agent_id, body.name, list(body.teams), body.capacity, list(body.skills)
    )
    return await _answer(rt, outcome, 201 if outcome.state.version == len(outcome.event_ids) else 200)


@router.put(
    "/v1/agents/{agent_id}/status",
    operation_id="setAgentStatus",
    summary="Go online, away or offline (the agent themselves, or a supervisor)",
    dependencies=[require("agent", SUPERVISOR)],
    responses={
        200: {"model": AgentCommandOut},
        403: {"description": "forbidden: an agent key sets only its own agent's status"},
        404: {"description": "agent_not_found"},
    },
)
async def set_status(rt: CaseRuntime, caller: Caller, agent_id: AgentId, body: StatusIn) -> Response:
    # An agent's key is the one whose name is the agent id (docs/services/case.md, "Agents").
    if not caller.allows(SUPERVISOR) and caller.name != agent_id:
        raise ApiError(
            403,
            "forbidden",
            "an agent key sets only the status of the agent its name names; or use a supervisor key",
            required=[SUPERVISOR],
        )
    try:
        outcome = await agent_handlers.set_status(rt.db, rt.context, agent_id, body.status)
    except agent_handlers.AgentNotFound as exc:
        raise _not_found(agent_id) from exc
    return await _answer(rt, outcome)


@router.get(
    "/v1/queues/{team}",
    operation_id="getTeamQueue",
    summary="A team's open cases by due_at: unassigned, per owner, escalations",
    dependencies=[require("agent", SUPERVISOR)],
    responses={200: {"model": QueueOut}},
)
async def team_queue(rt: CaseRuntime, team: TeamPath, limit: Annotated[int, Query(ge=1, le=2000)] = 500) -> Response:
    return _json(await agent_handlers.queue(rt.db, rt.keyring, team, limit))
