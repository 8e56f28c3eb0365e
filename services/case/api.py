"""case's HTTP routes for agents: thin, validate, call a handler, map rule breaks to 4xx.

Every command carries the version the agent decided on, as `If-Match: "<version>"` or
`expected_version` in the body; responses carry the new version in the body and the ETag.
"""

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit.auth import Caller, Principal, require
from servicekit.http import ApiError, audit_customer, decode_cursor
from servicekit.inputs import INT64_MAX, SafeLine, SafeText

from case import field_query, handlers, sla, store, views
from case.deps import CaseRuntime
from case.domain import CommandRejected
from case.errors import api_error
from case.handlers import Outcome
from contracts import fields as f
from contracts.case import CaseType, Priority, ReplyChannel, Status

router = APIRouter(tags=["cases"], dependencies=[require("agent")])

Name = Annotated[SafeLine, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
Reason = Annotated[SafeText | None, Field(default=None, max_length=500)]
# A version in If-Match: ASCII digits only (str.isdigit() also takes "²" and "٣", which int()
# then refuses or reads), and within PostgreSQL's bigint.
_VERSION = re.compile(r"[0-9]{1,18}", re.ASCII)


def _json(body: Any, status: int = 200, version: int | None = None) -> Response:
    headers = {"ETag": f'"{version}"'} if version is not None else None
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _not_found(case_id: str) -> ApiError:
    return ApiError(404, "case_not_found", f"no case {case_id}")


def _expected_version(if_match: str | None, body_version: int | None) -> int:
    """The version the command was decided on; commands without one are refused (428), because
    they could silently overwrite what another agent just did."""
    header_version = None
    if if_match is not None:
        text = if_match.strip().removeprefix("W/").strip('"')
        if not _VERSION.fullmatch(text):
            raise ApiError(
                422,
                "validation_failed",
                'If-Match must be a case version, e.g. "3"',
                errors=[{"field": "header.If-Match", "reason": "not a version"}],
            )
        header_version = int(text)
    if header_version is not None and body_version is not None and header_version != body_version:
        raise ApiError(
            422,
            "validation_failed",
            "If-Match and expected_version disagree",
            errors=[{"field": "expected_version", "reason": "differs from If-Match"}],
        )
    version = header_version if header_version is not None else body_version
    if version is None:
        raise ApiError(
            428,
            "precondition_required",
            'send the case version you decided on: If-Match: "<version>" or expected_version',
        )
    return version


IfMatch = Annotated[str | None, Header(alias="If-Match", description='The case version, e.g. "3"')]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expected_version: int | None = Field(default=None, ge=0, le=INT64_MAX, description="Or send If-Match")


class AssignIn(Command):
    owner: Name
    team: Name | None = Field(default=None, description="Hand over to another team as well")


class StatusIn(Command):
    status: Status
    reason: Reason = None


class PriorityIn(Command):
    priority: Priority
    reason: Reason = None


class NoteIn(Command):
    author: Name
    text: SafeText = Field(min_length=1, max_length=10_000)


class ReplyIn(Command):
    channel: ReplyChannel = Field(description="Delivered to the customer's verified address on this channel")
    body: SafeText = Field(min_length=1, max_length=10_000)
    author: Name | None = Field(default=None, description="Who signs it; the calling key's name if left out")


class LinkIn(Command):
    interaction_event_id: uuid.UUID


class OpenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: SafeLine = Field(min_length=1, max_length=64)
    type: CaseType
    priority: Priority = "normal"
    team: Name = "support"
    title: SafeLine | None = Field(default=None, max_length=200)
    case_id: uuid.UUID | None = Field(
        default=None, description="Choose the id to make retries safe: opening it again answers 200 with that case"
    )


class PendingSpan(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime | None


class HandoverOut(BaseModel):
    owner: str
    previous_owner: str | None
    team: str
    at: datetime


class NoteOut(BaseModel):
    author: str
    text: str = Field(description='"[erased]" once the customer is erased')
    at: datetime


class SurveyOut(BaseModel):
    requested_at: datetime | None
    due_at: datetime | None
    score: int | None


class CaseOut(BaseModel):
    """A case as agents see it (views.to_view)."""

    case_id: str
    customer_id: str
    version: int = Field(description='Send it back as If-Match: "<version>" with the next command')
    type: CaseType
    priority: Priority
    status: Status
    allowed_transitions: list[Status]
    team: str
    queue: str
    owner: str | None
    title: str | None
    opened_at: datetime | None
    opened_by: str | None
    updated_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    pending_spans: list[PendingSpan]
    handovers: list[HandoverOut]
    notes: list[NoteOut]
    interactions: list[str] = Field(description="Linked interaction event ids")
    escalated: bool
    breached: bool
    fields: dict[str, Any] = Field(description='Typed fields by name; personal ones "[erased]" after erasure')
    tags: list[str] = Field(description="Sorted")
    survey: SurveyOut


class CommandOut(CaseOut):
    event_ids: list[str] = Field(description="The events this command stored")


class SlaTargetOut(BaseModel):
    target_seconds: float
    elapsed_seconds: float = Field(description="Business seconds so far")
    due_at: datetime | None = Field(description="None while the clock is paused short of the target")
    met_at: datetime | None
    warned: bool
    breached: bool


class SlaOut(BaseModel):
    clock: Literal["running", "paused"]
    first_response: SlaTargetOut
    resolution: SlaTargetOut


class HistoryEntry(BaseModel):
    event_id: str
    version: int
    type: str
    time: datetime
    data: dict[str, Any]


class CaseDetailOut(CaseOut):
    sla: SlaOut
    history: list[HistoryEntry] = Field(description="Every event of the case, oldest first")


class CaseSummary(BaseModel):
    """What every listing of cases shows of one (the case list, a team's queue)."""

    case_id: str
    customer_id: str
    version: int
    type: CaseType
    priority: Priority
    status: Status
    team: str
    queue: str
    owner: str | None
    title: str | None
    opened_at: datetime
    updated_at: datetime


class CaseRow(CaseSummary):
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    breached: bool
    escalated: bool
    awaiting_survey: bool


class CaseListOut(BaseModel):
    cases: list[CaseRow] = Field(description="Newest first")
    next_before: str | None = Field(description="Pass as before for the next page; null on the last one")


def _outcome(outcome: Outcome, status: int = 200) -> Response:
    body = {**views.to_view(outcome.state), "event_ids": outcome.event_ids}
    return _json(body, status, outcome.state.version)


async def _command(
    request: Request,
    rt: CaseRuntime,
    case_id: str,
    body: Command,
    if_match: IfMatch,
    handler: Callable[..., Awaitable[Outcome]],
    *args: Any,
) -> Response:
    """What every command route does: check the expected version, call
    `handler(db, context, case_id, version, *args)`, answer the case as it is now, or the 4xx of
    the rule it broke."""
    version = _expected_version(if_match, body.expected_version)
    try:
        outcome = await handler(rt.db, rt.context, case_id, version, *args)
        audit_customer(request, outcome.state.customer_id)
        return _outcome(outcome)
    except handlers.CaseNotFound as exc:
        raise _not_found(case_id) from exc
    except CommandRejected as exc:
        raise api_error(exc) from exc


_COMMAND_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"model": CommandOut, "description": "the case after the command; ETag: its version"},
    404: {"description": "case_not_found, interaction_not_found"},
    409: {"description": "concurrency_conflict (stale version), illegal_transition (with allowed), no_change, ..."},
    422: {"description": "validation_failed, priority_below_vip_minimum, interaction_of_another_customer"},
    428: {"description": "precondition_required: no If-Match or expected_version"},
}


