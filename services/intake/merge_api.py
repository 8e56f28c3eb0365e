"""intake's routes to merge two customers by hand and to undo a merge (docs/merge-and-unmerge.md)."""

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit.auth import Caller, require
from servicekit.http import ApiError, audit_target, survivor_redirect
from servicekit.inputs import SafeLine, SafeText

from contracts.events import Channel
from intake import domain, errors, handlers, merging
from intake.api import ERASED, MERGED
from intake.deps import IntakeRuntime

router = APIRouter()

MAX_IDENTIFIERS = 50


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merged_id: SafeLine = Field(min_length=1, max_length=64, description="The customer merged into this one")


class IdentifierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["email", "phone", "external"]
    value: SafeLine = Field(min_length=1, max_length=320)
    channel: Channel | None = Field(default=None, description="For an external id: whose id it is")


class UnmergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merged_id: SafeLine = Field(min_length=1, max_length=64, description="The customer to split off again")
    identifiers: list[IdentifierIn] = Field(
        default_factory=list,
        max_length=MAX_IDENTIFIERS,
        description="Identifiers of this customer that go back to merged_id (each must be this customer's now)",
    )
    reason: SafeText | None = Field(default=None, max_length=500, description="Why, for the record")


class MergeOut(BaseModel):
    survivor_id: str
    merged_id: str
    event_ids: list[str]
    moved_ids: list[str] = Field(description="Unmerge: ids merged into merged_id that came back with it")


RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "customer_not_found: the path's customer or the body's merged_id"},
    409: {"description": "same_customer, already_merged (merge), not_merged (unmerge), no_identifier"},
    **ERASED,
    **MERGED,
}
COMMON: dict[str, Any] = {
    "tags": ["customers"],
    "response_model": MergeOut,
    "dependencies": [require("agent")],
    "responses": RESPONSES,
}


async def _answer(
    request: Request, rt: IntakeRuntime, principal: Any, customer_id: str, merged_id: str, call: Any
) -> Response:
    """The outcome, or the 4xx/308 for what went wrong. A done command is recorded in the audit log
    under both customers: the path's by the middleware, merged_id's here."""
    audit_target(request, merged_id=merged_id)
    try:
        out: merging.Outcome = await call
    except handlers.CustomerNotFound as exc:
        raise ApiError(404, "customer_not_found", f"no customer {customer_id}") from exc
    except handlers.CustomerMoved as exc:
        return survivor_redirect(request, customer_id, exc.survivor_id)
    except merging.MergedNotFound as exc:
        raise ApiError(404, "customer_not_found", f"no customer {merged_id}",
                       errors=[{"field": "body.merged_id", "reason": "unknown customer"}]) from exc  # fmt: skip
    except merging.MergeRefused as exc:
        raise ApiError(409, exc.error, exc.message,
                       errors=[{"field": "body.merged_id", "reason": exc.message}]) from exc  # fmt: skip
    except merging.NotTheSurvivors as exc:
        raise ApiError(422, "validation_failed", "an identifier to give back is not this customer's",
                       errors=[{"field": f"body.identifiers.{exc.index}", "reason": "not this customer's identifier"}],
                       ) from exc  # fmt: skip
    template = getattr(request.scope.get("route"), "path", request.url.path)
    rt.audit.record(principal.key_id, request.method, template, merged_id, {"survivor_id": customer_id}, 200)
    return JSONResponse(
        {"survivor_id": out.survivor_id, "merged_id": out.merged_id, "event_ids": out.event_ids,
         "moved_ids": out.moved_ids}
    )  # fmt: skip


@router.post(
    "/v1/customers/{customer_id}/merge",
    operation_id="mergeCustomer",
    summary="Merge another customer into this one by hand (crm.customer.merged.v1, reason manual)",
    **COMMON,
)
async def merge_customer(
    request: Request, rt: IntakeRuntime, principal: Caller, customer_id: str, body: MergeIn
) -> Response:
    call = merging.merge_customers(
        rt.db, rt.events, rt.context.vault, rt.settings.source, customer_id, body.merged_id, principal.key_id
    )
    return await _answer(request, rt, principal, customer_id, body.merged_id, call)


@router.post(
    "/v1/customers/{customer_id}/unmerge",
    operation_id="unmergeCustomer",
    summary="Undo a merge: merged_id answers for itself again, with the identifiers given back",
    **COMMON,
)
async def unmerge_customer(
    request: Request, rt: IntakeRuntime, principal: Caller, customer_id: str, body: UnmergeIn
) -> Response:
    idents: list[domain.Ident] = []
    try:
        for n, i in enumerate(body.identifiers):
            field = f"body.identifiers.{n}.value"
            if i.kind == "email":
                idents.append(domain.normalise_email(i.value, field))
            elif i.kind == "phone":
                idents.append(domain.normalise_phone(i.value, rt.settings.phone_default_region, field))
            elif i.channel is None:
                raise domain.InvalidInput(f"body.identifiers.{n}.channel", "an external id needs its channel")
            else:
                idents.append(domain.normalise_external(i.channel, i.value, field))
    except domain.InvalidInput as exc:
        raise errors.invalid(exc) from exc
    call = merging.unmerge_customer(
        rt.db, rt.events, rt.context.vault, rt.settings.source, customer_id, body.merged_id,
        list(dict.fromkeys(idents)), principal.key_id, body.reason,
    )  # fmt: skip
    return await _answer(request, rt, principal, customer_id, body.merged_id, call)
