"""Real receivers for notification tests: an SMTP server (aiosmtpd) and an HTTP webhook server,
each in its own thread, recording what reached them.

The webhook server checks every request as a real receiver must (docs/services/notification.md, "Webhook signature"),
with the Standard Webhooks library from PyPI (`standardwebhooks`) rather than notification's
code, so a signing bug on the sending side fails through the real delivery path: a wrong or
missing `webhook-signature` over "<webhook-id>.<webhook-timestamp>.<raw body>", or a timestamp
more than 5 minutes off its own clock, answers 401. It checks the deprecated `X-CRM-Signature`
too, while notification still sends it.
It also marks a request whose Idempotency-Key it has taken before (2xx) as a duplicate, which
a real receiver would drop.
"""

import base64
import email
import email.policy
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import standardwebhooks
from aiosmtpd.controller import Controller
from crmtools.processes import free_port


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.inbox = _Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[EmailMessage]:
        with self.inbox.lock:
            return list(self.inbox.messages)

    def with_header(self, name: str, value: str) -> list[EmailMessage]:
        return [m for m in self.messages if m[name] == value]


@contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


TOLERANCE_S = 300  # how far a request's timestamp may be off the receiver's clock


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    verified: bool  # signature and timestamp checked out (else it was answered 401)
    duplicate: bool = False  # its Idempotency-Key was taken (2xx) before on this path

    @property
    def idempotency_key(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "idempotency-key"), None)


def standard_secret(secret: str) -> str:
    """The receiver's Standard Webhooks secret for notification's WEBHOOK_SECRET, as documented:
    a `whsec_` secret as it is, a plain one's UTF-8 bytes in base64 behind `whsec_`."""
    return secret if secret.startswith("whsec_") else "whsec_" + base64.b64encode(secret.encode()).decode()


def signature_problem(secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """Why a receiver holding `secret` refuses this request, or None if it is authentic and fresh.
    The Standard Webhooks check is the library's (against the wall clock); the deprecated header's
    is done here."""
    try:
        standardwebhooks.Webhook(standard_secret(secret)).verify(body, headers, json_parse=False)
    except standardwebhooks.WebhookVerificationError as exc:
        return f"standard webhooks: {exc}"
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp, signature = lower.get("x-crm-timestamp", ""), lower.get("x-crm-signature", "")
    if not timestamp.isdigit():
        return "no timestamp"
    if abs(now - int(timestamp)) > TOLERANCE_S:
        return "stale timestamp"
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(f"v1={mac}", signature):
        return "bad signature"
    return None


@dataclass
class WebhookServer:
    """Verifies every request's signature and timestamp against `secret` (401 when they fail);
    answers an authentic one with the scripted statuses in turn (the last one from then on);
    records every request."""

    secret: str
    script: list[int] = field(default_factory=lambda: [200])
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, script: Sequence[int]) -> None:
        with self.lock:
            self.scripts[path] = list(script)

    def next_status(self, path: str) -> int:
        with self.lock:
            script = self.scripts.get(path, self.script)
            return script.pop(0) if len(script) > 1 else script[0]

    def record(self, request: Request) -> None:
        with self.lock:
            key = request.idempotency_key
            request.duplicate = key is not None and any(
                r.path == request.path and r.idempotency_key == key and 200 <= r.answered < 300 for r in self.requests
            )
            self.requests.append(request)

    def received(self, path: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def __post_init__(self) -> None:
        self.scripts: dict[str, list[int]] = {}


@contextmanager
def webhook_server(secret: str) -> Iterator[WebhookServer]:
    """A webhook receiver sharing `secret` with the sender (notification's WEBHOOK_SECRET)."""
    state = WebhookServer(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            problem = signature_problem(state.secret, headers, body, time.time())
            # A refused request does not use up a scripted answer.
            status = 401 if problem is not None else state.next_status(self.path)
            state.record(Request(self.path, headers, body, status, verified=problem is None))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
