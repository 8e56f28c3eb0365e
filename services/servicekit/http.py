"""HTTP plumbing every service shares: error bodies, request metrics and the common routes.

Errors are JSON with a machine-readable `error` and, for validation, one entry per field:
    {"error": "validation_failed", "errors": [{"field": "body.channel", "reason": "..."}]}
A database that is down is a 503 with Retry-After, never a 500. ErrorBody documents that shape;
document_errors() puts it on every error answer of every route in the OpenAPI document.
"""

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import asyncpg
import orjson
from eventkit.db import TRANSIENT_ERRORS
from eventkit.eventstore import ConcurrencyError, EventTooLarge
from eventkit.telemetry import HTTP_LATENCY, HTTP_REQUESTS, context_from_traceparent, tracer
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute, iter_route_contexts
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.inputs import unsafe_reason
from servicekit.keyring import KeyErased, KeysUnavailable

log = logging.getLogger(__name__)


UNSTORABLE_TEXT: tuple[type[Exception], ...] = (
    asyncpg.UntranslatableCharacterError,
    asyncpg.CharacterNotInRepertoireError,
    orjson.JSONEncodeError,
)


AUDIT_CUSTOMER = "audit_customer_id"


def audit_customer(request: Request, customer_id: str) -> None:
    """Attribute this request to a customer in the audit log when its path does not name one
    (GET /v1/cases/{case_id}...), so the customer's audit trail and export include it."""
    request.state.audit_customer_id = customer_id


AUDIT_TARGET = "audit_target"


def audit_target(request: Request, **names: str) -> None:
    """Add to what the audit record names besides the path (a merge's merged_id, from the body),
    so the other customer of a two-customer command is attributable too."""
    request.state.audit_target = {**getattr(request.state, AUDIT_TARGET, {}), **names}


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson, for the hot paths (timeline pages, accept answers): several times
    faster than the standard library on pages of 50 events; the same JSON (UTF-8, compact)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class FieldError(BaseModel):
    """One thing wrong with the request, named as the client wrote it."""

    field: str = Field(description='"body.channel", "customer.email", "query.before", "header.If-Match"...')
    reason: str
    index: int | None = Field(default=None, description="Which item of a batch (batch requests only)")
    type: str | None = Field(default=None, description="The validator's code, e.g. missing, json_invalid")


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable `error`, a sentence, and for bad input one entry per field.
    Some errors say more: `required` scopes (403), `index` of the batch item (409 idempotency_key_reused),
    `current_status` and `allowed` transitions (409 illegal_transition)."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="validation_failed, unauthenticated, forbidden, rate_limited, not_found, ...")
    message: str
    errors: list[FieldError] | None = Field(default=None, description="Validation errors, one per field")
    required: list[str] | None = Field(default=None, description="403: the scopes that would do")
    index: int | None = Field(default=None, description="409 idempotency_key_reused: the batch item")
    current_status: str | None = Field(default=None, description="409 illegal_transition: the case's status")
    allowed: list[str] | None = Field(default=None, description="409 illegal_transition: where it may go")


