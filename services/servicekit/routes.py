"""The routes every service has: health, readiness, metrics, the customer timeline (page, digest,
live stream) and the audit log."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import asyncpg
from eventkit.live import heartbeat_stream
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from servicekit import timeline
from servicekit.auth import audit_page, require
from servicekit.http import CustomerMerged, OrjsonResponse, decode_cursor
from servicekit.runtime import runtime_of
from servicekit.streamtickets import stream_caller

common = APIRouter()


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, bool] = Field(
        description="database, broker, consumer_assigned, and outbox_flowing: the event at the head of"
        " the outbox has not waited longer than OUTBOX_STUCK_AFTER_S, or the head has moved meanwhile"
        " (a backlog being worked off is flowing)"
    )
    outbox_oldest_age_s: float | None = Field(default=None, description="how long the oldest unpublished event waited")


class TimelineItem(BaseModel):
    event_id: str
    type: str = Field(description="The event type, e.g. crm.interaction.recorded.v1")
    time: str = Field(description="RFC 3339, when it happened")
    source: str = Field(description="The producing service, e.g. /crm/intake")
    subject: str = Field(description="The customer id it was recorded under (a merged id included)")
    data: dict[str, Any] = Field(description="The event's data; personal fields read [erased] after erasure")


class TimelinePage(BaseModel):
    customer_id: str
    events: list[TimelineItem] = Field(description="Newest first")
    next_before: str | None = Field(description="Pass as before for the next page; null on the last one")


class TimelineTimeout(TimelinePage):
    error: Literal["wait_timeout"]
    message: str


class DigestOut(BaseModel):
    customer_id: str
    events: int
    digest: str = Field(description="hex SHA-256 over the event ids, one per line, in (time, id) order")


class AuditRow(BaseModel):
    at: str = Field(description="RFC 3339")
    key_id: str
    method: str
    route: str = Field(description="The route template, never the raw path")
    customer_id: str | None
    target: dict[str, str] | None = Field(description="The route's other path parameters (case_id, key_id...)")
    status: int


class AuditPage(BaseModel):
    items: list[AuditRow]
    next_before: int | None = Field(description="Pass as before for the next page; null on the last one")


MERGED: dict[int | str, dict[str, Any]] = {308: {"description": "a merged customer: the same URL for the survivor"}}


async def _members(conn: asyncpg.Connection, customer_id: str) -> list[str]:
    """The ids whose rows make the customer's timeline; a merged customer's URL answers 308 with
    the survivor's."""
    survivor, members = await timeline.resolve(conn, customer_id)
    if survivor is not None:
        raise CustomerMerged(customer_id, survivor)
    return members


