"""Spans for what a service asks of others: PostgreSQL queries (asyncpg) and outgoing HTTP (httpx).

Installed by telemetry.configure_tracing, only when spans are exported: with tracing off the
drivers stay unwrapped and cost nothing. The spans are children of the current span (a
request's server span, a consumer's or the relay's span), and httpx sends the W3C
`traceparent` header, so the called service's server span joins the same trace.

No personal data in attributes:
- SQL text only, never its parameters: every query is parameterised and asyncpg's
  `capture_parameters` stays False.
- Outgoing URLs reduced to their origin: paths name customers (an export gathers
  `/v1/customers/{id}/...`) and webhook URLs may hold secrets in the path or query.
"""

import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor, RequestInfo
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

_DB_SYSTEM = ("db.system", "db.system.name")  # old and new semantic conventions
_URL = ("http.url", "url.full")


class NoOrphanQueries(Sampler):
    """`base`'s decisions, except that a query outside any span is not traced.

    Background loops (the outbox relay's polling, the audit writer, timers) query the
    database many times a second outside any request or event; each such query would
    otherwise start a one-span trace of its own. Queries inside a trace follow `base`, which by
    default (OTEL_TRACES_SAMPLER=parentbased_always_on) samples them with their parent.
    """

    def __init__(self, base: Sampler) -> None:
        self._base = base

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if (
            kind is SpanKind.CLIENT
            and attributes
            and any(k in attributes for k in _DB_SYSTEM)
            and not trace.get_current_span(parent_context).get_span_context().is_valid
        ):
            return SamplingResult(Decision.DROP)
        return self._base.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"NoOrphanQueries{{{self._base.get_description()}}}"


def origin_only(url: str | httpx.URL | tuple[bytes, bytes, int | None, bytes]) -> str:
    """scheme://host[:port] of a URL: where a request went, not what it asked for."""
    if isinstance(url, tuple):  # a transport called with httpcore's raw URL
        scheme, host, port = url[0].decode(), url[1].decode(), url[2]
    else:
        u = httpx.URL(str(url))
        scheme, host, port = u.scheme, u.host, u.port
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def _scrub_url(span: trace.Span, request: RequestInfo) -> None:
    if not span.is_recording():
        return
    recorded = getattr(span, "attributes", None) or {}
    for key in _URL:
        if key in recorded:
            span.set_attribute(key, origin_only(request.url))


async def _scrub_url_async(span: trace.Span, request: RequestInfo) -> None:
    _scrub_url(span, request)


def disabled_by_environment(environ: Mapping[str, str] = os.environ) -> set[str]:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, the standard switch (e.g. `asyncpg` or `asyncpg,httpx`)."""
    return {name.strip() for name in environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",") if name.strip()}


def instrument_clients(provider: TracerProvider, disabled: Collection[str] = ()) -> None:
    """Wrap asyncpg and httpx (those not `disabled`) once per process; a second call changes nothing."""
    pg = AsyncPGInstrumentor(capture_parameters=False)
    if "asyncpg" not in disabled and not pg.is_instrumented_by_opentelemetry:
        pg.instrument(tracer_provider=provider)
    http = HTTPXClientInstrumentor()
    if "httpx" not in disabled and not http.is_instrumented_by_opentelemetry:
        options: dict[str, Any] = {"request_hook": _scrub_url, "async_request_hook": _scrub_url_async}
        http.instrument(tracer_provider=provider, **options)


def uninstrument_clients() -> None:
    """Unwrap them again (tests that install a provider of their own)."""
    for instrumentor in (AsyncPGInstrumentor(), HTTPXClientInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
