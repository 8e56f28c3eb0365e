"""One trace from the channel's POST to every consumer: intake's HTTP server span and the consumer
spans of case, notification and analytics (separate processes) share the caller's trace id, and
so do the PostgreSQL spans under the request and under each consumer.

The services export by OTLP/HTTP to a receiver in this test process (see conftest.py).
"""

import asyncio
import random
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import api_client
from tests.e2e.helpers import interaction_body, post_and_wait
from tests.ops.otlp import OtlpReceiver, ReceivedSpan
from tests.ops.quiet import wait_quiet

pytestmark = pytest.mark.e2e

CONSUMERS = ("case", "notification", "analytics")


def describe(spans: list[ReceivedSpan]) -> str:
    return "\n".join(
        f"  {s.service} {s.scope} {Span.SpanKind.Name(s.kind)} {s.name!r} {s.span_id} parent={s.parent_span_id or '-'}"
        for s in spans
    )


async def post_interaction(stack: Stack, client: httpx.AsyncClient, traceparent: str) -> dict[str, Any]:
    """One interaction with the caller's traceparent; returns once it is applied in every service."""
    body = interaction_body(f"trace-{uuid.uuid4().hex[:8]}@example.com", channel="chat", content="where is my parcel?")
    return await post_and_wait(client, stack, body, timeout_ms=10_000, headers={"traceparent": traceparent})


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


async def test_one_trace_from_the_post_to_every_consumer(ops_stack: Stack, otlp_receiver: OtlpReceiver) -> None:
    trace_id = secrets.token_hex(16)
    caller_span_id = secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{caller_span_id}-01"
    async with api_client(timeout=15) as client:
        await wait_quiet(ops_stack, client)
        await post_interaction(ops_stack, client, traceparent)  # applied everywhere before we look at spans

    def server_spans() -> list[ReceivedSpan]:
        """intake's own server span (eventkit's middleware: named by route template, RED metrics) of
        the POST; the consumers' key lookups at intake are server spans in this trace too."""
        return [
            s
            for s in otlp_receiver.in_trace(trace_id)
            if s.service == "crm-intake"
            and s.kind == Span.SPAN_KIND_SERVER
            and s.scope == "crm.eventkit"
            and s.parent_span_id == caller_span_id
        ]

    def consumer_services() -> set[str]:
        return {s.service for s in otlp_receiver.in_trace(trace_id) if s.kind == Span.SPAN_KIND_CONSUMER}

    expected = {f"crm-{name}" for name in CONSUMERS}  # intake projects its own events as it stores them
    done = await asyncio.to_thread(
        otlp_receiver.wait_until, lambda: bool(server_spans()) and consumer_services() >= expected, 20
    )
    spans = otlp_receiver.in_trace(trace_id)
    assert done, (
        f"trace {trace_id}: server spans {len(server_spans())}, consumers {sorted(consumer_services())}"
        f" (receiver got {otlp_receiver.requests} exports)\n{describe(spans)}"
    )

    # intake's server span continues the caller's trace, named by the route template.
    (server,) = server_spans()
    assert server.parent_span_id == caller_span_id
    assert server.name == "POST /v1/interactions"
    assert server.attributes.get("http.route") == "/v1/interactions"
    assert server.attributes.get("http.response.status_code") == 202

    # intake's outbox relay publishes the events under a PRODUCER span of that trace, a child of
    # a span of the request; every consumer's span is a child of that producer span.
    intake_request_ids = {
        s.span_id
        for s in spans
        if s.service == "crm-intake" and s.kind in (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_INTERNAL)
    }
    producers = [s for s in spans if s.service == "crm-intake" and s.kind == Span.SPAN_KIND_PRODUCER]
    assert producers, f"no producer span from intake's relay\n{describe(spans)}"
    for producer in producers:
        assert producer.name == "intake publish"
        assert producer.parent_span_id in intake_request_ids, f"{producer}\n{describe(spans)}"
    # intake applies them to its own projections inside the request (contracts PROJECTED_WHEN_STORED)
    applied_in_request = [s for s in spans if s.service == "crm-intake" and s.name.startswith("intake apply stored ")]
    assert applied_in_request, f"no span of intake applying its own events\n{describe(spans)}"
    assert {s.parent_span_id for s in applied_in_request} <= intake_request_ids, describe(spans)
    assert not [s for s in spans if s.service == "crm-intake" and s.kind == Span.SPAN_KIND_CONSUMER], describe(spans)
    producer_ids = {s.span_id for s in producers}
    for name in CONSUMERS:
        consumer = [s for s in spans if s.service == f"crm-{name}" and s.kind == Span.SPAN_KIND_CONSUMER]
        assert consumer, f"no consumer span from {name}\n{describe(spans)}"
        for span in consumer:
            assert span.parent_span_id in producer_ids, f"{name}: {span}\n{describe(spans)}"
            # one consumer per service (analytics' KPI fold is a subscriber of its own)
            consumer_name = span.attributes.get("crm.service")
            assert consumer_name == name, span
            assert span.name.startswith(f"{consumer_name} apply crm.")