@router.get(
    "/v1/cases",
    operation_id="listCases",
    summary="List and filter cases, newest first",
    description="Also `field.<name>=<value>` (non-personal case fields, value as the field's type takes it)"
    " and `tag=<tag>` (repeat: all of them); every filter must hold.",
    responses={
        200: {"model": CaseListOut},
        422: {"description": "validation_failed: query.field.<name> (unknown, bad value, personal_field), query.tag"},
    },
)
async def list_cases(
    request: Request,
    rt: CaseRuntime,
    status: Annotated[list[Status] | None, Query()] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    type: Annotated[list[CaseType] | None, Query()] = None,
    owner: str | None = None,
    team: str | None = None,
    queue: str | None = None,
    customer_id: str | None = None,
    breached: bool | None = None,
    escalated: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="next_before of the previous page")] = None,
    tag: Annotated[list[str] | None, Query(max_length=f.TAGS_PER_RECORD_MAX, description="Has this tag")] = None,
) -> Response:
    cursor = decode_cursor(store.ListCursor.decode, before)
    field_filters = await field_query.field_filters(rt.db, request.query_params.multi_items())
    tags = field_query.tag_filters(tag or [])
    filters = {
        "status": status,
        "priority": priority,
        "type": type,
        "owner": owner,
        "team": team,
        "queue": queue,
        "customer_id": customer_id,
        "breached": breached,
        "escalated": escalated,
        "fields": field_filters,
        "tags": tags,
    }
    rows, next_cursor = await handlers.list_cases(rt.db, rt.keyring, filters, limit, cursor)
    return _json({"cases": rows, "next_before": next_cursor.encode() if next_cursor else None})


