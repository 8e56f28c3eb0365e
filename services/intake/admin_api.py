"""intake's admin routes: API keys (create, list, revoke) and the export of one customer.

Keys are events (crm.auth.*): intake appends them to its store, and every service, intake too,
learns the key's hash and scopes from the topic. A new key works everywhere once its event is
applied there (pass the returned event_id as wait_for to any timeline to be sure).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit.auth import key_listing, require
from servicekit.http import ApiError
from servicekit.inputs import SafeLine

from contracts.security import SCOPE_PATTERN
from intake import handlers, keys
from intake.customer_api import customer_call
from intake.deps import IntakeRuntime
from intake.export import Unavailable, customer_export

router = APIRouter(tags=["admin"], dependencies=[require("admin")])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeLine = Field(min_length=1, max_length=100)
    scopes: list[Annotated[str, Field(pattern=SCOPE_PATTERN)]] = Field(min_length=1, max_length=12)


class KeyCreatedOut(BaseModel):
    key_id: str
    key: str = Field(description="The secret: send it as Authorization: Bearer <key>; shown only here")
    name: str
    scopes: list[str]
    event_id: str = Field(description="Pass as wait_for to a service's timeline: the key works there once applied")


class KeyOut(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    created_at: str
    revoked_at: str | None


class KeysOut(BaseModel):
    items: list[KeyOut]


class KeyRevokedOut(BaseModel):
    key_id: str
    revoked: bool
    event_id: str


class ServiceExport(BaseModel):
    timeline: list[dict[str, Any]]
    audit: list[dict[str, Any]]


class IntakeExport(ServiceExport):
    customer: dict[str, Any] = Field(description="As GET /v1/customers/{customer_id} answers")


class CaseExport(ServiceExport):
    cases: list[dict[str, Any]] = Field(description="Each as GET /v1/cases/{case_id} answers")


class AnalyticsExport(ServiceExport):
    customer_id: str
    insights: dict[str, Any] = Field(description="As GET /v1/customers/{customer_id}/insights answers, or its 404")


class ExportOut(BaseModel):
    customer_id: str
    customer_ids: list[str] = Field(description="The customer and every id merged into it")
    exported_at: str
    intake: IntakeExport
    case: CaseExport
    notification: ServiceExport = Field(description="notification's customer export, with timeline and audit")
    analytics: AnalyticsExport


class ErasureOut(BaseModel):
    event_id: str = Field(description="The crm.customer.erased.v1 event")
    customer_id: str
    erased_ids: list[str] = Field(description="The customer and every id merged into it")


@router.post(
    "/v1/admin/keys",
    operation_id="createKey",
    status_code=201,
    summary="Create an API key; the key is shown only in this answer",
    responses={201: {"model": KeyCreatedOut}},
)
async def create_key(rt: IntakeRuntime, body: KeyIn) -> Response:
    try:
        created = await keys.create_key(rt.db, rt.events, rt.settings, body.name, body.scopes)
    except keys.SigningKeyMissing as exc:
        raise _signing_key_missing() from exc
    return JSONResponse(created, status_code=201)


def _signing_key_missing() -> ApiError:  # refused at startup; in case
    return ApiError(503, "signing_key_missing", "intake has no AUTH_EVENT_SIGNING_KEY to sign keys with")


@router.get(
    "/v1/admin/keys",
    operation_id="listKeys",
    summary="API keys (never the keys themselves)",
    responses={200: {"model": KeysOut}},
)
async def list_keys(rt: IntakeRuntime) -> Response:
    async with rt.db.acquire() as conn:
        return JSONResponse({"items": await key_listing(conn)})


@router.delete(
    "/v1/admin/keys/{key_id}",
    operation_id="revokeKey",
    summary="Revoke an API key everywhere",
    responses={
        200: {"model": KeyRevokedOut},
        404: {"description": "key_not_found"},
        409: {"description": "already_revoked; concurrency_conflict when two revocations race"},
    },
)
async def revoke_key(rt: IntakeRuntime, key_id: str) -> Response:
    try:
        revoked = await keys.revoke_key(rt.db, rt.events, rt.settings, key_id)
    except keys.KeyNotFound as exc:
        raise ApiError(404, "key_not_found", f"no key {key_id}") from exc
    except keys.KeyRevokedAlready as exc:
        raise ApiError(409, "already_revoked", f"key {key_id} is revoked already") from exc
    except keys.SigningKeyMissing as exc:
        raise _signing_key_missing() from exc
    return JSONResponse(revoked)


@router.get(
    "/v1/customers/{customer_id}/export",
    operation_id="exportCustomer",
    tags=["customers"],
    summary="Everything the four services hold about a customer, as one JSON document",
    responses={
        200: {"model": ExportOut},
        308: {"description": "a merged customer: the survivor's export"},
        404: {"description": "customer_not_found"},
        503: {"description": "a service did not answer: no partial export"},
    },
)
async def export(request: Request, rt: IntakeRuntime, customer_id: str) -> Response:
    # The caller's (admin) key: every service checks it and records the reads in its audit log.
    authorization = request.headers.get("authorization", "")

    async def document() -> dict[str, Any]:
        profile = await handlers.get_customer(rt.db, rt.context.vault, customer_id)
        await rt.audit.flush()  # intake's own audit rows up to this request
        try:
            return await customer_export(rt.db, rt.keyring, rt.settings, profile, customer_id, authorization)
        except Unavailable as exc:
            raise ApiError(503, "unavailable", f"{exc}; try again", headers={"Retry-After": "1"}) from exc

    return await customer_call(request, customer_id, document())


@router.post(
    "/v1/customers/{customer_id}/erasure",
    operation_id="eraseCustomer",
    tags=["customers"],
    status_code=202,
    summary="Erase a customer: destroy their data keys (crypto-shredding); every service masks what it holds",
    responses={
        202: {"model": ErasureOut},
        308: {"description": "a merged customer: erase the survivor"},
        404: {"description": "no such customer"},
        409: {"description": "erased already"},
    },
)
async def erase(request: Request, rt: IntakeRuntime, customer_id: str) -> Response:
    async def erasure() -> dict[str, Any]:
        try:
            done = await handlers.erase_customer(rt.db, rt.events, rt.context.vault, rt.settings.source, customer_id)
        except handlers.AlreadyErased as exc:
            raise ApiError(409, "already_erased", f"customer {customer_id} is erased already") from exc
        rt.keyring.forget(done["erased_ids"])
        return done

    return await customer_call(request, customer_id, erasure(), 202)
