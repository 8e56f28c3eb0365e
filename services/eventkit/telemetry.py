"""Logs, traces and metrics, configured the same way in every service.

- JSON log lines with the current trace and span ids.
- OpenTelemetry traces; OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set. W3C traceparent
  travels in Kafka headers (see envelope.py) so one trace spans POST, outbox and consumers;
  PostgreSQL and outgoing HTTP spans join it (client_spans.py, docs/observability.md).
- Prometheus metrics (docs/product.md §11). Labels never carry personal data: no customer ids, no content.
"""

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Gauge, Histogram

from eventkit import random_bytes

_propagator = TraceContextTextMapPropagator()

# --- metrics -----------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "crm_http_requests_total", "HTTP requests by route and status", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "crm_http_request_duration_seconds",
    "HTTP request latency by route",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_CONSUMED = Counter("crm_events_consumed_total", "Messages read from Kafka", ["service", "topic"])
EVENTS_APPLIED = Counter("crm_events_applied_total", "Events applied to projections", ["service", "type"])
EVENTS_DUPLICATE = Counter(
    "crm_events_duplicate_total", "Events skipped because they were already applied", ["service", "topic"]
)
EVENTS_DEADLETTERED = Counter(
    "crm_events_deadlettered_total", "Messages sent to the dead-letter topic", ["service", "topic", "reason"]
)
CONSUMER_LAG = Gauge(
    "crm_consumer_lag", "High watermark minus position, per partition", ["service", "topic", "partition"]
)
FRESHNESS = Histogram(
    "crm_event_freshness_seconds",
    "From event time to applied in this service's projections",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OUTBOX_BACKLOG = Gauge("crm_outbox_backlog", "Events stored but not yet acknowledged by Kafka", ["service"])
OUTBOX_PUBLISHED = Counter("crm_outbox_published_total", "Events the relay published", ["service"])
BROKER_AMNESIA = Counter(
    "crm_broker_amnesia_total", "Times the broker was found to have forgotten acknowledged events", ["service"]
)
REPUBLISHED = Counter("crm_outbox_republished_total", "Events queued again after broker amnesia", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "crm_outbox_oldest_age_seconds",
    "How long the event at the head of the outbox has waited to be published (0: nothing waits)",
    ["service"],
)
OUTBOX_PARKED = Counter(
    "crm_outbox_parked_total", "Events the broker refused for good, taken out of the outbox and kept", ["service"]
)
OUTBOX_PARKED_NOW = Gauge(
    "crm_outbox_parked_events", "Events parked now: stored, not on the topic, waiting for `crm unpark`", ["service"]
)
AUDIT_UNWRITABLE = Counter(
    "crm_audit_unwritable_total", "Audit records the database refused even alone; logged, not kept", ["service"]
)
AUDIT_DROPPED = Counter(
    "crm_audit_dropped_total", "Audit records dropped because the queue to the database was full", ["service"]
)
UNREAD_AFTER_REPUBLISH = Counter(
    "crm_outbox_unread_total",
    "Republished events the broker acknowledged but a read of the topic did not return; queued again",
    ["service"],
)
EVENTS_STORED = Counter("crm_events_stored_total", "Events appended to this service's store", ["service"])
GC_PAUSE = Histogram(
    "crm_gc_pause_seconds",
    "Cycle collector passes by generation; the whole process waits for each",
    ["service", "generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
GC_FROZEN = Gauge(
    "crm_gc_frozen_objects", "Start-up objects the cycle collector no longer walks (gc.freeze)", ["service"]
)


# --- logs --------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        for key in ("event_id", "event_type", "topic", "partition", "offset", "reason", "route"):
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("aiokafka").setLevel("WARNING")


# --- traces ------------------------------------------------------------------------------


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    """Install the SDK provider when there is somewhere to send spans.

    Without an endpoint the API's no-op tracer stays, so spans cost next to nothing; tests
    install their own provider with an in-memory exporter.
    """
    if not otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from eventkit.client_spans import disabled_by_environment, instrument_clients

    # Sampling: OTEL_TRACES_SAMPLER(_ARG), default parentbased_always_on (docs/observability.md)
    provider = TracerProvider(resource=Resource.create({"service.name": f"crm-{service}"}))
    endpoint = otlp_endpoint.rstrip("/")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    trace.set_tracer_provider(provider)
    instrument_clients(provider, disabled_by_environment())  # PostgreSQL and outgoing HTTP spans


def tracer() -> trace.Tracer:
    return trace.get_tracer("crm.eventkit")


def records_spans(t: trace.Tracer) -> bool:
    """Whether this tracer's spans are recorded (an SDK provider behind it). Without one, a span
    per trace of a batch records nothing, yet parsing each traceparent to make it cost ~10 µs of
    every consumer's and the relay's CPU per trace; callers skip making them."""
    if isinstance(t, trace.ProxyTracer):
        t = t._tracer  # what it delegates to: the no-op tracer until a provider is installed
    return not isinstance(t, trace.NoOpTracer)


def current_traceparent() -> str:
    """The W3C traceparent of the current span, or a fresh unsampled one when tracing is off.

    Every event carries one, so a trace can always be followed once tracing is switched on.
    """
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    tp = carrier.get("traceparent")
    if tp:
        return tp
    return f"00-{random_bytes.random_hex(16)}-{random_bytes.random_hex(8)}-00"


def context_from_traceparent(traceparent: str) -> otel_context.Context:
    return _propagator.extract({"traceparent": traceparent})


def traceparent_of(span: trace.Span, fallback: str) -> str:
    """The W3C traceparent that makes the next hop a child of `span` (fallback if it has none)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", fallback)
