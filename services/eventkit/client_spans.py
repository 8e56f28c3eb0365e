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
from collections.abc import Collection, Mapping
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor, RequestInfo
from opentelemetry.sdk.trace import TracerProvider

_URL = ("http.url", "url.full")


class _QueriesUnderRecordedSpans(AsyncPGInstrumentor):
    """asyncpg spans only for queries made while a span is being recorded.

    Background loops (the outbox relay's polling, the audit writer, timers) query many times a
    second outside any span: each query would start a one-span trace of its own. And the contrib
    wrapper builds attributes and a span before the sampler drops it, ~40 µs of CPU per query
    (about the query's own client-side cost) for a span nobody keeps, in every unsampled trace
    too. Here such a query goes straight to asyncpg.
    """

    async def _do_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not trace.get_current_span().is_recording():
            return await func(*args, **kwargs)
        return await super()._do_execute(func, instance, args, kwargs)

    async def _do_cursor_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not trace.get_current_span().is_recording():
            return await func(*args, **kwargs)
        return await super()._do_cursor_execute(func, instance, args, kwargs)

    async def _do_prepared_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not trace.get_current_span().is_recording():
            return await func(*args, **kwargs)
        return await super()._do_prepared_execute(func, instance, args, kwargs)


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
    pg = _QueriesUnderRecordedSpans(capture_parameters=False)
    if "asyncpg" not in disabled and not pg.is_instrumented_by_opentelemetry:
        pg.instrument(tracer_provider=provider)
    http = HTTPXClientInstrumentor()
    if "httpx" not in disabled and not http.is_instrumented_by_opentelemetry:
        options: dict[str, Any] = {"request_hook": _scrub_url, "async_request_hook": _scrub_url_async}
        http.instrument(tracer_provider=provider, **options)


def uninstrument_clients() -> None:
    """Unwrap them again (tests that install a provider of their own)."""
    for instrumentor in (_QueriesUnderRecordedSpans(), HTTPXClientInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
