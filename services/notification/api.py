"""notification's HTTP routes for agents and ops: what was decided and delivered, and why."""

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from servicekit.auth import require
from servicekit.http import ApiError

from notification import handlers, privacy, store
from notification.deps import NotificationRuntime

router = APIRouter(tags=["notifications"], dependencies=[require("agent", "ops")])

Status = Literal["pending", "scheduled", "retrying", "sending", "sent", "delivered", "failed", "suppressed", "digested"]


class NotificationOut(BaseModel):
    notification_id: str
    rule: str
    customer_id: str
    audience: str = Field(description="customer, or staff (an agent or team lead)")
    recipient: str | None
    channel: str | None
    purpose: str
    critical: bool
    language: str | None
    subject: str | None = Field(description='"[erased]" once the customer is erased')
    status: Status
    reason: str | None
    attempts: int
    source_event_id: str
    source_event_type: str
    deliver_at: str | None
    next_attempt_at: str | None
    created_at: str
    updated_at: str | None
    sent_at: str | None
    digest_id: str | None
    dead_letter_reason: str | None = Field(default=None, description="Listings only: why it was dead-lettered")


class NotificationsOut(BaseModel):
    customer_id: str | None = Field(description="The survivor's id for a merged customer")
    status: Status | None
    items: list[NotificationOut]


class ContactOut(BaseModel):
    kind: str = Field(description="email, phone, ...")
    value: str | None = Field(description="null once the customer is erased")
    added_at: str


class ConsentOut(BaseModel):
    purpose: str
    channel: str = Field(description='"*": every channel')
    granted: bool


class CustomerNotificationsOut(BaseModel):
    customer_id: str
    customer_ids: list[str] = Field(description="The customer and every id merged into it")
    contacts: list[ContactOut]
    consent: list[ConsentOut]
    preferences: dict[str, Any] = Field(description="As intake's PUT /v1/customers/{customer_id}/preferences")
    items: list[dict[str, Any]] = Field(description="Every message, opened, with its source event's data")


@router.get(
    "/v1/notifications",
    operation_id="listNotifications",
    summary="Notifications, newest first, by customer and/or status",
    responses={200: {"model": NotificationsOut}},
)
async def list_notifications(
    rt: NotificationRuntime,
    customer_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    async with rt.db.acquire() as conn:
        # A merged customer's id lists the survivor's messages (made under either id).
        ids = await store.customer_ids(conn, customer_id) if customer_id is not None else None
        items = await store.listing(conn, ids, status, limit)
    # Subjects of customer messages are sealed: opened here, "[erased]" once the key is gone.
    items = await handlers.readable_listing(rt.keyring, items)
    body: dict[str, Any] = {"customer_id": ids[0] if ids else None, "status": status, "items": items}
    return JSONResponse(body)


@router.get(
    "/v1/notifications/{notification_id}",
    operation_id="getNotification",
    summary="One notification",
    responses={200: {"model": NotificationOut}, 404: {"description": "not_found"}},
)
async def get_notification(rt: NotificationRuntime, notification_id: str) -> Response:
    try:
        uuid.UUID(notification_id)
    except ValueError as exc:
        raise ApiError(404, "not_found", f"no notification {notification_id}") from exc
    async with rt.db.acquire() as conn:
        found = await store.one(conn, notification_id)
    if found is None:
        raise ApiError(404, "not_found", f"no notification {notification_id}")
    [readable] = await handlers.readable_listing(rt.keyring, [found])
    return JSONResponse(readable)


@router.get(
    "/v1/admin/customers/{customer_id}/notifications",
    operation_id="exportCustomerNotifications",
    tags=["admin"],
    summary="Everything notification holds about a customer, opened (for intake's export)",
    dependencies=[require("admin")],
    responses={200: {"model": CustomerNotificationsOut}},
)
async def export_customer(rt: NotificationRuntime, customer_id: Annotated[str, Path(max_length=64)]) -> Response:
    """Addresses, consent, preferences and every message (address, subject, body, source event
    data) of the customer and the ids merged into it; "[erased]" or no address once erased."""
    async with rt.db.acquire() as conn:
        ids = await store.customer_ids(conn, customer_id)
        profile, contacts = await store.profile(conn, ids)
        rows = await store.of_customers(conn, ids)
    owners = {c.owner for c in contacts if c.owner} | {r.sealed_by for r in rows if r.sealed_by}
    keys = await rt.keyring.keys(owners) if owners else {}
    datas = await rt.keyring.unseal([r.data for r in rows])
    messages = []
    for row, data in zip(rows, datas, strict=True):
        item = {k: v for k, v in vars(row).items() if k not in ("data", "sealed_by")}
        for column in ("address", "subject", "body"):
            item[column] = privacy.open_column(getattr(row, column), row.sealed_by, column, keys)
        if row.audience != "customer":
            item["address"] = None  # a staff member's address is not the customer's data
        messages.append({**item, "created_at": row.created_at.isoformat(), "data": data})
    body = {
        "customer_id": ids[0],
        "customer_ids": ids,
        "contacts": [
            {"kind": c.kind, "value": privacy.open_contact(c.value, c.owner, keys), "added_at": c.added_at.isoformat()}
            for c in contacts
        ],
        "consent": [
            {"purpose": purpose, "channel": channel, "granted": granted}
            for (purpose, channel), granted in profile.consent.items()
        ],
        "preferences": profile.preferences.model_dump(mode="json"),
        "items": messages,
    }
    return JSONResponse(body)