@common.get("/healthz", operation_id="checkHealth", tags=["operations"], summary="Alive", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@common.get(
    "/readyz",
    operation_id="checkReadiness",
    tags=["operations"],
    summary="Database and broker reachable, consumer assigned",
    responses={200: {"model": ReadyOut}, 503: {"model": ReadyOut, "description": "not ready: checks says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    rt = runtime_of(request)
    checks: dict[str, bool] = {"database": False, "broker": False, "consumer_assigned": False, "outbox_flowing": False}
    oldest_age: float | None = None
    if rt.pool is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0), rt.pool.acquire() as conn:
                checks["database"] = await conn.fetchval("SELECT true")
                head = await conn.fetchrow(_OUTBOX_HEAD)
                oldest_age = head["age"] if head else None
                checks["outbox_flowing"] = rt.outbox_head.flowing(head and head["position"], oldest_age)
    if rt.producer is not None:
        checks["broker"] = bool(rt.producer.client.cluster.brokers())
    if rt.consumer is not None:
        checks["consumer_assigned"] = bool(rt.consumer.assignment())
    ready = all(checks.values())
    body = {"ready": ready, "checks": checks, "outbox_oldest_age_s": oldest_age}
    return JSONResponse(body, 200 if ready else 503)


# The event at the head of the outbox and how long it has waited (no row: none waits). Parked
# events are out of the outbox: counted by crm_outbox_parked_events and alerted on, not held
# against readiness.
_OUTBOX_HEAD = (
    "SELECT position, extract(epoch FROM clock_timestamp() - queued_at)::float8 AS age"
    " FROM outbox ORDER BY position LIMIT 1"
)


@common.get(
    "/metrics",
    operation_id="getMetrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@common.get(
    "/v1/customers/{customer_id}/timeline",
    operation_id="getTimeline",
    tags=["timeline"],
    summary="The customer's timeline",
    dependencies=[require("agent")],
    # Documented, not validated: this is the hot read path (FastAPI would check every page).
    responses={
        200: {"model": TimelinePage},
        308: {"description": "a merged customer: the survivor's URL"},
        504: {
            "model": TimelineTimeout,
            "description": "wait_for: the event was not applied within timeout_ms; the current page anyway",
        },
    },
)
async def get_timeline(
    request: Request,
    customer_id: str,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="next_before of the previous page")] = None,
    wait_for: Annotated[uuid.UUID | None, Query(description="answer once this event is applied")] = None,
    timeout_ms: Annotated[int, Query(ge=0, le=30_000)] = 1000,
) -> Response:
    rt = runtime_of(request)
    cursor = decode_cursor(timeline.Cursor.decode, before)
    applied = True
    if wait_for is not None:
        applied = await timeline.wait_until_applied(rt.db, rt.waiters, wait_for, timeout_ms / 1000)
    async with rt.db.acquire() as conn:
        members = await _members(conn, customer_id)
        items, next_cursor = await timeline.page(conn, customer_id, limit, cursor, members, rt.own_events)
    items = await rt.keyring.unseal_items(items)
    body = {
        "customer_id": customer_id,
        "events": items,
        "next_before": next_cursor.encode() if next_cursor else None,
    }
    if not applied:
        body["error"] = "wait_timeout"
        body["message"] = f"event {wait_for} not applied within {timeout_ms} ms; this is the current state"
        return OrjsonResponse(body, 504)
    return OrjsonResponse(body)


@common.get(
    "/v1/customers/{customer_id}/timeline/digest",
    operation_id="getTimelineDigest",
    tags=["timeline"],
    summary="Event count and SHA-256 over the event ids in canonical order (time, id)",
    dependencies=[require("agent")],
    responses={200: {"model": DigestOut}, **MERGED},
)
async def get_digest(request: Request, customer_id: str) -> Response:
    rt = runtime_of(request)
    async with rt.db.acquire() as conn:
        members = await _members(conn, customer_id)
        count, digest = await timeline.digest(conn, customer_id, members, rt.own_events)
    return JSONResponse({"customer_id": customer_id, "events": count, "digest": digest})


@common.get(
    "/v1/customers/{customer_id}/timeline/stream",
    operation_id="streamTimeline",
    tags=["timeline"],
    summary="Server-sent events: each new timeline item as this service applies it (key or ?ticket=)",
    response_class=StreamingResponse,
    dependencies=[Depends(stream_caller)],
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "one `data:` line of JSON per timeline item"},
        401: {"description": "unauthenticated: no valid key, or the ticket is forged, expired, used or another's"},
        403: {"description": "forbidden: the key lacks the agent scope"},
        429: {"description": "rate_limited: too many requests for this key; retry after Retry-After seconds"},
        503: {"description": "unavailable: the key could not be checked; retry after Retry-After seconds"},
        **MERGED,
    },
)
async def stream_timeline(request: Request, customer_id: str) -> Response:
    rt = runtime_of(request)
    async with rt.db.acquire() as conn:
        members = await _members(conn, customer_id)
        _, seen_before = await timeline.digest(conn, customer_id, members, rt.own_events)
    queue = rt.feed.subscribe(members)
    state = {"digest": seen_before}

    async def catch_up() -> list[dict[str, Any]]:
        async with rt.db.acquire() as conn:
            _, now = await timeline.digest(conn, customer_id, own=rt.own_events)
            if now == state["digest"]:
                return []
            state["digest"] = now
            items, _ = await timeline.page(conn, customer_id, 50, None, own=rt.own_events)
        return list(reversed(items))

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in heartbeat_stream(queue, catch_up, rt.keyring.unseal_items):
                yield chunk
        finally:
            rt.feed.unsubscribe(members, queue)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


@common.get(
    "/v1/admin/audit",
    operation_id="listAuditRecords",
    tags=["admin"],
    summary="Who read or changed what here, newest first",
    dependencies=[require("admin")],
    responses={200: {"model": AuditPage}},
)
async def get_audit(
    request: Request,
    key_id: str | None = None,
    customer_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="next_before of the previous page")] = None,
) -> Response:
    rt = runtime_of(request)
    await rt.audit.flush()
    async with rt.db.acquire() as conn:
        items, next_before = await audit_page(conn, key_id, customer_id, limit, before)
    return JSONResponse({"items": items, "next_before": next_before})
