"""Intake's HTTP routes: validate, call a handler, map domain errors to 4xx."""

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from eventkit.eventstore import EventTooLarge
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.config import JsonDict
from servicekit.auth import Caller, require_channels
from servicekit.http import ApiError, OrjsonResponse
from servicekit.inputs import JsonLimits, JsonTooComplex, Rfc3339, SafeLine, SafeText, check_json_tree, unsafe_reason

from contracts.events import Channel, Direction, InteractionKind
from intake import domain, errors, recording
from intake.deps import IntakeRuntime, group_commit
from intake.settings import IntakeSettings

router = APIRouter()
MAX_BATCH = 1000
# Keys with this scope (and admin keys) verify the identifiers they give; others only claim them
# (docs/product.md §14, docs/identity-trust.md).
VERIFY_SCOPE = "identity:verify"


class ExternalId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Channel
    id: SafeLine = Field(min_length=1, max_length=200)


class CustomerRef(BaseModel):
    """Who it is: a known customer id, and/or identifiers (all of them are linked to the customer)."""

    model_config = ConfigDict(extra="forbid")
    id: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    email: str | None = Field(default=None, min_length=3, max_length=320)  # domain.normalise_email checks it
    phone: SafeLine | None = Field(default=None, min_length=3, max_length=40, description="E.164 or national")
    external: list[ExternalId] = Field(default_factory=list, max_length=10)
    identity_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="HMAC-SHA256 of this reference by the channel's back end: its identifiers are then"
        " verified, not claimed (docs/identity-trust.md)",
    )


EXAMPLE_INTERACTION: JsonDict = {  # in the OpenAPI document, for readers and for schemathesis
    "customer": {"email": "ana.garcia@example.com", "phone": "+34 612 345 678"},
    "channel": "chat",
    "direction": "inbound",
    "kind": "complaint",
    "occurred_at": "2026-11-30T09:15:00+01:00",
    "content": "My router has been dropping the connection since yesterday.",
    "metadata": {"chat_session": "c-20261130-0042"},
    "client_event_id": "chat-c-20261130-0042-1",
}


class InteractionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_INTERACTION]})
    customer: CustomerRef
    channel: Channel
    direction: Direction
    kind: InteractionKind
    occurred_at: Rfc3339 = Field(description="RFC 3339 with an offset; numbers are refused")
    content: SafeText | None = Field(default=None, description=f"Up to {domain.MAX_CONTENT_CHARS} characters")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form JSON; by default at most 8 levels deep, 256 keys in all, keys up to 128 characters",
    )
    client_event_id: SafeLine | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Retrying with the same id returns the first answer",
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"items": [
            {**EXAMPLE_INTERACTION, "client_event_id": "chat-c-20261130-0042-2"},
            {**EXAMPLE_INTERACTION, "channel": "email", "kind": "message", "client_event_id": "mail-8841"},
        ]}]},
    )  # fmt: skip
    items: list[dict[str, Any]] = Field(min_length=1, description=f"1 to {MAX_BATCH} interactions")


class AcceptedOut(BaseModel):
    event_id: str = Field(description="The interaction's event id; pass it as wait_for to any timeline.")
    customer_id: str = Field(description="The customer it was recorded for (the survivor after a merge).")
    event_ids: list[str] = Field(description="Every event this item stored, in order.")


class BatchOut(BaseModel):
    items: list[AcceptedOut]


# Where a customer's personal data is written: an erased customer gets no new personal data.
ERASED: dict[int | str, dict[str, Any]] = {410: {"description": "customer_erased: no new personal data is kept"}}
MERGED: dict[int | str, dict[str, Any]] = {308: {"description": "a merged customer: the same URL for the survivor"}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "customer_not_found"}}


_interaction = TypeAdapter(InteractionIn)


def metadata_limits(settings: IntakeSettings) -> JsonLimits:
    return JsonLimits(settings.metadata_max_depth, settings.metadata_max_keys, settings.metadata_max_key_chars)


