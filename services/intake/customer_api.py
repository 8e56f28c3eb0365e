"""intake's customer routes: find and read customers, their consent, preferences and profile,
data keys for the other services, identifier verification and merge suggestions."""

import base64
from collections.abc import Awaitable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from servicekit.auth import Caller, require
from servicekit.http import ApiError, survivor_redirect
from servicekit.inputs import SafeLine

from contracts.events import Channel, ConsentPurpose, Preferences
from intake import domain, errors, handlers, store, suggestions
from intake.api import ERASED, MERGED, NOT_FOUND, ExternalId
from intake.deps import IntakeRuntime
from intake.field_filters import filtered_list
from intake.field_filters import filters_of as field_filters_of

router = APIRouter()


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
    fields: dict[str, Any] = Field(description='Typed fields by name; personal ones "[erased]" after erasure')
    tags: list[str] = Field(description="Tags, sorted")


class CustomersOut(BaseModel):
    items: list[CustomerOut]
    next_before: str | None = Field(
        default=None, description="With field./tag filters: pass as before for the next page; null on the last"
    )


class DataKeysOut(BaseModel):
    keys: dict[str, str] = Field(description="customer id -> base64 data key")
    erased: list[str] = Field(description="ids whose key was destroyed (erased customers)")


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


async def customer_call(request: Request, customer_id: str, call: Any, status: int = 200) -> Response:
    """The answer of a call about one customer: 404 if unknown, 308 to the survivor if merged."""
    try:
        return JSONResponse(await call, status)
    except handlers.CustomerNotFound as exc:
        raise ApiError(404, "customer_not_found", f"no customer {customer_id}") from exc
    except handlers.CustomerMoved as exc:
        return survivor_redirect(request, customer_id, exc.survivor_id)
    except domain.InvalidInput as exc:
        raise errors.invalid(exc) from exc


@router.get(
    "/v1/customers",
    operation_id="findCustomers",
    tags=["customers"],
    summary="Find customers by email, phone, name or the start of their id, or list them by fields and tags",
    description="Or list, in pages, the customers whose fields and tags match every filter:"
    " `field.<name>=<value>` (repeatable; not personal fields) and `tag=` (repeatable)."
    " See docs/customer-fields.md.",
    dependencies=[require("agent")],
    responses={200: {"model": CustomersOut}},
)
async def find_customers(
    request: Request,
    rt: IntakeRuntime,
    email: Annotated[str | None, Query(max_length=320)] = None,
    phone: Annotated[str | None, Query(max_length=40)] = None,
    name: Annotated[
        str | None,
        Query(max_length=200, description="whole words of the name, any case: `ada` or `ada lovelace`"),
    ] = None,
    q: Annotated[str | None, Query(min_length=4, max_length=64, description="a customer id or its start")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    tag: Annotated[list[str] | None, Query(max_length=200, description="has this tag (repeat: all of them)")] = None,
    before: Annotated[str | None, Query(max_length=200, description="next_before of the previous page")] = None,
) -> Response:
    if (field_filters := field_filters_of(request)) or tag:
        if email or phone or name or q:
            reason = "field./tag filters do not combine with email, phone, name or q"
            raise ApiError(422, "validation_failed", reason, errors=[{"field": "query", "reason": reason}])
        return await filtered_list(rt, field_filters, tag or [], limit, before)
    settings = rt.settings
    idents: list[domain.Ident] = []
    try:
        if email:
            idents.append(domain.normalise_email(email, "query.email"))
        if phone:
            idents.append(domain.normalise_phone(phone, settings.phone_default_region, "query.phone"))
    except domain.InvalidInput as exc:
        raise errors.invalid(exc) from exc
    words = domain.name_tokens(name or "")
    if name and not words:
        raise ApiError(422, "validation_failed", "the name has no words to search for",
                       errors=[{"field": "query.name", "reason": "give at least one letter or digit"}])  # fmt: skip
    if not idents and not q and not words:
        raise ApiError(422, "validation_failed", "give email, phone, name or q",
                       errors=[{"field": "query", "reason": "give email, phone, name or q"}])  # fmt: skip
    async with rt.db.acquire() as conn:
        ids = await store.find_customers(conn, rt.context.vault, idents, q, limit, words)
    return JSONResponse({"items": [await handlers.get_customer(rt.db, rt.context.vault, cid) for cid in ids]})


@router.get(
    "/v1/customers/{customer_id}",
    operation_id="getCustomer",
    tags=["customers"],
    summary="Identifiers, preferences and consent",
    dependencies=[require("agent")],
    responses={200: {"model": CustomerOut}, **MERGED, **NOT_FOUND},
)
async def get_customer(request: Request, rt: IntakeRuntime, customer_id: str) -> Response:
    return await customer_call(request, customer_id, handlers.get_customer(rt.db, rt.context.vault, customer_id))


async def customer_change(request: Request, customer_id: str, call: Awaitable[list[str]]) -> Response:
    """customer_call for a change: the answer names the events it stored (ChangedOut)."""

    async def changed() -> dict[str, Any]:
        return {"customer_id": customer_id, "event_ids": await call}

    return await customer_call(request, customer_id, changed())


# What the routes that change one customer share.
CHANGE: dict[str, Any] = {"tags": ["customers"], "response_model": ChangedOut, "dependencies": [require("agent")]}


@router.put(
    "/v1/customers/{customer_id}/consent",
    operation_id="setConsent",
    summary="Grant or withdraw consent per purpose and channel",
    responses={**MERGED, **NOT_FOUND},
    **CHANGE,
)
async def put_consent(request: Request, rt: IntakeRuntime, customer_id: str, body: ConsentIn) -> Response:
    wanted: dict[tuple[str, str | None], bool] = {(c.purpose, c.channel): c.granted for c in body.consents}
    call = handlers.change_consent(rt.db, rt.events, rt.settings.source, customer_id, wanted)
    return await customer_change(request, customer_id, call)


@router.put(
    "/v1/customers/{customer_id}/preferences",
    operation_id="setPreferences",
    summary="Preferred channel, language, quiet hours, VIP flag, region (the whole set)",
    responses={**MERGED, **NOT_FOUND},
    **CHANGE,
)
async def put_preferences(request: Request, rt: IntakeRuntime, customer_id: str, body: Preferences) -> Response:
    call = handlers.change_preferences(rt.db, rt.events, rt.settings.source, customer_id, body)
    return await customer_change(request, customer_id, call)


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
    operation_id="setProfile",
    summary="Display name (the whole profile); findable with GET /v1/customers?name=",
    responses={**ERASED, **MERGED, **NOT_FOUND},
    **CHANGE,
)
async def put_profile(request: Request, rt: IntakeRuntime, customer_id: str, body: ProfileIn) -> Response:
    try:
        name = domain.normalise_name(body.name, "body.name")
    except domain.InvalidInput as exc:
        raise errors.invalid(exc) from exc
    call = handlers.change_profile(rt.db, rt.events, rt.context.vault, rt.settings.source, customer_id, name)
    return await customer_change(request, customer_id, call)


