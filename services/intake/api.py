"""Intake's HTTP routes: validate, call a handler, map domain errors to 4xx."""

import base64
import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from eventkit.eventstore import EventTooLarge
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.config import JsonDict
from servicekit.app import runtime
from servicekit.auth import Caller, require, require_channels
from servicekit.http import ApiError, OrjsonResponse
from servicekit.inputs import JsonLimits, JsonTooComplex, Rfc3339, SafeLine, SafeText, check_json_tree, unsafe_reason

from contracts.events import Channel, ConsentPurpose, Direction, InteractionKind, Preferences
from intake import domain, handlers, store
from intake.errors import invalid as _invalid
from intake.settings import IntakeSettings
from intake.vault import vault_of

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


class IdentifierOut(BaseModel):
    kind: str = Field(description="email, phone or external")
    value: str | None = Field(description='"[erased]" once the customer is erased')
    channel: str | None


class CustomerIdentifierOut(IdentifierOut):
    trust: str = Field(description="claimed (a channel key said so) or verified; see docs/identity-trust.md")


class ConsentOut(BaseModel):
    purpose: str
    channel: str | None = Field(description="None: every channel")
    granted: bool
    updated_at: str


class CustomerOut(BaseModel):
    customer_id: str
    created_at: str
    erased_at: str | None
    name: str | None
    identifiers: list[CustomerIdentifierOut]
    merged_ids: list[str] = Field(description="Customers merged into this one")
    preferences: Preferences
    consent: list[ConsentOut]


class CustomersOut(BaseModel):
    items: list[CustomerOut]


