"""Intake's HTTP routes: validate, call a handler, map domain errors to 4xx."""

from typing import Annotated, Any

from eventkit.app import runtime
from eventkit.http import ApiError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from contracts.events import Channel, Direction, InteractionKind
from intake import domain, handlers

router = APIRouter(tags=["interactions"])


class CustomerRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, min_length=1, max_length=64)
    email: str | None = Field(default=None, min_length=3, max_length=320)

    @model_validator(mode="after")
    def _one_reference(self) -> "CustomerRef":
        if (self.id is None) == (self.email is None):
            raise ValueError("give exactly one of id or email")
        return self


class InteractionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer: CustomerRef
    channel: Channel
    direction: Direction
    kind: InteractionKind
    occurred_at: AwareDatetime
    content: Annotated[str | None, Field(max_length=10_000)] = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AcceptedOut(BaseModel):
    event_id: str = Field(description="The interaction's event id; pass it as wait_for to any timeline.")
    customer_id: str
    event_ids: list[str] = Field(description="Every event this request stored, in order.")


@router.post(
    "/v1/interactions",
    status_code=202,
    response_model=AcceptedOut,
    summary="Record one interaction",
    responses={400: {"description": "malformed JSON"}, 422: {"description": "invalid field"}},
)
async def post_interaction(request: Request, body: InteractionIn) -> Any:
    rt = runtime(request)
    cmd = domain.RecordInteraction(
        customer_id=body.customer.id,
        email=body.customer.email,
        channel=body.channel,
        direction=body.direction,
        kind=body.kind,
        occurred_at=body.occurred_at,
        content=body.content,
        metadata=body.metadata,
    )
    try:
        accepted = await handlers.record_interaction(rt.db, rt.store, rt.settings.source, cmd)
    except domain.InvalidInput as exc:
        raise ApiError(
            422, "validation_failed", str(exc), errors=[{"field": exc.field, "reason": exc.reason}]
        ) from exc
    return JSONResponse(
        {"event_id": accepted.event_id, "customer_id": accepted.customer_id, "event_ids": accepted.event_ids},
        status_code=202,
    )