# --- the data key vault, for the other services (docs/product.md §9) ------------------------------------------


class DataKeysIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_ids: list[Annotated[SafeLine, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=1000)
    create: bool = Field(default=False, description="make a key for an id that has none yet (to seal new data)")


@router.post(
    "/internal/v1/data-keys:lookup",
    operation_id="lookupDataKeys",
    tags=["internal"],
    summary="Customers' data keys, for services that seal or read personal data (scope keys)",
    dependencies=[require("keys")],
    responses={200: {"model": DataKeysOut}},
)
async def lookup_data_keys(rt: IntakeRuntime, body: DataKeysIn) -> Response:
    async with rt.db.acquire() as conn:
        keys, erased = await rt.context.vault.keys(conn, body.customer_ids, body.create)
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
    operation_id="verifyIdentifiers",
    summary="An agent confirms claimed identifiers of the customer: they become verified",
    responses={404: {"description": "customer_not_found or identifier_not_found"}, **ERASED, **MERGED},
    **CHANGE,
)
async def verify_identifiers(request: Request, rt: IntakeRuntime, customer_id: str, body: IdentifiersIn) -> Response:
    settings = rt.settings
    idents: list[domain.Ident] = []
    try:
        if body.email is not None:
            idents.append(domain.normalise_email(body.email, "body.email"))
        if body.phone is not None:
            idents.append(domain.normalise_phone(body.phone, settings.phone_default_region, "body.phone"))
        for n, ext in enumerate(body.external):
            idents.append(domain.normalise_external(ext.channel, ext.id, f"body.external.{n}.id"))
    except domain.InvalidInput as exc:
        raise errors.invalid(exc) from exc
    if not idents:
        raise ApiError(422, "validation_failed", "give email, phone or external",
                       errors=[{"field": "body", "reason": "give at least one identifier"}])  # fmt: skip
    call = handlers.verify_identifiers(rt.db, rt.events, rt.context.vault, settings.source, customer_id, idents)
    try:
        return await customer_change(request, customer_id, call)
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
    operation_id="listMergeSuggestions",
    tags=["customers"],
    response_model=SuggestionsOut,
    summary="Merges that claims suggested, newest first, for an agent to accept or reject",
    dependencies=[require("agent")],
)
async def list_merge_suggestions(
    rt: IntakeRuntime,
    status: Annotated[Literal["pending", "accepted", "rejected"] | None, Query()] = "pending",
    customer_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    items = await suggestions.list_suggestions(rt.db, rt.context.vault, status, customer_id, limit)
    return JSONResponse({"items": items})


async def _decide(rt: IntakeRuntime, suggestion_id: str, accept: bool, principal: Any) -> Response:
    try:
        out = await suggestions.decide_suggestion(
            rt.db, rt.events, rt.context.vault, rt.settings.source, suggestion_id, accept, principal.key_id
        )
    except suggestions.SuggestionNotFound as exc:
        raise ApiError(404, "suggestion_not_found", f"no merge suggestion {suggestion_id}") from exc
    except suggestions.SuggestionDecided as exc:
        raise ApiError(409, "suggestion_decided", f"this suggestion was {exc.status} already",
                       decided=exc.status) from exc  # fmt: skip
    return JSONResponse(out)


# What accepting and rejecting share.
DECISION: dict[str, Any] = {
    "tags": ["customers"],
    "response_model": DecisionOut,
    "dependencies": [require("agent")],
    "responses": {
        404: {"description": "suggestion_not_found"},
        409: {"description": "suggestion_decided: accepted or rejected already"},
        **ERASED,
    },
}


@router.post(
    "/v1/merge-suggestions/{suggestion_id}:accept",
    operation_id="acceptMergeSuggestion",
    summary="Merge the two customers (crm.customer.merged.v1, the older survives)",
    **DECISION,
)
async def accept_merge_suggestion(rt: IntakeRuntime, suggestion_id: str, principal: Caller) -> Response:
    return await _decide(rt, suggestion_id, True, principal)


@router.post(
    "/v1/merge-suggestions/{suggestion_id}:reject",
    operation_id="rejectMergeSuggestion",
    summary="Keep the two customers apart; the pair is not suggested again",
    **DECISION,
)
async def reject_merge_suggestion(rt: IntakeRuntime, suggestion_id: str, principal: Caller) -> Response:
    return await _decide(rt, suggestion_id, False, principal)
