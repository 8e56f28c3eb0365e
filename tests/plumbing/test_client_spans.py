"""PostgreSQL and outgoing HTTP spans (eventkit.client_spans): children of the current span,
`traceparent` sent on, and no personal data in their attributes."""

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import httpx
import orjson
import pytest
from eventkit import consumer as consumer_module
from eventkit.acceptance import Acceptance
from eventkit.client_spans import (
    disabled_by_environment,
    instrument_clients,
    origin_only,
    uninstrument_clients,
)
from eventkit.consumer import BatchApplier
from eventkit.envelope import Envelope, new_event
from eventkit.telemetry import records_spans
from notification import worker
from notification.context import NotificationContext
from notification.delivery import Accepted, Message, WebhookPoster
from notification.store import Row
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import NoOpTracer, SpanKind
from servicekit.keyring import HttpKeySource

from contracts.topics import DEADLETTER
from tests.conftest import SCHEMAS

SECRET = "alice@example.com"  # stands for any personal datum a query or URL carries


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_clients(provider)
    try:
        yield provider, exporter
    finally:
        uninstrument_clients()


class Receiver:
    """A plain HTTP server that keeps the headers of what it is sent and answers `reply`."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                body = orjson.dumps(reply)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver({"keys": {}, "erased": []})
    try:
        yield r
    finally:
        r.close()


def client_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def only_child(exporter: InMemorySpanExporter, parent: str) -> ReadableSpan:
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    children = client_spans(exporter)
    assert len(children) == 1, [s.name for s in children]
    child = children[0]
    parent_ctx = by_name[parent].context
    assert child.parent is not None and child.parent.span_id == parent_ctx.span_id
    assert child.context.trace_id == parent_ctx.trace_id
    return child


def attribute_values(span: ReadableSpan) -> str:
    return " ".join(str(v) for v in (span.attributes or {}).values())


async def test_a_query_is_a_child_of_the_current_span_and_keeps_its_parameters_out(
    spans: tuple[TracerProvider, InMemorySpanExporter], pool: asyncpg.Pool
) -> None:
    provider, exporter = spans
    with provider.get_tracer("test").start_as_current_span("POST /v1/interactions"):
        assert await pool.fetchval("SELECT $1::text", SECRET) == SECRET
    query = only_child(exporter, "POST /v1/interactions")
    assert (query.attributes or {}).get("db.system") == "postgresql"
    assert (query.attributes or {}).get("db.statement") == "SELECT $1::text"
    assert SECRET not in attribute_values(query)


async def test_a_query_outside_any_span_is_not_traced(
    spans: tuple[TracerProvider, InMemorySpanExporter], pool: asyncpg.Pool
) -> None:
    provider, exporter = spans
    await pool.fetchval("SELECT 1")  # a background loop's poll
    with provider.get_tracer("test").start_as_current_span("relay publish"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["relay publish"]


class CountingSampler(Sampler):
    """ParentBased(ALWAYS_OFF) that counts what it is asked about, by span kind."""

    def __init__(self) -> None:
        self.asked: list[SpanKind | None] = []
        self._base = ParentBased(ALWAYS_OFF)

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, *rest: Any
    ) -> SamplingResult:
        self.asked.append(kind)
        return self._base.should_sample(parent_context, trace_id, name, kind, *rest)

    def get_description(self) -> str:
        return "counting"


async def test_a_query_in_no_span_or_an_unsampled_trace_costs_no_span_at_all(pool: asyncpg.Pool) -> None:
    """Not even one the sampler then drops: building it costs as much CPU as the query itself."""
    sampler = CountingSampler()
    provider = TracerProvider(sampler=sampler)
    instrument_clients(provider)
    try:
        await pool.fetchval("SELECT 1")  # a background loop's poll
        with provider.get_tracer("test").start_as_current_span("POST /v1/interactions"):  # not sampled
            await pool.fetchval("SELECT 1")
    finally:
        uninstrument_clients()
    assert sampler.asked == [SpanKind.INTERNAL]  # the request's span only


async def test_a_key_lookup_is_a_child_span_that_sends_its_traceparent(
    spans: tuple[TracerProvider, InMemorySpanExporter], receiver: Receiver
) -> None:
    provider, exporter = spans
    keys = HttpKeySource(receiver.url, "an-api-key")
    try:
        with provider.get_tracer("test").start_as_current_span("analytics apply"):
            await keys.lookup(["cust-1"], create=False)
    finally:
        await keys.close()
    lookup = only_child(exporter, "analytics apply")
    # The called service's server span continues exactly this client span.
    sent = receiver.headers[0]["traceparent"]
    assert sent.startswith(f"00-{lookup.context.trace_id:032x}-{lookup.context.span_id:016x}-")


async def test_a_webhook_span_names_the_origin_only(
    spans: tuple[TracerProvider, InMemorySpanExporter], receiver: Receiver
) -> None:
    provider, exporter = spans
    url = f"{receiver.url}/hooks/{SECRET}/T0123/s3cr3t-token?sig=abc"
    with provider.get_tracer("test").start_as_current_span("notification deliver"):
        await WebhookPoster("webhook-secret", timeout_s=5).post(url, {"customer_id": SECRET}, "idem-1")
    webhook = only_child(exporter, "notification deliver")
    assert receiver.headers[0]["traceparent"].split("-")[1] == f"{webhook.context.trace_id:032x}"
    assert (webhook.attributes or {}).get("http.url") == receiver.url
    values = attribute_values(webhook)
    assert SECRET not in values and "s3cr3t" not in values and "sig=" not in values


async def test_a_delivery_is_traced_under_the_event_that_caused_it(
    spans: tuple[TracerProvider, InMemorySpanExporter], receiver: Receiver
) -> None:
    """The delivery loop runs outside any span: each send continues the trace stored with the
    notification, so the webhook's receiver joins the trace of the interaction behind it."""
    provider, exporter = spans
    stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    class Posting:
        async def send(self, message: Message) -> Accepted:
            async with httpx.AsyncClient() as client:
                await client.post(receiver.url + "/hook", content=b"{}")
            return Accepted(delivered=True)

    row = Row(
        notification_id="n1", idempotency_key="k1", rule="case_opened", source_event_id="e1",
        source_event_type="crm.case.opened.v1", customer_id="c1", audience="customer", recipient="customer",
        purpose="service", critical=False, data={}, traceparent=stored, channel="webhook",
        address=receiver.url, status="sending", created_at=datetime.now(UTC), attempts=2,
    )  # fmt: skip
    message = Message("n1", "case_opened", "c1", "webhook", receiver.url, "en", "", "", "e1")
    ctx = cast(NotificationContext, SimpleNamespace(send_lease=timedelta(seconds=30)))
    outcome = await worker.send(ctx, Posting(), row, message, provider.get_tracer("test"))
    assert outcome == Accepted(delivered=True)
    sent = only_child(exporter, "notification send")
    by_name = {span.name: span for span in exporter.get_finished_spans()}
    send_span = by_name["notification send"]
    assert send_span.parent is not None and f"{send_span.parent.span_id:016x}" == stored.split("-")[2]
    assert f"{sent.context.trace_id:032x}" == stored.split("-")[1]
    assert receiver.headers[0]["traceparent"].split("-")[1] == stored.split("-")[1]
    assert (send_span.attributes or {})["crm.attempt"] == 2