def _to_item(
    body: InteractionIn,
    region: str,
    limits: JsonLimits,
    verified: bool = False,
    secrets: dict[str, str] | None = None,
) -> recording.Item:
    """`verified`: the caller's key may verify identities; without it the identifiers are claims,
    unless the channel's back end signed the reference (`secrets`: identity secret per channel)."""
    ref = body.customer
    idents: list[domain.Ident] = []
    if ref.email is not None:
        idents.append(domain.normalise_email(ref.email))
    if ref.phone is not None:
        idents.append(domain.normalise_phone(ref.phone, region))
    for n, ext in enumerate(ref.external):
        idents.append(domain.normalise_external(ext.channel, ext.id, f"customer.external.{n}.id"))
    if ref.identity_hash is not None:
        domain.check_identity_hash(secrets or {}, body.channel, ref.id, idents, ref.identity_hash)
        verified = True
    cmd = domain.RecordInteraction(
        channel=body.channel,
        direction=body.direction,
        kind=body.kind,
        occurred_at=body.occurred_at,
        customer_id=ref.id,
        identifiers=tuple(idents),
        content=body.content,
        metadata=body.metadata,
        verified=verified,
    )
    domain.check_interaction(cmd, datetime.now(UTC))
    try:
        check_json_tree(body.metadata, "metadata", limits)
    except JsonTooComplex as exc:
        raise domain.InvalidInput(exc.field, exc.reason) from exc
    if not body.client_event_id:  # nothing to match a retry against: no digest (a model dump less)
        return recording.Item(cmd, "")
    digest = hashlib.sha256(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return recording.Item(cmd, digest, f"client:{body.channel}:{body.client_event_id}")


def _request_key(idempotency_key: str | None, body: Any) -> tuple[str, str] | None:
    if idempotency_key is None:
        return None
    reason = "1 to 200 characters" if not 1 <= len(idempotency_key) <= 200 else unsafe_reason(idempotency_key)
    if reason is not None:
        raise ApiError(
            422,
            "validation_failed",
            f"Idempotency-Key: {reason}",
            errors=[{"field": "header.Idempotency-Key", "reason": reason}],
        )
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"request:{idempotency_key}", digest


async def _record(
    request: Request, rt: IntakeRuntime, items: list[recording.Item], request_key: tuple[str, str] | None
) -> list[dict[str, Any]]:
    batch = len(items) > 1 or request.url.path.endswith(":batch")
    try:
        return await group_commit(rt).record(items, request_key)
    except EventTooLarge as exc:
        exc.index = exc.index if batch else None
        raise
    except recording.ItemErrors as exc:
        raise ApiError(
            422,
            "validation_failed",
            "some items are not valid; nothing was recorded" if batch else str(exc.errors[0][1]),
            errors=[{**({"index": i} if batch else {}), "field": e.field, "reason": e.reason} for i, e in exc.errors],
        ) from exc
    except recording.IdempotencyConflict as exc:
        extra: dict[str, Any] = {"index": exc.index} if exc.index is not None else {}
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this key was first used with a different request; use a new key for a new request",
            **extra,
        ) from exc


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="A retry with the same key returns the first answer"),
]


@router.post(
    "/v1/interactions",
    operation_id="recordInteraction",
    tags=["interactions"],
    status_code=202,
    summary="Record one interaction",
    # Documented, not validated by FastAPI: the hot write path answers with orjson directly.
    responses={
        202: {"model": AcceptedOut},
        400: {"description": "malformed JSON"},
        409: {"description": "Idempotency-Key or client_event_id reused for a different request"},
        413: {"description": "content, body or the event it makes too large (event_too_large)"},
        **ERASED,
    },
)
async def post_interaction(
    request: Request,
    rt: IntakeRuntime,
    body: InteractionIn,
    principal: Caller,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    require_channels(principal, {body.channel})
    settings = rt.settings
    try:
        item = _to_item(
            body,
            settings.phone_default_region,
            metadata_limits(settings),
            principal.allows(VERIFY_SCOPE),
            settings.identity_hmac_secrets,
        )
    except domain.InvalidInput as exc:
        raise errors.invalid(exc) from exc
    request_key = _request_key(idempotency_key, body.model_dump(mode="json")) if idempotency_key is not None else None
    answers = await _record(request, rt, [item], request_key)
    return OrjsonResponse(answers[0], status_code=202)


@router.post(
    "/v1/interactions:batch",
    operation_id="recordInteractionBatch",
    tags=["interactions"],
    status_code=202,
    summary=f"Record up to {MAX_BATCH} interactions as one durable write (all or nothing)",
    responses={
        202: {"model": BatchOut},
        409: {"description": "Idempotency-Key or client_event_id reused for a different request (`index`)"},
        413: {"description": f"more than {MAX_BATCH} items, body too large, or an item's event too large (`index`)"},
        **ERASED,
    },
)
async def post_batch(
    request: Request,
    rt: IntakeRuntime,
    body: BatchIn,
    principal: Caller,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    if len(body.items) > MAX_BATCH:
        raise ApiError(
            413,
            "too_many_items",
            f"a batch holds at most {MAX_BATCH} items, this one has {len(body.items)}",
            errors=[{"field": "items", "reason": f"at most {MAX_BATCH} items"}],
        )
    settings = rt.settings
    limits = metadata_limits(settings)
    verified = principal.allows(VERIFY_SCOPE)
    valid: list[tuple[int, recording.Item]] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(body.items):
        await recording.give_way(index)
        try:
            item = _to_item(
                _interaction.validate_python(raw),
                settings.phone_default_region,
                limits,
                verified,
                settings.identity_hmac_secrets,
            )
            valid.append((index, item))
        except ValidationError as exc:
            errors.extend(
                {"index": index, "field": ".".join(map(str, e["loc"])), "reason": e["msg"]}
                for e in exc.errors(include_input=False)
            )
        except domain.InvalidInput as exc:
            errors.append({"index": index, "field": exc.field, "reason": exc.reason})
    # Before telling anything the database knows, the key must be allowed these channels.
    require_channels(principal, {item.cmd.channel for _, item in valid})
    if errors:
        # The batch is rejected anyway; the database's checks on the other items join the list,
        # so one answer names every bad item.
        errors.extend(
            {"index": index, "field": e.field, "reason": e.reason}
            for index, e in await recording.item_errors(rt.db, rt.context.vault, valid)
        )
        errors.sort(key=lambda e: e["index"])  # stable: an item's own errors keep their order
        raise ApiError(422, "validation_failed", "some items are not valid; nothing was recorded", errors=errors)
    items = [item for _, item in valid]
    answers = await _record(request, rt, items, _request_key(idempotency_key, body.items))
    return OrjsonResponse({"items": answers}, status_code=202)


# --- customers ---------------------------------------------------------------------------------
