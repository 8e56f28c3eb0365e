"""intake's admin routes: API keys (create, list, revoke) and the export of one customer.

Keys are events (crm.auth.*): intake appends them to its store, and every service, intake too,
learns the key's hash and scopes from the topic. A new key works everywhere once its event is
applied there (pass the returned event_id as wait_for to any timeline to be sure).
"""

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append
from eventkit.signing import EventSigner
from eventkit.telemetry import current_traceparent
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit import timeline
from servicekit.app import audit_page, runtime
from servicekit.auth import hash_key, new_key, require
from servicekit.http import ApiError
from servicekit.inputs import SafeLine

from contracts.security import KEY_CREATED, KEY_REVOKED, SCOPE_PATTERN, KeyCreated, KeyRevoked
from contracts.topics import INTAKE
from intake import handlers
from intake.settings import IntakeSettings
from intake.vault import vault_of

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
    status_code=201,
    summary="Create an API key; the key is shown only in this answer",
    responses={201: {"model": KeyCreatedOut}},
)
async def create_key(request: Request, body: KeyIn) -> Response:
    rt = runtime(request)
    key_id, key = new_key()
    data = KeyCreated(key_id=key_id, name=body.name, scopes=sorted(set(body.scopes)), key_sha256=hash_key(key))
    event = _signed(
        rt.settings,
        new_event(KEY_CREATED, f"key:{key_id}", _unsigned(data), rt.settings.source, current_traceparent()),
    )
    async with rt.db.acquire() as conn, conn.transaction():
        await rt.store.append(conn, [Append(f"key-{key_id}", 0, [event], INTAKE)])
    body_out = {"key_id": key_id, "key": key, "name": body.name, "scopes": data.scopes, "event_id": event.id}
    return JSONResponse(body_out, status_code=201)


def _unsigned(data: KeyCreated | KeyRevoked) -> dict[str, Any]:
    return data.model_dump(mode="json", exclude={"signature", "signing_key_id"})


def _signed(settings: Any, event: Envelope) -> Envelope:
    """Signed with intake's signing key, so that the other services trust it (docs/product.md §14)."""
    s: IntakeSettings = settings
    if not s.auth_event_signing_key or not s.auth_event_signing_key_id:  # refused at startup; in case
        raise ApiError(503, "signing_key_missing", "intake has no AUTH_EVENT_SIGNING_KEY to sign keys with")
    return EventSigner(s.auth_event_signing_key_id, s.auth_event_signing_key).sign(event)


@router.get("/v1/admin/keys", summary="API keys (never the keys themselves)", responses={200: {"model": KeysOut}})
async def list_keys(request: Request) -> Response:
    async with runtime(request).db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at DESC"
        )
    return JSONResponse(
        {
            "items": [
                {
                    "key_id": r["key_id"],
                    "name": r["name"],
                    "scopes": list(r["scopes"]),
                    "created_at": r["created_at"].isoformat(),
                    "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None,
                }
                for r in rows
            ]
        }
    )


@router.delete(
    "/v1/admin/keys/{key_id}",
    summary="Revoke an API key everywhere",
    responses={
        200: {"model": KeyRevokedOut},
        404: {"description": "key_not_found"},
        409: {"description": "already_revoked; concurrency_conflict when two revocations race"},
    },
)
async def revoke_key(request: Request, key_id: str) -> Response:
    rt = runtime(request)
    async with rt.db.acquire() as conn, conn.transaction():
        known = await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", f"key-{key_id}")
        if known == 0:
            raise ApiError(404, "key_not_found", f"no key {key_id}")
        if known > 1:
            raise ApiError(409, "already_revoked", f"key {key_id} is revoked already")
        event = _signed(
            rt.settings,
            new_event(KEY_REVOKED, f"key:{key_id}", _unsigned(KeyRevoked(key_id=key_id)), rt.settings.source,
                      current_traceparent()),
        )  # fmt: skip
        await rt.store.append(conn, [Append(f"key-{key_id}", 1, [event], INTAKE)])
    return JSONResponse({"key_id": key_id, "revoked": True, "event_id": event.id})