async def test_a_request_outside_any_span_is_still_traced(
    spans: tuple[TracerProvider, InMemorySpanExporter], receiver: Receiver
) -> None:
    """Unlike a query: a webhook sent by a background loop is worth a trace of its own."""
    _, exporter = spans
    async with httpx.AsyncClient() as client:
        await client.post(receiver.url + "/hook", content=b"{}")
    (span,) = client_spans(exporter)
    assert span.parent is None
    assert "traceparent" in receiver.headers[0]


async def test_the_standard_switch_leaves_the_queries_untraced(pool: asyncpg.Pool) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    disabled = disabled_by_environment({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": " asyncpg ,flask"})
    assert disabled == {"asyncpg", "flask"}
    instrument_clients(provider, disabled)
    try:
        with provider.get_tracer("test").start_as_current_span("POST /v1/interactions"):
            await pool.fetchval("SELECT 1")
    finally:
        uninstrument_clients()
    assert [s.name for s in exporter.get_finished_spans()] == ["POST /v1/interactions"]


class Lookup:
    """A subscriber that reads the database for what it applies."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        await conn.fetchval("SELECT count(*) FROM applied_events")


def event(traceparent: str) -> Envelope:
    return new_event("crm.note.v1", "cust-1", {"x": 1}, "/crm/test", traceparent)


def lookup_applier(pool: asyncpg.Pool) -> BatchApplier:
    """case's batch applier with one subscriber that runs a query."""
    return BatchApplier(
        service="case",
        pool=pool,
        producer=None,  # type: ignore[arg-type]  # never used for a batch that applies
        subscribers=[Lookup()],
        acceptance=Acceptance(SCHEMAS),
        deadletter_topic=DEADLETTER,
    )


async def test_a_consumer_batch_of_one_trace_has_its_queries_under_its_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, exporter = spans
    monkeypatch.setattr(consumer_module, "tracer", lambda: provider.get_tracer("crm.eventkit"))
    applier = lookup_applier(pool)
    one = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    async with pool.acquire() as conn, conn.transaction():
        await applier._apply(conn, [event(one), event(one)])
    consumer = only_child(exporter, "case apply crm.note.v1")  # the dedup record: outside, no span
    assert consumer.context.trace_id == int("1" * 32, 16)
    exporter.clear()
    # Two traces share the batch's queries: neither span is their parent, so they make none.
    other = "00-" + "3" * 32 + "-" + "4" * 16 + "-01"
    async with pool.acquire() as conn, conn.transaction():
        await applier._apply(conn, [event(one), event(other)])
    assert client_spans(exporter) == []
    assert len(exporter.get_finished_spans()) == 2


def test_only_a_tracer_with_a_provider_behind_it_records_spans() -> None:
    assert not records_spans(NoOpTracer())
    assert records_spans(TracerProvider().get_tracer("crm.eventkit"))


async def test_with_tracing_off_a_consumer_batch_makes_no_spans_at_all(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def parse(traceparent: str) -> Any:
        raise AssertionError("a traceparent parsed for a span nobody records")

    monkeypatch.setattr(consumer_module, "tracer", NoOpTracer)
    monkeypatch.setattr(consumer_module, "context_from_traceparent", parse)
    applier = lookup_applier(pool)
    traces = ["00-" + f"{n:032x}" + "-" + "2" * 16 + "-01" for n in range(1, 4)]
    async with pool.acquire() as conn, conn.transaction():
        await applier._apply(conn, [event(tp) for tp in traces])


def test_origin_only_drops_path_query_and_credentials() -> None:
    assert origin_only("https://user:pw@hooks.example.net:8443/a/b?c=d") == "https://hooks.example.net:8443"
    assert origin_only("http://127.0.0.1/x") == "http://127.0.0.1"
    assert origin_only((b"http", b"10.0.0.1", 8001, b"/internal")) == "http://10.0.0.1:8001"
