"""Operations tests: a real Prometheus server and an in-test OTLP/HTTP trace receiver.

One embedded stack serves the whole ops session: the four services as real processes, each
exporting its spans by OTLP/HTTP to a receiver in this test process (so the trace test can
see spans from four processes), and scraped by Prometheus in the dashboard test.
"""

import gzip
import os
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eventkit.devstack import Stack
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parents[2]


# --- Prometheus binary ---------------------------------------------------------------------


def _install_prometheus() -> str | None:
    """Debian's prometheus package (2.42 on bookworm), when running as root with apt-get."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"],
            check=True,
            capture_output=True,
            env=env,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return shutil.which("prometheus")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    found = shutil.which("prometheus") or _install_prometheus()
    if found is None:
        why = "not root" if os.geteuid() != 0 else "apt-get install -y prometheus failed"
        pytest.skip(f"no prometheus binary on PATH and it cannot be installed here ({why})")
    return found


# --- OTLP/HTTP receiver --------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the service.name resource attribute, e.g. crm-intake
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, object]
    link_trace_ids: tuple[str, ...]


def _any_value(value: object) -> object:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(value, kind) if kind else None


@dataclass
class OtlpReceiver:
    """Accepts POST /v1/traces with protobuf ExportTraceServiceRequest bodies; keeps the spans."""

    server: ThreadingHTTPServer
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _any_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            attributes={a.key: _any_value(a.value) for a in s.attributes},
                            link_trace_ids=tuple(link.trace_id.hex() for link in s.links),
                        )
                    )
        with self.lock:
            self.requests += 1
            self.spans.extend(received)

    def in_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()


def _handler(receiver_ref: list[OtlpReceiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            encoding = (self.headers.get("content-encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            try:
                receiver_ref[0].add(body)
            except Exception:
                self.send_response(400)
                self.end_headers()
                return
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    ref: list[OtlpReceiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    server.daemon_threads = True
    receiver = OtlpReceiver(server)
    ref.append(receiver)
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- the stack -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ops_stack(tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("ops-stack"),
        pg_port=0,
        kafka_port=0,
        service_ports={},
        env={
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "LOG_LEVEL": "INFO",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export spans within ~0.1 s, not 5 s
        },
    )
    s.start_infra()
    try:
        s.start_services()
        yield s
    finally:
        s.stop()
