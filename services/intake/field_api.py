"""intake's routes for customer fields and tags (issue 29, docs/customer-fields.md): admins
define fields, agents set them and tag customers; GET /v1/customers filters by both."""

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit.auth import Caller, require
from servicekit.http import ApiError
from servicekit.inputs import unsafe_reason

from contracts.fields import FIELDS_PER_RECORD_MAX, TAGS_PER_RECORD_MAX, FieldDefinition
from intake import domain, errors, field_handlers, field_store, fields, handlers
from intake.api import ERASED, MERGED, NOT_FOUND
from intake.customer_api import customer_call
from intake.deps import IntakeRuntime
from intake.field_filters import invalid

router = APIRouter()


class FieldOut(FieldDefinition):
    version: int = Field(description="1 when defined, one more at each redefinition")
    defined_at: str
    defined_by: str = Field(description="Key id of the admin who defined this version")


class FieldDefinedOut(FieldOut):
    event_ids: list[str] = Field(description="The crm.customer.field_defined.v1 event; empty when nothing changed")


class FieldsOut(BaseModel):
    items: list[FieldOut]


class FieldsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: dict[str, Any] = Field(
        max_length=FIELDS_PER_RECORD_MAX,
        description="Field name -> value (null clears it); fields not named keep their values",
        examples=[{"product_model": "RX-200", "purchase_date": "2026-03-14", "vip_note": None}],
    )


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=TAGS_PER_RECORD_MAX)
    remove: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=TAGS_PER_RECORD_MAX)


class FieldsChangedOut(BaseModel):
    customer_id: str
    event_ids: list[str] = Field(description="The crm.customer.fields_set.v1 event; empty when nothing changed")
    fields: dict[str, Any] = Field(description="The customer's fields now, as GET /v1/customers/{customer_id} shows")


class TagsChangedOut(BaseModel):
    customer_id: str
    event_ids: list[str] = Field(description="The crm.customer.tags_changed.v1 event; empty when nothing changed")
    tags: list[str] = Field(description="The customer's tags now, sorted")


@router.post(
    "/v1/admin/fields",
    operation_id="defineCustomerField",
    tags=["admin"],
    status_code=201,
    summary="Define a customer field (201), or redefine it (200, version + 1); crm.customer.field_defined.v1",
    dependencies=[require("admin")],
    responses={
        201: {"model": FieldDefinedOut, "description": "a new field, version 1"},
        200: {"model": FieldDefinedOut, "description": "redefined (version + 1), or the same definition again"},
        409: {"description": f"field_type_fixed: a type never changes; too_many_fields: over {FIELDS_PER_RECORD_MAX}"},
        422: {"description": "validation_failed: case_types and required_to_resolve are for case fields"},
    },
)
async def define_field(rt: IntakeRuntime, body: FieldDefinition, principal: Caller) -> Response:
    for n, text in enumerate([body.label or "", *(body.values or [])]):
        if reason := unsafe_reason(text, one_line=True):
            raise invalid("label" if n == 0 else f"values.{n - 1}", reason)
    try:
        out, created = await field_handlers.define_field(rt.db, rt.events, rt.settings.source, body, principal.key_id)
    except domain.InvalidInput as exc:
        raise errors.invalid(exc) from exc
    except fields.FieldTypeFixed as exc:
        raise ApiError(409, "field_type_fixed", str(exc), type=exc.old) from exc
    except fields.TooManyFields as exc:
        raise ApiError(409, "too_many_fields", str(exc)) from exc
    return JSONResponse(out, status_code=201 if created else 200)


@router.get(
    "/v1/admin/fields",
    operation_id="listCustomerFields",
    tags=["admin"],
    summary="The customer fields, each as currently defined, with its version",
    dependencies=[require("agent", "ops")],
    responses={200: {"model": FieldsOut}},
)
async def list_fields(rt: IntakeRuntime) -> Response:
    async with rt.db.acquire() as conn:
        return JSONResponse({"items": await field_store.definition_rows(conn)})


def _checked_values(values: Mapping[str, Any]) -> None:
    """Text that can never be stored (NUL, lone surrogates) is refused before the database sees it."""
    for name, value in values.items():
        if reason := unsafe_reason(name, one_line=True):
            raise invalid("values", f"a field name {reason}")
        if isinstance(value, str) and (reason := unsafe_reason(value)):
            raise invalid(f"values.{name}", reason)


@router.put(
    "/v1/customers/{customer_id}/fields",
    operation_id="setCustomerFields",
    tags=["customers"],
    summary="Set the named fields (null clears one; others keep their values); idempotent",
    dependencies=[require("agent")],
    responses={
        200: {"model": FieldsChangedOut},
        422: {"description": "validation_failed: errors[].field values.<name>, unknown field or bad value"},
        **ERASED,
        **MERGED,
        **NOT_FOUND,
    },
)
async def put_fields(
    request: Request, rt: IntakeRuntime, customer_id: str, body: FieldsIn, principal: Caller
) -> Response:
    _checked_values(body.values)

    async def changed() -> dict[str, Any]:
        event_ids = await field_handlers.set_fields(
            rt.db, rt.events, rt.context.vault, rt.settings.source, customer_id, body.values, principal.key_id
        )
        now = await handlers.get_customer(rt.db, rt.context.vault, customer_id)
        return {"customer_id": customer_id, "event_ids": event_ids, "fields": now["fields"]}

    return await customer_call(request, customer_id, changed())


@router.post(
    "/v1/customers/{customer_id}/tags",
    operation_id="changeCustomerTags",
    tags=["customers"],
    summary="Add and remove tags (normalised: lower case, spaces as -)",
    dependencies=[require("agent")],
    responses={
        200: {"model": TagsChangedOut},
        422: {"description": f"validation_failed: errors[].field add.<n> or remove.<n>; at most {TAGS_PER_RECORD_MAX}"},
        **MERGED,
        **NOT_FOUND,
    },
)
async def post_tags(request: Request, rt: IntakeRuntime, customer_id: str, body: TagsIn, principal: Caller) -> Response:
    async def changed() -> dict[str, Any]:
        event_ids = await field_handlers.change_tags(
            rt.db, rt.events, rt.settings.source, customer_id, body.add, body.remove, principal.key_id
        )
        now = await handlers.get_customer(rt.db, rt.context.vault, customer_id)
        return {"customer_id": customer_id, "event_ids": event_ids, "tags": now["tags"]}

    return await customer_call(request, customer_id, changed())
