"""notification's campaign routes: create, list, read, pause/resume/cancel (docs/campaigns.md)."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit.auth import Caller, require
from servicekit.http import ApiError, decode_cursor

from contracts import notification as n
from notification import campaign_handlers, campaign_store, campaigns
from notification.deps import NotificationRuntime

router = APIRouter(tags=["campaigns"])
CampaignId = Annotated[str, Path(pattern=n.CAMPAIGN_ID_PATTERN)]


class AudienceIn(n.CampaignAudience):
    model_config = ConfigDict(extra="forbid", frozen=True)  # an unknown filter is a mistake, not ignored


class TemplateIn(n.CampaignTemplate):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    campaign_id: str | None = Field(
        default=None,
        pattern=n.CAMPAIGN_ID_PATTERN,
        description="Yours, to retry safely: the same id and body is the same campaign; another body is 409",
    )
    name: str = Field(min_length=1, max_length=200)
    audience: AudienceIn = Field(description="Every filter given must match")
    purpose: n.Purpose
    templates: dict[Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")], TemplateIn] = Field(
        description="Per language: {subject, body}; placeholders {campaign_id}, {campaign_name}, {customer_id}"
    )
    send_at: datetime | None = Field(default=None, description="When it is due (RFC 3339); now when not given")


class CountsOut(BaseModel):
    scheduled: int
    sent: int = Field(description="Went out (delivered ones included)")
    delivered: int
    failed: int
    suppressed: dict[str, int] = Field(description="By reason: no_consent, blocked_channel, cap, no_address...")
    pending: int = Field(description="Targets not decided yet")


class CampaignOut(BaseModel):
    campaign_id: str
    name: str
    status: n.CampaignStatus
    reason: str | None
    purpose: n.Purpose
    audience: dict[str, Any]
    templates: dict[str, Any]
    send_at: str
    created_by: str
    created_at: str
    updated_at: str
    audience_size: int | None = Field(description="null until analytics resolved the audience")
    counts: CountsOut


class CampaignsOut(BaseModel):
    campaigns: list[CampaignOut]
    next_before: str | None = Field(description="Pass as before for the next page; null on the last one")


class IllegalTransitionOut(BaseModel):
    error: str
    message: str
    current: n.CampaignStatus = Field(description="The campaign's status now")
    allowed: list[str] = Field(description="The actions its status allows")


async def _out(conn: Any, c: dict[str, Any]) -> dict[str, Any]:
    rows = await campaign_store.message_counts(conn, c["campaign_id"])
    pending = await campaign_store.pending(conn, c["campaign_id"])
    return {
        "campaign_id": c["campaign_id"],
        "name": c["name"],
        "status": c["status"],
        "reason": c["reason"],
        "purpose": c["purpose"],
        "audience": c["audience"],
        "templates": c["templates"],
        "send_at": c["send_at"].isoformat(),
        "created_by": c["created_by"],
        "created_at": c["created_at"].isoformat(),
        "updated_at": c["updated_at"].isoformat(),
        "audience_size": c["audience_size"],
        "counts": campaigns.counts(rows, pending).out(),
    }


@router.post(
    "/v1/campaigns",
    operation_id="createCampaign",
    summary="Create a campaign (scope campaigns)",
    dependencies=[require("campaigns")],
    status_code=201,
    responses={
        201: {"model": CampaignOut},
        200: {"model": CampaignOut, "description": "a retry of the same campaign"},
        409: {"description": "conflict: the campaign_id is taken by another campaign"},
        422: {"description": "validation_failed, with the field and reason"},
    },
)
async def create_campaign(rt: NotificationRuntime, caller: Caller, body: CampaignIn) -> Response:
    now = rt.context.clock()
    errors = campaigns.validate(body.audience, body.templates, body.send_at, now, rt.context.book.default_language)
    if errors:
        raise ApiError(
            422,
            "validation_failed",
            "; ".join(f"{f}: {r}" for f, r in errors),
            errors=[{"field": f, "reason": r} for f, r in errors],
        )
    request = body.model_dump(mode="json", exclude={"campaign_id"})
    campaign_id = body.campaign_id or str(uuid.uuid4())
    c = {
        "campaign_id": campaign_id,
        "name": body.name,
        "request": request,
        "audience": body.audience.model_dump(mode="json", exclude_none=True),
        "purpose": body.purpose,
        "templates": {lang: t.model_dump(mode="json") for lang, t in body.templates.items()},
        "send_at": body.send_at or now,
        "created_by": caller.key_id,
        "status": "scheduled",
        "created_at": now,
    }
    async with rt.db.acquire() as conn, conn.transaction():
        made, found = await campaign_handlers.create(conn, rt.context, c)
        if not made and found["request"] != request:
            raise ApiError(409, "conflict", f"campaign {campaign_id} exists with another body", campaign_id=campaign_id)
        out = await _out(conn, found)
    return JSONResponse(out, status_code=201 if made else 200)


@router.get(
    "/v1/campaigns",
    operation_id="listCampaigns",
    summary="Campaigns, newest first, in keyset pages",
    dependencies=[require("campaigns", "agent", "ops")],
    responses={200: {"model": CampaignsOut}},
)
async def list_campaigns(
    rt: NotificationRuntime,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(description="next_before of the previous page")] = None,
) -> Response:
    cursor = decode_cursor(campaign_store.Cursor.decode, before)
    async with rt.db.acquire() as conn:
        page, following = await campaign_store.listing(conn, limit, cursor)
        items = [await _out(conn, c) for c in page]
    return JSONResponse({"campaigns": items, "next_before": following.encode() if following else None})


@router.get(
    "/v1/campaigns/{campaign_id}",
    operation_id="getCampaign",
    summary="One campaign: status, audience size and counts of its messages' decisions",
    dependencies=[require("campaigns", "agent", "ops")],
    responses={200: {"model": CampaignOut}, 404: {"description": "not_found"}},
)
async def get_campaign(rt: NotificationRuntime, campaign_id: CampaignId) -> Response:
    async with rt.db.acquire() as conn:
        found = await campaign_store.get(conn, campaign_id)
        if found is None:
            raise ApiError(404, "not_found", f"no campaign {campaign_id}")
        return JSONResponse(await _out(conn, found))


async def _change(rt: NotificationRuntime, campaign_id: str, action: str) -> Response:
    async with rt.db.acquire() as conn, conn.transaction():
        try:
            changed = await campaign_handlers.change(conn, rt.context, campaign_id, action)
        except KeyError as exc:
            raise ApiError(404, "not_found", f"no campaign {campaign_id}") from exc
        except campaigns.IllegalTransition as exc:
            raise ApiError(409, "illegal_transition", str(exc), current=exc.status, allowed=exc.allowed) from exc
        return JSONResponse(await _out(conn, changed))


_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": CampaignOut},
    404: {"description": "not_found"},
    409: {"model": IllegalTransitionOut, "description": "illegal_transition, with the actions allowed now"},
}


@router.post(
    "/v1/campaigns/{campaign_id}:pause",
    operation_id="pauseCampaign",
    summary="Pause: no more targets are decided until resumed (between batches)",
    dependencies=[require("campaigns")],
    responses=_CHANGE_RESPONSES,
)
async def pause_campaign(rt: NotificationRuntime, campaign_id: CampaignId) -> Response:
    return await _change(rt, campaign_id, "pause")


@router.post(
    "/v1/campaigns/{campaign_id}:resume",
    operation_id="resumeCampaign",
    summary="Resume a paused campaign",
    dependencies=[require("campaigns")],
    responses=_CHANGE_RESPONSES,
)
async def resume_campaign(rt: NotificationRuntime, campaign_id: CampaignId) -> Response:
    return await _change(rt, campaign_id, "resume")


@router.post(
    "/v1/campaigns/{campaign_id}:cancel",
    operation_id="cancelCampaign",
    summary="Cancel: targets not decided yet get no message",
    dependencies=[require("campaigns")],
    responses=_CHANGE_RESPONSES,
)
async def cancel_campaign(rt: NotificationRuntime, campaign_id: CampaignId) -> Response:
    return await _change(rt, campaign_id, "cancel")
