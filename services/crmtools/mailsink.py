"""The dev stack's mail sink: an SMTP server (aiosmtpd) that keeps what notification sends, and a
small page listing it, so that `make run` has somewhere to deliver to and a newcomer can read
what the system would have sent.

Both listen on 127.0.0.1 only and keep the messages in memory (the newest MAX_MESSAGES): no
customer's data leaves the machine, and nothing outlives the run.

    GET /               the messages as a page, newest first
    GET /messages.json  the same as JSON: [{"recipients", "sender", "subject", "body", "received_at", "headers"}]
"""

import email
import email.policy
import html
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from aiosmtpd.controller import Controller

from crmtools.processes import free_port

MAX_MESSAGES = 1000
HOST = "127.0.0.1"
# Headers worth showing beside the text: which rule and message made it.
SHOWN_HEADERS = ("To", "From", "Message-ID", "Content-Language", "X-CRM-Rule", "X-CRM-Notification-Id")


@dataclass(frozen=True)
class Captured:
    recipients: list[str]
    sender: str
    subject: str
    body: str
    received_at: str  # ISO 8601, UTC
    headers: dict[str, str]


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else repr(content)


class Mailbox:
    """What reached the SMTP server, newest last; aiosmtpd's handler (handle_DATA)."""

    def __init__(self, limit: int = MAX_MESSAGES) -> None:
        self._messages: deque[Captured] = deque(maxlen=limit)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        captured = Captured(
            recipients=[str(r) for r in envelope.rcpt_tos],
            sender=str(envelope.mail_from or ""),
            subject=str(message.get("Subject", "")),
            body=_text(message),
            received_at=datetime.now(UTC).isoformat(),
            headers={h: str(message[h]) for h in SHOWN_HEADERS if message[h] is not None},
        )
        with self._lock:
            self._messages.append(captured)
        return "250 OK"

    def newest_first(self) -> list[Captured]:
        with self._lock:
            return list(reversed(self._messages))


def render_page(messages: list[Captured]) -> str:
    rows = "\n".join(
        "<tr>"
        f"<td><time>{html.escape(m.received_at)}</time></td>"
        f"<td>{html.escape(', '.join(m.recipients))}</td>"
        f"<td>{html.escape(m.subject)}</td>"
        f"<td><pre>{html.escape(m.body)}</pre></td>"
        f"<td>{html.escape(m.headers.get('X-CRM-Rule', ''))}</td>"
        "</tr>"
        for m in messages
    )
    empty = "" if messages else '<p id="empty">No mail yet. Notification sends here during <code>make run</code>.</p>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>crm dev mail ({len(messages)})</title>
<style>body{{font:14px system-ui,sans-serif;margin:1rem}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ccc;padding:.4rem;text-align:left;vertical-align:top}}
pre{{white-space:pre-wrap;margin:0;font:inherit}}</style></head>
<body><h1>Dev mail</h1><p>What notification sent during this run, newest first (kept in memory only).</p>
{empty}<table><thead><tr><th>Time (UTC)</th><th>Recipient</th><th>Subject</th><th>Body</th><th>Rule</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


class _Pages(BaseHTTPRequestHandler):
    mailbox: Mailbox  # set on the subclass made per server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        messages = self.mailbox.newest_first()
        if path == "/":
            self._answer(200, "text/html; charset=utf-8", render_page(messages).encode())
        elif path == "/messages.json":
            self._answer(200, "application/json", orjson.dumps([asdict(m) for m in messages]))
        else:
            self._answer(404, "application/json", orjson.dumps({"error": "not_found", "message": "no such page"}))

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the runner's output is for the services' logs


class MailSink:
    """The SMTP server and the page, each on its own thread; start() and stop()."""

    def __init__(self, smtp_port: int, http_port: int) -> None:
        """Port 0: any free one (aiosmtpd needs to know its port to check that it listens)."""
        smtp_port = smtp_port or free_port()
        self.mailbox = Mailbox()
        self.controller = Controller(self.mailbox, hostname=HOST, port=smtp_port)
        self.smtp_port = smtp_port
        pages = type("Pages", (_Pages,), {"mailbox": self.mailbox})
        self.http = ThreadingHTTPServer((HOST, http_port), pages)
        self.http.daemon_threads = True
        self._thread = threading.Thread(target=self.http.serve_forever, name="mail-page", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http.server_address[1]}/"

    def start(self) -> None:
        self.controller.start()
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever() that never ran
            self.http.shutdown()
            self.controller.stop()
        self.http.server_close()


@contextmanager
def mail_sink(smtp_port: int, http_port: int) -> Iterator[MailSink]:
    sink = MailSink(smtp_port, http_port)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