class ApiError(Exception):
    """Raise from a route for a 4xx with a machine-readable reason."""

    def __init__(
        self, status: int, error: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or ({"WWW-Authenticate": "Bearer"} if status == 401 else None)
        self.body = {"error": error, "message": message, **extra}


T = TypeVar("T")


def decode_cursor(decode: Callable[[str], T], text: str | None) -> T | None:
    """A keyset cursor from the query (`before`), or 422 naming the field if it is not one we made."""
    if text is None:
        return None
    try:
        return decode(text)
    except ValueError as exc:
        raise ApiError(
            422,
            "validation_failed",
            str(exc),
            errors=[{"field": "query.before", "reason": "not a cursor from next_before"}],
        ) from exc


def field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    """Fields named as in the body ("customer.email"); query, path and header ones keep that prefix."""
    errors = []
    for e in exc.errors():
        if e["type"] == "json_invalid":
            # Its loc is ("body", <character offset>): name the body, keep the offset in the reason.
            offset = e["loc"][-1] if len(e["loc"]) > 1 else None
            problem = (e.get("ctx") or {}).get("error") or e["msg"]
            where = f" at character {offset}" if isinstance(offset, int) else ""
            errors.append({"field": "body", "reason": f"not valid JSON: {problem}{where}", "type": e["type"]})
            continue
        loc = [str(p) for p in e["loc"]]
        if len(loc) > 1 and loc[0] == "body":
            loc = loc[1:]
        errors.append({"field": ".".join(loc), "reason": e["msg"], "type": e["type"]})
    return errors


def _unreadable_body(cause: BaseException | None) -> JSONResponse | None:
    """FastAPI answers 400 "There was an error parsing the body" for whatever json.loads raised
    besides a syntax error; say which it was, in our shape."""
    if isinstance(cause, UnicodeDecodeError):
        reason = "the body is not UTF-8 text"
        errors = [{"field": "body", "reason": reason, "type": "json_invalid"}]
        return JSONResponse({"error": "malformed_json", "message": reason, "errors": errors}, 400)
    if isinstance(cause, RecursionError):  # deeper than Python's JSON reader goes
        reason = "JSON nested too deeply"
        errors = [{"field": "body", "reason": reason, "type": "too_deep"}]
        return JSONResponse({"error": "validation_failed", "message": reason, "errors": errors}, 422)
    if isinstance(cause, ValueError):  # an integer of more digits than Python converts (4300)
        reason = f"a value cannot be read: {cause}"[:200]
        errors = [{"field": "body", "reason": reason, "type": "value_error"}]
        return JSONResponse({"error": "validation_failed", "message": reason, "errors": errors}, 422)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse(
                {"error": "malformed_json", "message": "the body is not valid JSON", "errors": errors}, 400
            )
        return JSONResponse(
            {"error": "validation_failed", "message": "the request is not valid", "errors": errors}, 422
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, exc.status, exc.headers)

    @app.exception_handler(CustomerMerged)
    async def _merged(request: Request, exc: CustomerMerged) -> RedirectResponse:
        return survivor_redirect(request, exc.merged_id, exc.survivor_id)

    @app.exception_handler(ConcurrencyError)
    async def _conflict(request: Request, exc: ConcurrencyError) -> JSONResponse:
        return JSONResponse(
            {"error": "concurrency_conflict", "message": "the resource changed meanwhile; reload and retry"},
            409,
        )

    @app.exception_handler(EventTooLarge)
    async def _event_too_large(request: Request, exc: EventTooLarge) -> JSONResponse:
        reason = f"the {exc.event_type} event would be {exc.size} bytes sealed and encoded; the limit is {exc.limit}"
        body: dict[str, Any] = {
            "error": "event_too_large",
            "message": "the event this request makes is over the event size limit",
            "errors": [{"field": "body", "reason": reason}],
            "limit": exc.limit,
        }
        if exc.index is not None:
            body["index"] = exc.index
        return JSONResponse(body, 413)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return JSONResponse(exc.body, 413)
        unreadable = _unreadable_body(exc.__cause__) if exc.status_code == 400 else None
        if unreadable is not None:
            return unreadable
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": reason, "message": str(exc.detail)}, exc.status_code, exc.headers)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %s", type(exc).__name__)
        return JSONResponse(
            {"error": "unavailable", "message": "storage is unavailable, retry shortly"},
            503,
            {"Retry-After": "1"},
        )

    for exc_type in (*TRANSIENT_ERRORS, KeysUnavailable):
        app.add_exception_handler(exc_type, _unavailable)

    @app.exception_handler(KeyErased)
    async def _erased(request: Request, exc: KeyErased) -> JSONResponse:
        return JSONResponse(
            {"error": "customer_erased", "message": "this customer was erased; no new personal data is kept"}, 410
        )

    async def _unstorable_text(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL cannot store NUL in text, and JSON encoders refuse unpaired surrogates.
        reason = "text contains characters that cannot be stored (NUL or an unpaired surrogate)"
        return JSONResponse(
            {"error": "validation_failed", "message": reason, "errors": [{"field": "body", "reason": reason}]}, 422
        )

    for exc_type in UNSTORABLE_TEXT:
        app.add_exception_handler(exc_type, _unstorable_text)

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Last resort: still a machine-readable body; the traceback goes to the log (no request data).
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal", "message": "unexpected error; it has been logged"}, 500)

    app.add_exception_handler(Exception, _unexpected)


_ERROR_ANSWERS: dict[int, str] = {
    400: "malformed_json: the body is not valid JSON",
    401: "unauthenticated: no API key, or not a valid one (unknown or revoked)",
    403: "forbidden: the key lacks the scope; `required` names the ones that would do",
    413: "body_too_large: the body is over this route's limit; event_too_large: an event it makes, sealed and"
    " encoded, is over the event size limit (`limit` bytes; `index`: the batch item)",
    422: "validation_failed: `errors` names each field and why",
    429: "rate_limited: too many requests for this key; too_many_failed_logins: too many invalid keys from"
    " this address; retry after Retry-After seconds",
    503: "unavailable: storage or a service it needs is unavailable; retry after Retry-After seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return dependant.call is call or any(_depends_on(d, call) for d in dependant.dependencies)


def _has_schema(response: dict[str, Any]) -> bool:
    return any(media.get("schema") for media in response.get("content", {}).values())


def document_errors(
    app: FastAPI,
    authenticate: Callable[..., Any],
    then: Sequence[Callable[[FastAPI, dict[str, Any]], None]] = (),
) -> None:
    """The OpenAPI document says what the handlers above really answer, once for every route:
    ErrorBody on every 4xx/5xx (FastAPI's own 422 schema, HTTPValidationError, is not our body);
    400/413 wherever there is a body; 401/403/429/503 wherever `authenticate` runs; and no body on
    redirects (RedirectResponse sends none). Routes document their own 404/409/410/... in responses=.
    `then`: what else completes the document before it is cached (apidocs.declare_security).
    """
    generate = app.openapi  # FastAPI's generator, which caches in app.openapi_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(error_schema.pop("$defs", {}))
        components["ErrorBody"] = error_schema
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        # Route contexts: included routers' routes with the router's own dependencies joined in.
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            codes: set[int] = set()
            if route.body_field is not None:
                codes |= {400, 413, 422}
            if _depends_on(route.dependant, authenticate):
                codes |= {401, 403, 429, 503}
            for method in route.methods or ():
                responses: dict[str, Any] = schema["paths"][route.path_format][method.lower()]["responses"]
                for code in sorted(codes):
                    responses.setdefault(str(code), {"description": _ERROR_ANSWERS[code]})
                for key, response in responses.items():
                    status = int(key) if key.isdigit() else 0
                    if 300 <= status < 400:
                        response.pop("content", None)
                        continue
                    if status < 400:
                        continue
                    if status == 422 or not _has_schema(response):
                        response["content"] = error_content
                    if status in _ERROR_ANSWERS and response.get("description") in ("", "Additional Response"):
                        response["description"] = _ERROR_ANSWERS[status]
                    if status == 422:
                        response["description"] = _ERROR_ANSWERS[422]
                    if status in (429, 503):
                        response.setdefault("headers", _RETRY_AFTER)
                responses_by_code = dict(sorted(responses.items()))
                responses.clear()
                responses.update(responses_by_code)
        for complete in then:
            complete(app, schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class RequestMetrics:
    """Pure ASGI middleware: request count, errors and latency per route template (never raw paths)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        method = scope["method"]

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # The server span continues a caller's W3C trace; events stored while it is current carry it.
        incoming = next((v.decode() for k, v in scope["headers"] if k == b"traceparent"), None)
        parent = context_from_traceparent(incoming) if incoming else None
        with tracer().start_as_current_span(
            f"{method} {scope['path']}", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                template = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{method} {template}")  # the template, never the raw path
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
                principal = scope.get("state", {}).get("principal")
                if principal is not None:  # authenticated: append to the audit log
                    params = dict(scope.get("path_params", {}))
                    # a route about one case, message... may name its customer (audit_customer)
                    customer = params.pop("customer_id", None) or scope["state"].get(AUDIT_CUSTOMER)
                    params.update(scope["state"].get(AUDIT_TARGET, {}))
                    audit = scope["app"].state.runtime.audit
                    audit.record(principal.key_id, method, template, customer, params, status)
                HTTP_LATENCY.labels(self.service, method, template).observe(time.perf_counter() - start)


class BodyTooLarge(StarletteHTTPException):
    """Raised while reading a body over the limit. An HTTPException, so that FastAPI passes it on
    instead of turning it into its own 400 "error parsing the body" (chunked bodies)."""

    def __init__(self, limit: int) -> None:
        reason = f"request bodies here are limited to {limit} bytes"
        super().__init__(413, reason)
        self.body = {"error": "body_too_large", "message": reason, "errors": [{"field": "body", "reason": reason}]}


class BodySizeLimit:
    """413 for a body over the limit, by Content-Length or while streaming a chunked body."""

    def __init__(self, app: ASGIApp, default_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default_bytes)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:  # read outside a FastAPI route, which would have answered it
            if not started:
                await self._reject(send, limit)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        await _send_json(send, 413, BodyTooLarge(limit).body)


async def _send_json(send: Send, status: int, content: dict[str, Any]) -> None:
    body = orjson.dumps(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SafeUrl:
    """422 for a path or query parameter holding NUL or another control character, before any
    route (and before authentication, so such text never reaches the audit log or a query).
    Invalid UTF-8 in a percent-escape is already read as U+FFFD, so no surrogate gets this far."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _url_problem(scope["path"], scope.get("query_string", b""))
            if problem is not None:
                field, reason = problem
                errors = [{"field": field, "reason": reason, "type": "unsafe_text"}]
                await _send_json(send, 422, {"error": "validation_failed", "message": reason, "errors": errors})
                return
        await self.app(scope, receive, send)


def _url_problem(path: str, query: bytes) -> tuple[str, str] | None:
    if (reason := unsafe_reason(path, one_line=True)) is not None:
        return "path", f"the path {reason}"
    if b"%" not in query and not any(b < 0x20 or b == 0x7F for b in query):
        return None  # the common case: nothing escaped, nothing to decode
    for name, value in parse_qsl(query.decode(errors="replace"), keep_blank_values=True, errors="replace"):
        for text in (name, value):
            if (reason := unsafe_reason(text, one_line=True)) is not None:
                return f"query.{name}", reason
    return None


class CustomerMerged(Exception):
    """Raise from a route reading a merged customer: it answers 308 with the survivor's URL."""

    def __init__(self, merged_id: str, survivor_id: str) -> None:
        super().__init__(merged_id)
        self.merged_id = merged_id
        self.survivor_id = survivor_id


def survivor_redirect(request: Request, merged_id: str, survivor_id: str) -> RedirectResponse:
    """A merged customer's URLs answer 308 with the survivor's, query string kept."""
    url = request.url.path.replace(f"/customers/{merged_id}", f"/customers/{survivor_id}", 1)
    if request.url.query:
        url = f"{url}?{request.url.query}"
    return RedirectResponse(url, status_code=308)
