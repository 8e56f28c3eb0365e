"""notification's HTTP routes for agents and ops: what was decided and delivered, and why."""

import uuid
from typing import Annotated, Any, Literal

from eventkit.app import runtime
from eventkit.auth import require
from eventkit.http import ApiError
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from notification import handlers, store

router = APIRouter(tags=["notifications"], dependencies=[require("agent", "ops")])

Status = Literal["pending", "scheduled", "retrying", "sending", "sent", "delivered", "failed", "suppressed", "digested"]


@router.get("/v1/notifications", summary="Notifications, newest first, by customer and/or status")
async def list_notifications(
    request: Request,
    customer_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    rt = runtime(request)
    async with rt.db.acquire() as conn:
        # A merged customer's id lists the survivor's messages (made under either id).
        ids = await store.customer_ids(conn, customer_id) if customer_id is not None else None
        items = await store.listing(conn, ids, status, limit)
    # Subjects of customer messages are sealed: opened here, "[erased]" once the key is gone.
    items = await handlers.readable_listing(rt.keyring, items)
    body: dict[str, Any] = {"customer_id": ids[0] if ids else None, "status": status, "items": items}
    return JSONResponse(body)


@router.get("/v1/notifications/{notification_id}", summary="One notification", responses={404: {}})
async def get_notification(request: Request, notification_id: str) -> Response:
    try:
        uuid.UUID(notification_id)
    except ValueError as exc:
        raise ApiError(404, "not_found", f"no notification {notification_id}") from exc
    rt = runtime(request)
    async with rt.db.acquire() as conn:
        found = await store.one(conn, notification_id)
    if found is None:
        raise ApiError(404, "not_found", f"no notification {notification_id}")
    [readable] = await handlers.readable_listing(rt.keyring, [found])
    return JSONResponse(readable)