def is_query(span: ReceivedSpan) -> bool:
    return span.kind == Span.SPAN_KIND_CLIENT and span.attributes.get("db.system") == "postgresql"


def is_write(span: ReceivedSpan) -> bool:
    statement = str(span.attributes.get("db.statement", "")).lstrip().upper()
    return is_query(span) and statement.startswith(("INSERT", "UPDATE"))


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    out: list[str] = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        out.append(span.span_id)
    return out


def missing_links(spans: list[ReceivedSpan]) -> list[str]:
    """What the chain POST -> query -> relay publish -> each consumer -> its write lacks ([]: none),
    and notification's key lookup -> intake's server span."""
    server = next((s for s in spans if s.kind == Span.SPAN_KIND_SERVER and s.name == "POST /v1/interactions"), None)
    if server is None:
        return ["intake's server span"]
    missing = []
    under_request = [s for s in spans if s.service == "crm-intake" and server.span_id in ancestors(s, spans)]
    if not [s for s in under_request if is_write(s)]:
        missing.append("a write of intake's under its server span")
    producers = [s for s in under_request if s.kind == Span.SPAN_KIND_PRODUCER]
    if not producers:
        missing.append("the relay's publish span")
    publish_ids = {s.span_id for s in producers}
    for name in CONSUMERS:
        consumers = {
            s.span_id
            for s in spans
            if s.service == f"crm-{name}" and s.kind == Span.SPAN_KIND_CONSUMER and s.parent_span_id in publish_ids
        }
        if not [s for s in spans if s.service == f"crm-{name}" and s.parent_span_id in consumers and is_write(s)]:
            missing.append(f"a write of {name}'s under its consumer span")
        if name == "notification":  # it fetches the new customer's data key from intake (httpx)
            lookups = {
                s.span_id
                for s in spans
                if s.service == "crm-notification"
                and s.parent_span_id in consumers
                and s.kind == Span.SPAN_KIND_CLIENT
                and not is_query(s)
            }
            if not [s for s in spans if s.name == "POST /internal/v1/data-keys:lookup" and s.parent_span_id in lookups]:
                missing.append("intake's server span of notification's key lookup, under its client span")
    return missing


async def test_the_trace_goes_on_into_every_database(ops_stack: Stack, otlp_receiver: OtlpReceiver) -> None:
    """PostgreSQL spans (asyncpg instrumentation) join the request's and the consumers' spans, and an
    outgoing request (httpx instrumentation) carries the trace on to the service it calls."""
    trace_id, _, traceparent = new_traceparent()
    async with api_client(timeout=15) as client:
        # quiet first: each consumer batch then holds this trace alone, and its span is current
        await wait_quiet(ops_stack, client)
        await post_interaction(ops_stack, client, traceparent)

    done = await asyncio.to_thread(
        otlp_receiver.wait_until, lambda: not missing_links(otlp_receiver.in_trace(trace_id)), 20
    )
    spans = otlp_receiver.in_trace(trace_id)
    assert done, f"trace {trace_id} lacks {missing_links(spans)}\n{describe(spans)}"
    for query in filter(is_query, spans):  # the SQL text only: every query is parameterised
        assert query.attributes.get("db.statement") and "db.statement.parameters" not in query.attributes