@router.get(
    "/v1/customers/{customer_id}/export",
    tags=["customers"],
    summary="Everything the four services hold about a customer, as one JSON document",
    responses={
        200: {"model": ExportOut},
        308: {"description": "a merged customer: the survivor's export"},
        404: {"description": "customer_not_found"},
        503: {"description": "a service did not answer: no partial export"},
    },
)
async def export(request: Request, customer_id: str) -> Response:
    rt = runtime(request)
    settings: IntakeSettings = rt.settings  # type: ignore[assignment]
    try:
        profile = await handlers.get_customer(rt.db, vault_of(rt), customer_id)
    except handlers.CustomerMoved as exc:
        return RedirectResponse(request.url.path.replace(customer_id, exc.survivor_id, 1), status_code=308)
    except handlers.CustomerNotFound as exc:
        raise ApiError(404, "customer_not_found", f"no customer {customer_id}") from exc
    ids = [customer_id, *profile["merged_ids"]]  # what was recorded under a merged id is theirs too
    await rt.audit.flush()  # intake's own audit rows up to this request
    async with rt.db.acquire() as conn:
        events = await rt.keyring.unseal_items(await _whole_timeline(conn, customer_id))
        audit = await _whole_audit(conn, ids)
    # The caller's (admin) key: every service checks it and records the reads in its audit log.
    headers = {"Authorization": request.headers.get("authorization", "")}
    remote = {"case": settings.case_url, "notification": settings.notification_url, "analytics": settings.analytics_url}
    async with httpx.AsyncClient(timeout=10, headers=headers) as client:
        gather = _Gatherer(client)
        try:
            cases, notifications, insights, timelines, audits = await asyncio.gather(
                _cases(gather, settings.case_url, ids),
                gather.one(f"{settings.notification_url}/v1/admin/customers/{customer_id}/notifications"),
                gather.one(f"{settings.analytics_url}/v1/customers/{customer_id}/insights", missing_ok=True),
                asyncio.gather(
                    *(gather.pages(f"{url}/v1/customers/{customer_id}/timeline", "events") for url in remote.values())
                ),
                asyncio.gather(*(_remote_audit(gather, url, ids) for url in remote.values())),
            )
        except _Unavailable as exc:
            raise ApiError(503, "unavailable", f"{exc}; try again", headers={"Retry-After": "1"}) from exc
    timeline_of = dict(zip(remote, timelines, strict=True))
    audit_of = dict(zip(remote, audits, strict=True))
    return JSONResponse(
        {
            "customer_id": customer_id,
            "customer_ids": ids,
            "exported_at": datetime.now(UTC).isoformat(),
            "intake": {"customer": profile, "timeline": events, "audit": audit},
            "case": {"cases": cases, "timeline": timeline_of["case"], "audit": audit_of["case"]},
            "notification": {
                **notifications,
                "timeline": timeline_of["notification"],
                "audit": audit_of["notification"],
            },
            "analytics": {
                "customer_id": customer_id,
                "insights": insights,
                "timeline": timeline_of["analytics"],
                "audit": audit_of["analytics"],
            },
        }
    )


class _Unavailable(Exception):
    """A service that did not answer, or answered with an error: an export must not be partial."""


class _Gatherer:
    """GETs for the export: JSON bodies, every page of paged lists, a bounded number at a time."""

    def __init__(self, client: httpx.AsyncClient, parallel: int = 8) -> None:
        self.client = client
        self._slots = asyncio.Semaphore(parallel)

    async def one(self, url: str, params: dict[str, Any] | None = None, missing_ok: bool = False) -> dict[str, Any]:
        async with self._slots:
            try:
                r = await self.client.get(url, params=params)
            except httpx.HTTPError as exc:
                raise _Unavailable(f"{_where(url)} did not answer ({type(exc).__name__})") from exc
        if r.status_code == 404 and missing_ok:
            return {"status": 404, **r.json()}  # nothing known there (yet): say so, do not fail
        if r.status_code != 200:
            raise _Unavailable(f"{_where(url)} answered {r.status_code}")
        body: dict[str, Any] = r.json()
        return body

    async def pages(self, url: str, items: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a list paged by next_before (newest first, as the services page)."""
        out: list[Any] = []
        query: dict[str, Any] = {**(params or {}), "limit": 500}
        while True:
            page = await self.one(url, query)
            out.extend(page[items])
            if not page.get("next_before"):
                return out
            query["before"] = page["next_before"]


def _where(url: str) -> str:
    """host:port only: paths hold customer ids, which error messages should not carry."""
    return httpx.URL(url).netloc.decode()


async def _cases(gather: _Gatherer, case_url: str, ids: list[str]) -> list[dict[str, Any]]:
    """Every case of the customer (and of the ids merged into it) with its notes and full history."""
    listed = await asyncio.gather(*(gather.pages(f"{case_url}/v1/cases", "cases", {"customer_id": cid}) for cid in ids))
    case_ids = list(dict.fromkeys(c["case_id"] for page in listed for c in page))
    return list(await asyncio.gather(*(gather.one(f"{case_url}/v1/cases/{case_id}") for case_id in case_ids)))


async def _remote_audit(gather: _Gatherer, url: str, ids: list[str]) -> list[dict[str, Any]]:
    rows = await asyncio.gather(*(gather.pages(f"{url}/v1/admin/audit", "items", {"customer_id": cid}) for cid in ids))
    return [r for per_id in rows for r in per_id]


async def _whole_audit(conn: Any, ids: list[str]) -> list[dict[str, Any]]:
    """intake's own audit rows about the customer (its own table: no need to ask itself over HTTP)."""
    out: list[dict[str, Any]] = []
    for cid in ids:
        cursor = None
        while True:
            rows, cursor = await audit_page(conn, None, cid, 1000, cursor)
            out.extend(rows)
            if cursor is None:
                break
    return out


async def _whole_timeline(conn: Any, customer_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = await timeline.page(conn, customer_id, 500, cursor)
        items.extend(page)
        if cursor is None:
            return items


@router.post(
    "/v1/customers/{customer_id}/erasure",
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
async def erase(request: Request, customer_id: str) -> Response:
    rt = runtime(request)
    try:
        done = await handlers.erase_customer(rt.db, rt.store, vault_of(rt), rt.settings.source, customer_id)
    except handlers.CustomerMoved as exc:
        return RedirectResponse(request.url.path.replace(customer_id, exc.survivor_id, 1), status_code=308)
    except handlers.CustomerNotFound as exc:
        raise ApiError(404, "customer_not_found", f"no customer {customer_id}") from exc
    except handlers.AlreadyErased as exc:
        raise ApiError(409, "already_erased", f"customer {customer_id} is erased already") from exc
    rt.keyring.forget(done["erased_ids"])
    return JSONResponse(done, 202)
