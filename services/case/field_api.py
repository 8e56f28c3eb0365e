"""case's HTTP routes for typed fields and tags on cases (issue 29).

- `POST /v1/admin/fields` (admin): define or redefine a case field; `GET` lists them (admin,
  agent, ops: the console reads them to draw the case panel).
- `POST /v1/cases/{case_id}/fields` (agent, If-Match required): set or clear values.
- `POST /v1/cases/{case_id}/tags` (agent, If-Match optional): add and remove tags. Tags commute
  (adding one does not depend on what else changed), so a tag change decided on an older
  version is still right; a client that wants the check sends If-Match.
"""

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from servicekit.auth import Caller, require
from servicekit.http import ApiError, audit_customer
from servicekit.inputs import unsafe_reason

from case import field_handlers, handlers
from case.api import _COMMAND_ERRORS, Command, IfMatch, _expected_version, _json, _not_found, _outcome
from case.deps import CaseRuntime
from case.domain import CommandRejected
from case.errors import api_error
from case.field_rules import Defined
from case.handlers import Outcome
from contracts import fields as f

router = APIRouter(tags=["fields"])

TagText = Annotated[str, Field(max_length=200)]
_NAME = re.compile(f.FIELD_NAME_PATTERN)


class FieldOut(f.FieldDefinition):
    """The definition as posted, with its version: the same shape as intake's customer fields."""

    version: int = Field(description="1 when defined, one more for each redefinition")
    defined_by: str
    defined_at: datetime


class FieldCommandOut(FieldOut):
    event_ids: list[str] = Field(description="The event this stored; none if the field was defined so already")


class FieldListOut(BaseModel):
    items: list[FieldOut] = Field(description="By name")


class FieldsIn(Command):
    values: dict[str, Any] = Field(
        min_length=1,
        max_length=f.FIELDS_PER_RECORD_MAX,
        description="By field name: the new value (text, number, YYYY-MM-DD, enum value, true/false as the field's"
        " type says), or null to clear it",
    )


def _checked_values(values: dict[str, Any]) -> dict[str, Any]:
    """Names that can be fields, and text that can be stored; the definitions judge the rest.
    A name that cannot be a field is not echoed back: it may hold what JSON cannot carry."""
    errors = []
    for name, value in values.items():
        if not _NAME.match(name):
            errors.append({"field": "values", "reason": "a field name is a-z, 0-9 and _, starting with a letter"})
        elif isinstance(value, str) and (reason := unsafe_reason(value)):
            errors.append({"field": f"values.{name}", "reason": reason})
    if errors:
        raise ApiError(422, "validation_failed", "some field values are not valid", errors=errors)
    return values


def _checked_definition(body: f.FieldDefinition) -> f.FieldDefinition:
    texts = [("label", body.label or "")] + [(f"values.{i}", v) for i, v in enumerate(body.values or [])]
    errors = [{"field": where, "reason": r} for where, text in texts if (r := unsafe_reason(text, one_line=True))]
    if errors:
        raise ApiError(422, "validation_failed", "the definition holds text that cannot be stored", errors=errors)
    return body


class TagsIn(Command):
    add: list[TagText] = Field(default_factory=list, max_length=f.TAGS_PER_RECORD_MAX)
    remove: list[TagText] = Field(default_factory=list, max_length=f.TAGS_PER_RECORD_MAX)


def _field_row(defined: Defined) -> dict[str, Any]:
    return {
        **defined.definition.model_dump(mode="json"),
        "version": defined.version,
        "defined_by": defined.defined_by,
        "defined_at": defined.defined_at,
    }


@router.post(
    "/v1/admin/fields",
    operation_id="defineCaseField",
    summary="Define a case field, or redefine it (admin)",
    dependencies=[require("admin")],
    responses={
        200: {"model": FieldCommandOut, "description": "redefined (or defined so already: no event)"},
        201: {"model": FieldCommandOut, "description": "defined, version 1"},
        409: {"description": "field_type_fixed, field_personal_fixed: a new name is needed; too_many_fields"},
        422: {"description": "validation_failed"},
    },
)
async def define_field(rt: CaseRuntime, caller: Caller, body: f.FieldDefinition) -> Response:
    try:
        outcome = await field_handlers.define_field(rt.db, rt.context, _checked_definition(body), caller.key_id)
    except CommandRejected as exc:
        raise api_error(exc) from exc
    return _json({**_field_row(outcome.defined), "event_ids": outcome.event_ids}, 201 if outcome.created else 200)


@router.get(
    "/v1/admin/fields",
    operation_id="listCaseFields",
    summary="The case fields as defined now, with their versions",
    dependencies=[require("admin", "agent", "ops")],
    responses={200: {"model": FieldListOut}},
)
async def list_fields(rt: CaseRuntime) -> Response:
    rows = await field_handlers.list_fields(rt.db)
    return _json({"items": rows})


async def _run(request: Request, case_id: str, call: Any) -> Response:
    try:
        outcome: Outcome = await call
    except handlers.CaseNotFound as exc:
        raise _not_found(case_id) from exc
    except CommandRejected as exc:
        raise api_error(exc) from exc
    audit_customer(request, outcome.state.customer_id)
    return _outcome(outcome)


@router.post(
    "/v1/cases/{case_id}/fields",
    operation_id="setCaseFields",
    summary="Set or clear typed fields of the case",
    dependencies=[require("agent")],
    responses={
        **_COMMAND_ERRORS,
        422: {"description": "validation_failed: errors name values.<name> (unknown field, not this type, bad value)"},
    },
)
async def set_fields(
    request: Request, rt: CaseRuntime, caller: Caller, case_id: str, body: FieldsIn, if_match: IfMatch = None
) -> Response:
    version = _expected_version(if_match, body.expected_version)
    values = _checked_values(body.values)
    call = field_handlers.set_fields(rt.db, rt.context, case_id, version, values, caller.key_id)
    return await _run(request, case_id, call)


@router.post(
    "/v1/cases/{case_id}/tags",
    operation_id="changeCaseTags",
    summary="Add and remove tags (If-Match optional: tags commute)",
    dependencies=[require("agent")],
    responses={
        **{status: answer for status, answer in _COMMAND_ERRORS.items() if status != 428},
        409: {"description": "too_many_tags; concurrency_conflict if If-Match was sent and is stale"},
        422: {"description": "validation_failed: errors name add.<i> / remove.<i>"},
    },
)
async def change_tags(
    request: Request, rt: CaseRuntime, caller: Caller, case_id: str, body: TagsIn, if_match: IfMatch = None
) -> Response:
    unchecked = if_match is None and body.expected_version is None
    version = None if unchecked else _expected_version(if_match, body.expected_version)
    call = field_handlers.change_tags(
        rt.db, rt.context, case_id, version, list(body.add), list(body.remove), caller.key_id
    )
    return await _run(request, case_id, call)