class DataKeysOut(BaseModel):
    keys: dict[str, str] = Field(description="customer id -> base64 data key")
    erased: list[str] = Field(description="ids whose key was destroyed (erased customers)")


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
) -> handlers.Item:
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
        return handlers.Item(cmd, "")
    digest = hashlib.sha256(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return handlers.Item(cmd, digest, f"client:{body.channel}:{body.client_event_id}")


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


def group_commit(request: Request) -> handlers.GroupCommit:
    """The service's one GroupCommit, made on first use (the pool exists only once started)."""
    state = request.app.state
    committer: handlers.GroupCommit | None = getattr(state, "group_commit", None)
    if committer is None:
        rt = runtime(request)
        settings: IntakeSettings = rt.settings  # type: ignore[assignment]
        committer = state.group_commit = handlers.GroupCommit(
            rt.db, rt.store, vault_of(rt), settings.source, in_flight=settings.write_transactions
        )
    return committer


async def _record(
    request: Request, items: list[handlers.Item], request_key: tuple[str, str] | None
) -> list[dict[str, Any]]:
    batch = len(items) > 1 or request.url.path.endswith(":batch")
    try:
        return await group_commit(request).record(items, request_key)
    except EventTooLarge as exc:
        exc.index = exc.index if batch else None
        raise
    except handlers.ItemErrors as exc:
        raise ApiError(
            422,
            "validation_failed",
            "some items are not valid; nothing was recorded" if batch else str(exc.errors[0][1]),
            errors=[{**({"index": i} if batch else {}), "field": e.field, "reason": e.reason} for i, e in exc.errors],
        ) from exc
    except handlers.IdempotencyConflict as exc:
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
    body: InteractionIn,
    principal: Caller,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    require_channels(principal, {body.channel})
    settings: IntakeSettings = runtime(request).settings  # type: ignore[assignment]
    try:
        item = _to_item(
            body,
            settings.phone_default_region,
            metadata_limits(settings),
            principal.allows(VERIFY_SCOPE),
            settings.identity_hmac_secrets,
        )
    except domain.InvalidInput as exc:
        raise _invalid(exc) from exc
    request_key = _request_key(idempotency_key, body.model_dump(mode="json")) if idempotency_key is not None else None
    answers = await _record(request, [item], request_key)
    return OrjsonResponse(answers[0], status_code=202)


@router.post(
    "/v1/interactions:batch",
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
    rt = runtime(request)
    settings: IntakeSettings = rt.settings  # type: ignore[assignment]
    limits = metadata_limits(settings)
    verified = principal.allows(VERIFY_SCOPE)
    valid: list[tuple[int, handlers.Item]] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(body.items):
        await handlers.give_way(index)
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
            for index, e in await handlers.item_errors(rt.db, vault_of(rt), valid)
        )
        errors.sort(key=lambda e: e["index"])  # stable: an item's own errors keep their order
        raise ApiError(422, "validation_failed", "some items are not valid; nothing was recorded", errors=errors)
    items = [item for _, item in valid]
    answers = await _record(request, items, _request_key(idempotency_key, body.items))
    return OrjsonResponse({"items": answers}, status_code=202)


# --- customers ---------------------------------------------------------------------------------


class ConsentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: ConsentPurpose
    channel: Channel | None = Field(default=None, description="None: every channel")
    granted: bool


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    consents: list[ConsentEntry] = Field(min_length=1, max_length=50)


class ChangedOut(BaseModel):
    customer_id: str
    event_ids: list[str] = Field(description="One event per actual change; empty when nothing changed")


def _moved(request: Request, merged_id: str, survivor_id: str) -> RedirectResponse:
    url = request.url.path.replace(f"/customers/{merged_id}", f"/customers/{survivor_id}", 1)
    return RedirectResponse(url + (f"?{request.url.query}" if request.url.query else ""), status_code=308)


async def _customer_call(request: Request, customer_id: str, call: Any) -> Response:
    try:
        return JSONResponse(await call)
    except handlers.CustomerNotFound as exc:
        raise ApiError(404, "customer_not_found", f"no customer {customer_id}") from exc
    except handlers.CustomerMoved as exc:
        return _moved(request, customer_id, exc.survivor_id)
    except domain.InvalidInput as exc:
        raise _invalid(exc) from exc


@router.get(
    "/v1/customers",
    tags=["customers"],
    summary="Find customers by email, phone, name or the start of their id",
    dependencies=[require("agent")],
    responses={200: {"model": CustomersOut}},
)
async def find_customers(
    request: Request,
    email: Annotated[str | None, Query(max_length=320)] = None,
    phone: Annotated[str | None, Query(max_length=40)] = None,
    name: Annotated[
        str | None,
        Query(max_length=200, description="whole words of the name, any case: `ada` or `ada lovelace`"),
    ] = None,
    q: Annotated[str | None, Query(min_length=4, max_length=64, description="a customer id or its start")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> Response:
    settings: IntakeSettings = runtime(request).settings  # type: ignore[assignment]
    idents: list[domain.Ident] = []
    try:
        if email:
            idents.append(domain.normalise_email(email, "query.email"))
        if phone:
            idents.append(domain.normalise_phone(phone, settings.phone_default_region, "query.phone"))
    except domain.InvalidInput as exc:
        raise _invalid(exc) from exc
    words = domain.name_tokens(name or "")
    if name and not words:
        raise ApiError(422, "validation_failed", "the name has no words to search for",
                       errors=[{"field": "query.name", "reason": "give at least one letter or digit"}])  # fmt: skip
    if not idents and not q and not words:
        raise ApiError(422, "validation_failed", "give email, phone, name or q",
                       errors=[{"field": "query", "reason": "give email, phone, name or q"}])  # fmt: skip
    rt = runtime(request)
    async with rt.db.acquire() as conn:
        ids = await store.find_customers(conn, vault_of(rt), idents, q, limit, words)
    return JSONResponse({"items": [await handlers.get_customer(rt.db, vault_of(rt), cid) for cid in ids]})


@router.get(
    "/v1/customers/{customer_id}",
    tags=["customers"],
    summary="Identifiers, preferences and consent",
    dependencies=[require("agent")],
    responses={200: {"model": CustomerOut}, **MERGED, **NOT_FOUND},
)
async def get_customer(request: Request, customer_id: str) -> Response:
    rt = runtime(request)
    return await _customer_call(request, customer_id, handlers.get_customer(rt.db, vault_of(rt), customer_id))


async def _changed(customer_id: str, call: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "event_ids": await call}


@router.put(
    "/v1/customers/{customer_id}/consent",
    tags=["customers"],
    response_model=ChangedOut,
    summary="Grant or withdraw consent per purpose and channel",
    dependencies=[require("agent")],
    responses={**MERGED, **NOT_FOUND},
)
async def put_consent(request: Request, customer_id: str, body: ConsentIn) -> Response:
    rt = runtime(request)
    wanted: dict[tuple[str, str | None], bool] = {(c.purpose, c.channel): c.granted for c in body.consents}
    call = handlers.change_consent(rt.db, rt.store, rt.settings.source, customer_id, wanted)
    return await _customer_call(request, customer_id, _changed(customer_id, call))


@router.put(
    "/v1/customers/{customer_id}/preferences",
    tags=["customers"],
    response_model=ChangedOut,
    summary="Preferred channel, language, quiet hours, VIP flag, region (the whole set)",
    dependencies=[require("agent")],
    responses={**MERGED, **NOT_FOUND},
)
async def put_preferences(request: Request, customer_id: str, body: Preferences) -> Response:
    rt = runtime(request)
    call = handlers.change_preferences(rt.db, rt.store, rt.settings.source, customer_id, body)
    return await _customer_call(request, customer_id, _changed(customer_id, call))


class ProfileIn(BaseModel):
    """The whole profile: a field left out or null is cleared."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(
        default=None,
        max_length=1000,
        description=f"Display name, up to {domain.MAX_NAME_CHARS} characters once white space is tidied;"
        " personal data: sealed, erased with the customer",
        examples=["Ada Lovelace"],
    )


@router.put(
    "/v1/customers/{customer_id}/profile",
    tags=["customers"],
    response_model=ChangedOut,
    summary="Display name (the whole profile); findable with GET /v1/customers?name=",
    responses={**ERASED, **MERGED, **NOT_FOUND},
    dependencies=[require("agent")],
)
async def put_profile(request: Request, customer_id: str, body: ProfileIn) -> Response:
    rt = runtime(request)
    try:
        name = domain.normalise_name(body.name, "body.name")
    except domain.InvalidInput as exc:
        raise _invalid(exc) from exc
    call = handlers.change_profile(rt.db, rt.store, vault_of(rt), rt.settings.source, customer_id, name)
    return await _customer_call(request, customer_id, _changed(customer_id, call))


# --- the data key vault, for the other services (docs/product.md §9) ------------------------------------------


class DataKeysIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_ids: list[Annotated[SafeLine, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=1000)
    create: bool = Field(default=False, description="make a key for an id that has none yet (to seal new data)")


@router.post(
    "/internal/v1/data-keys:lookup",
    tags=["internal"],
    summary="Customers' data keys, for services that seal or read personal data (scope keys)",
    dependencies=[require("keys")],
    responses={200: {"model": DataKeysOut}},
)
async def lookup_data_keys(request: Request, body: DataKeysIn) -> Response:
    rt = runtime(request)
    async with rt.db.acquire() as conn:
        keys, erased = await vault_of(rt).keys(conn, body.customer_ids, body.create)
    return JSONResponse(
        {"keys": {cid: base64.b64encode(k).decode() for cid, k in keys.items()}, "erased": sorted(erased)},
        headers={"Cache-Control": "no-store"},
    )


# --- identity trust: agents verify identifiers and decide merge suggestions (docs/product.md §14) --------------


class IdentifiersIn(BaseModel):
    """Identifiers of the customer to confirm as theirs (each must already be linked to them)."""

    model_config = ConfigDict(extra="forbid")
    email: str | None = Field(default=None, min_length=3, max_length=320)
    phone: str | None = Field(default=None, min_length=3, max_length=40, description="E.164 or national")
    external: list[ExternalId] = Field(default_factory=list, max_length=10)


@router.post(
    "/v1/customers/{customer_id}/identifiers:verify",
    tags=["customers"],
    response_model=ChangedOut,
    summary="An agent confirms claimed identifiers of the customer: they become verified",
    dependencies=[require("agent")],
    responses={404: {"description": "customer_not_found or identifier_not_found"}, **ERASED, **MERGED},
)
async def verify_identifiers(request: Request, customer_id: str, body: IdentifiersIn) -> Response:
    rt = runtime(request)
    settings: IntakeSettings = rt.settings  # type: ignore[assignment]
    idents: list[domain.Ident] = []
    try:
        if body.email is not None:
            idents.append(domain.normalise_email(body.email, "body.email"))
        if body.phone is not None:
            idents.append(domain.normalise_phone(body.phone, settings.phone_default_region, "body.phone"))
        for n, ext in enumerate(body.external):
            idents.append(domain.normalise_external(ext.channel, ext.id, f"body.external.{n}.id"))
    except domain.InvalidInput as exc:
        raise _invalid(exc) from exc
    if not idents:
        raise ApiError(422, "validation_failed", "give email, phone or external",
                       errors=[{"field": "body", "reason": "give at least one identifier"}])  # fmt: skip
    call = handlers.verify_identifiers(rt.db, rt.store, vault_of(rt), settings.source, customer_id, idents)
    try:
        return await _customer_call(request, customer_id, _changed(customer_id, call))
    except handlers.IdentifierNotFound as exc:
        fields = [*(["body.email"] if body.email else []), *(["body.phone"] if body.phone else []),
                  *(f"body.external.{n}.id" for n in range(len(body.external)))]  # fmt: skip
        raise ApiError(
            404, "identifier_not_found", "this identifier is not one of the customer's",
            errors=[{"field": fields[exc.index], "reason": "not linked to this customer"}],
        ) from exc  # fmt: skip


class SuggestionOut(BaseModel):
    suggestion_id: str
    survivor_id: str = Field(description="Who survives if accepted (the older record, when suggested)")
    merged_id: str
    linked_by: IdentifierOut = Field(description="The claimed identifier that named the other customer")
    status: Literal["pending", "accepted", "rejected"]
    created_at: str
    decided_at: str | None
    decided_by: str | None = Field(description="Key id of the agent who decided")


class SuggestionsOut(BaseModel):
    items: list[SuggestionOut]


class DecisionOut(BaseModel):
    suggestion_id: str
    status: Literal["accepted", "rejected"]
    survivor_id: str = Field(description="After an acceptance, the one customer both ids now answer for")
    merged_id: str
    event_ids: list[str]


@router.get(
    "/v1/merge-suggestions",
    tags=["customers"],
    response_model=SuggestionsOut,
    summary="Merges that claims suggested, newest first, for an agent to accept or reject",
    dependencies=[require("agent")],
)
async def list_merge_suggestions(
    request: Request,
    status: Annotated[Literal["pending", "accepted", "rejected"] | None, Query()] = "pending",
    customer_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    rt = runtime(request)
    items = await handlers.list_suggestions(rt.db, vault_of(rt), status, customer_id, limit)
    return JSONResponse({"items": items})


async def _decide(request: Request, suggestion_id: str, accept: bool, principal: Any) -> Response:
    rt = runtime(request)
    try:
        out = await handlers.decide_suggestion(
            rt.db, rt.store, vault_of(rt), rt.settings.source, suggestion_id, accept, principal.key_id
        )
    except handlers.SuggestionNotFound as exc:
        raise ApiError(404, "suggestion_not_found", f"no merge suggestion {suggestion_id}") from exc
    except handlers.SuggestionDecided as exc:
        raise ApiError(409, "suggestion_decided", f"this suggestion was {exc.status} already",
                       decided=exc.status) from exc  # fmt: skip
    return JSONResponse(out)


DECIDE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "suggestion_not_found"},
    409: {"description": "suggestion_decided: accepted or rejected already"},
    **ERASED,
}


@router.post(
    "/v1/merge-suggestions/{suggestion_id}:accept",
    tags=["customers"],
    response_model=DecisionOut,
    summary="Merge the two customers (crm.customer.merged.v1, the older survives)",
    dependencies=[require("agent")],
    responses=DECIDE_RESPONSES,
)
async def accept_merge_suggestion(request: Request, suggestion_id: str, principal: Caller) -> Response:
    return await _decide(request, suggestion_id, True, principal)


@router.post(
    "/v1/merge-suggestions/{suggestion_id}:reject",
    tags=["customers"],
    response_model=DecisionOut,
    summary="Keep the two customers apart; the pair is not suggested again",
    dependencies=[require("agent")],
    responses=DECIDE_RESPONSES,
)
async def reject_merge_suggestion(request: Request, suggestion_id: str, principal: Caller) -> Response:
    return await _decide(request, suggestion_id, False, principal)