async def test_one_server_span_per_request(ops_stack: Stack, otlp_receiver: OtlpReceiver) -> None:
    """The POST makes one SERVER span; any other in its trace serves an outgoing request of a
    service (a key lookup at intake), one for each CLIENT span that made it."""
    trace_id, caller_span_id, traceparent = new_traceparent()
    async with api_client(timeout=15) as client:
        await post_interaction(ops_stack, client, traceparent)

    def servers() -> list[ReceivedSpan]:
        return [s for s in otlp_receiver.in_trace(trace_id) if s.kind == Span.SPAN_KIND_SERVER]

    assert await asyncio.to_thread(otlp_receiver.wait_until, lambda: bool(servers()), 10)
    await asyncio.sleep(0.5)  # a second exporter batch, if any
    spans = otlp_receiver.in_trace(trace_id)
    http_clients = {s.span_id for s in spans if s.kind == Span.SPAN_KIND_CLIENT and not is_query(s)}
    assert [s.name for s in servers() if s.parent_span_id == caller_span_id] == ["POST /v1/interactions"]
    others = [s for s in servers() if s.parent_span_id != caller_span_id]
    assert all(s.parent_span_id in http_clients for s in others), describe(spans)
    assert len({s.parent_span_id for s in others}) == len(others), describe(spans)


async def test_spans_carry_no_personal_value(ops_stack: Stack, otlp_receiver: OtlpReceiver) -> None:
    """docs/product.md §9: a complaint with an email, a phone, a text and metadata of its own goes through
    intake and every consumer (the case it opens too); no span name or attribute value, in its
    trace or any other, holds any of them."""
    tag = uuid.uuid4().hex[:10]
    personal = {
        "email": f"span.{tag}@example.com",
        "phone": "+49151" + "".join(random.Random(tag).choice("0123456789") for _ in range(8)),
        "content": f"Spanish Inquisition{tag} at my door",
        "metadata": f"Ottoline{tag}",
    }
    trace_id, _, traceparent = new_traceparent()
    async with api_client(timeout=15) as client:
        r = await client.post(
            f"{ops_stack.services['intake'].url}/v1/interactions",
            headers={"traceparent": traceparent},
            json={
                "customer": {"email": personal["email"], "phone": personal["phone"]},
                "channel": "chat",
                "direction": "inbound",
                "kind": "complaint",
                "occurred_at": datetime.now(UTC).isoformat(),
                "content": personal["content"],
                "metadata": {"caller": {"name": personal["metadata"]}},
            },
        )
        assert r.status_code == 202, r.text

    def consumers() -> set[str]:
        return {s.service for s in otlp_receiver.in_trace(trace_id) if s.kind == Span.SPAN_KIND_CONSUMER}

    expected = {f"crm-{name}" for name in CONSUMERS}
    assert await asyncio.to_thread(otlp_receiver.wait_until, lambda: consumers() >= expected, 20), describe(
        otlp_receiver.in_trace(trace_id)
    )
    await asyncio.sleep(1.0)  # the case it opened, consumed in turn, and the exporters' last batches
    with otlp_receiver.lock:
        spans = list(otlp_receiver.spans)
    needles = {what: value.lower() for what, value in personal.items()} | {"phone digits": personal["phone"][3:]}
    hits = [
        f"{s.service} {s.name!r}: the {what}"
        for s in spans
        for what, needle in needles.items()
        if needle in " ".join([s.name, *(f"{k}={v}" for k, v in s.attributes.items())]).lower()
    ]
    assert len(otlp_receiver.in_trace(trace_id)) >= 4
    assert hits == []