@router.post(
    "/v1/cases",
    operation_id="createCase",
    status_code=201,
    summary="Open a case by hand",
    responses={
        200: {"model": CommandOut, "description": "opened before with this case_id: that case"},
        201: {"model": CommandOut, "description": "opened"},
        404: {"description": "customer_not_found: no such customer has reached the case service (yet)"},
        409: {"description": "case_id_taken: another customer's case has this id"},
    },
)
async def open_case(rt: CaseRuntime, body: OpenIn) -> Response:
    ctx = rt.context
    try:
        outcome = await handlers.open_case(
            rt.db,
            ctx,
            body.customer_id,
            body.type,
            body.priority,
            body.team,
            body.title,
            str(body.case_id or uuid.uuid4()),
        )
    except handlers.CustomerNotFound as exc:
        raise ApiError(404, "customer_not_found", f"no customer {body.customer_id} is known here") from exc
    except handlers.CaseIdTaken as exc:
        raise ApiError(409, "case_id_taken", "another customer's case has this id") from exc
    return _outcome(outcome, 201 if outcome.created else 200)


@router.get(
    "/v1/cases/{case_id}",
    operation_id="getCase",
    summary="One case with SLA state and its full history",
    responses={200: {"model": CaseDetailOut}, 404: {"description": "case_not_found"}},
)
async def get_case(request: Request, rt: CaseRuntime, case_id: str) -> Response:
    ctx = rt.context
    try:
        state, stored = await handlers.get_case(rt.db, ctx, case_id)
    except handlers.CaseNotFound as exc:
        raise _not_found(case_id) from exc
    audit_customer(request, state.customer_id)
    body = {
        **views.to_view(state),
        "sla": sla.sla_view(state, ctx.policy, ctx.calendar, ctx.clock()),
        "history": [
            {
                "event_id": s.event.id,
                "version": s.version,
                "type": s.event.type,
                "time": s.event.time,
                "data": data,
            }
            for s, data in stored
        ],
    }
    return _json(body, version=state.version)


@router.post(
    "/v1/cases/{case_id}/assign",
    operation_id="assignCase",
    summary="Give the case to an owner",
    responses=_COMMAND_ERRORS,
)
async def assign(request: Request, rt: CaseRuntime, case_id: str, body: AssignIn, if_match: IfMatch = None) -> Response:
    return await _command(request, rt, case_id, body, if_match, handlers.assign, body.owner, body.team)


@router.post(
    "/v1/cases/{case_id}/status",
    operation_id="changeCaseStatus",
    summary="Move the case along its lifecycle",
    responses=_COMMAND_ERRORS,
)
async def change_status(
    request: Request, rt: CaseRuntime, case_id: str, body: StatusIn, if_match: IfMatch = None
) -> Response:
    return await _command(request, rt, case_id, body, if_match, handlers.change_status, body.status, body.reason)


@router.post(
    "/v1/cases/{case_id}/priority",
    operation_id="setCasePriority",
    summary="Set the priority",
    responses=_COMMAND_ERRORS,
)
async def set_priority(
    request: Request, rt: CaseRuntime, case_id: str, body: PriorityIn, if_match: IfMatch = None
) -> Response:
    return await _command(request, rt, case_id, body, if_match, handlers.set_priority, body.priority, body.reason)


@router.post("/v1/cases/{case_id}/notes", operation_id="addCaseNote", summary="Add a note", responses=_COMMAND_ERRORS)
async def add_note(request: Request, rt: CaseRuntime, case_id: str, body: NoteIn, if_match: IfMatch = None) -> Response:
    return await _command(request, rt, case_id, body, if_match, handlers.add_note, body.author, body.text)


@router.post(
    "/v1/cases/{case_id}/interactions",
    operation_id="linkCaseInteraction",
    summary="Link an interaction",
    responses=_COMMAND_ERRORS,
)
async def link_interaction(
    request: Request, rt: CaseRuntime, case_id: str, body: LinkIn, if_match: IfMatch = None
) -> Response:
    return await _command(
        request, rt, case_id, body, if_match, handlers.link_interaction, str(body.interaction_event_id)
    )


def _author(given: str | None, caller: Principal) -> str:
    """The reply's author: as given, else the calling key's name made to fit a name."""
    if given is not None:
        return given
    return " ".join(caller.name.split())[:64].strip() or caller.key_id[:64]


@router.post(
    "/v1/cases/{case_id}/replies",
    operation_id="replyToCase",
    summary="Reply to the customer: notification delivers it on the channel (rule agent_reply)",
    responses=_COMMAND_ERRORS,
)
async def reply(
    request: Request, rt: CaseRuntime, caller: Caller, case_id: str, body: ReplyIn, if_match: IfMatch = None
) -> Response:
    author = _author(body.author, caller)
    return await _command(request, rt, case_id, body, if_match, handlers.reply, body.channel, author, body.body)
