"""Delivery adapters: email over SMTP, signed webhooks over HTTP(S), SMS through a provider webhook.

Each adapter sends one message and either returns (accepted; `delivered` when the receiver
confirmed it) or raises DeliveryError with a machine-readable reason and whether trying again
can help. Retries, backoff and records are the delivery loop's business (worker.py).

Webhook signature: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature:
v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`), so receivers can use a stock verifier.
The id is the notification id, the same on every retry (also sent as `Idempotency-Key`, and in
the body), so receivers deduplicate on a signed value; they reject timestamps more than a few
minutes off (replay). The older `X-CRM-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
with `X-CRM-Timestamp` is still sent, deprecated (gone in 0.3.0); verify_signature() checks it.
"""

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from functools import cached_property
from typing import Any, Protocol

import aiosmtplib
import httpx
import orjson

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # a Standard Webhooks secret: the prefix, then the key in base64
# Deprecated (the scheme of 0.1): still sent so receivers can move over; removed in 0.3.0.
SIGNATURE_HEADER = "X-CRM-Signature"
TIMESTAMP_HEADER = "X-CRM-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MESSAGE_ID_DOMAIN = "notification.crm"


@dataclass(frozen=True)
class Message:
    notification_id: str
    rule: str
    customer_id: str
    channel: str
    address: str
    language: str
    subject: str
    body: str
    source_event_id: str


@dataclass(frozen=True)
class Accepted:
    delivered: bool  # the receiver confirmed it (a webhook's 2xx), not just a relay accepting it


class DeliveryError(Exception):
    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Sender(Protocol):
    async def send(self, message: Message) -> Accepted: ...


def message_id(notification_id: str) -> str:
    return f"<{notification_id}@{MESSAGE_ID_DOMAIN}>"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: str = "none"  # none | starttls | implicit
    username: str | None = None
    password: str | None = None
    sender: str = "crm@example.com"
    timeout_s: float = 10.0


class SmtpSender:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def build(self, m: Message) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.config.sender
        email["To"] = m.address
        email["Subject"] = m.subject
        email["Date"] = formatdate(usegmt=True)
        # Deterministic per (rule, event, recipient): receivers and mail clients can spot a copy.
        email["Message-ID"] = message_id(m.notification_id)
        email["X-CRM-Notification-Id"] = m.notification_id
        email["X-CRM-Rule"] = m.rule
        email.set_content(m.body)
        email["Content-Language"] = m.language  # after set_content, which clears Content-* headers
        return email

    async def send(self, m: Message) -> Accepted:
        c = self.config
        try:
            await aiosmtplib.send(
                self.build(m),
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.tls == "implicit",
                start_tls=c.tls == "starttls",
                timeout=c.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(f"smtp_{codes[0] if codes else 550}", permanent=all(x >= 500 for x in codes)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the server's final answer (unknown mailbox, refused); 4xx may pass later.
            raise DeliveryError(f"smtp_{exc.code}", permanent=exc.code >= 500) from exc
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise DeliveryError("timeout") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError("connection_error") from exc
        return Accepted(delivered=False)  # SMTP acceptance is a relay's, not the reader's


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key of WEBHOOK_SECRET: a `whsec_<base64>` secret decoded, as
    receivers' libraries decode it; any other secret's UTF-8 bytes, so an existing plain secret
    keeps working and its receivers' secret is standard_secret() of it. ValueError if not base64."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Padding added as the reference libraries do: secrets are often shown without it.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the part after {SECRET_PREFIX} is not base64") from exc
    if not key:
        raise ValueError(f"nothing after {SECRET_PREFIX}")
    return key


def standard_secret(secret: str) -> str:
    """WEBHOOK_SECRET as a receiver's Standard Webhooks library takes it (`whsec_` + base64 key)."""
    return SECRET_PREFIX + base64.b64encode(signing_key(secret)).decode()


def standard_signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of `<id>.<timestamp>.<body>`."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The deprecated `X-CRM-Signature` value (keyed with WEBHOOK_SECRET as written)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify_signature(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver of the deprecated scheme checks: the signature over timestamp and body,
    and a fresh timestamp. Standard Webhooks receivers use their library's verifier instead."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    signature = lower.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# Answers after which the same request may succeed later; any other 4xx is final.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class WebhookPoster:
    def __init__(self, secret: str, timeout_s: float, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        self.clock = clock

    @cached_property
    def key(self) -> bytes:
        # On first use, not at wiring: a malformed secret is refused at start-up with its reason
        # (NotificationSettings.startup_problems), not as a traceback while importing.
        return signing_key(self.secret)

    async def post(self, url: str, payload: dict[str, Any], idempotency_key: str) -> Accepted:
        """`idempotency_key` (the notification id) is also the webhook-id: the same on every retry."""
        body = orjson.dumps(payload)
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            WEBHOOK_ID_HEADER: idempotency_key,
            WEBHOOK_TIMESTAMP_HEADER: timestamp,
            WEBHOOK_SIGNATURE_HEADER: standard_signature(self.key, idempotency_key, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            IDEMPOTENCY_HEADER: idempotency_key,
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError("timeout") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError("connection_error") from exc
        status = response.status_code
        if 200 <= status < 300:
            return Accepted(delivered=True)
        raise DeliveryError(f"http_{status}", permanent=400 <= status < 500 and status not in _RETRYABLE_4XX)


def webhook_payload(m: Message) -> dict[str, Any]:
    return {
        "notification_id": m.notification_id,
        "rule": m.rule,
        "customer_id": m.customer_id,
        "source_event_id": m.source_event_id,
        "language": m.language,
        "subject": m.subject,
        "body": m.body,
    }


class WebhookSender:
    def __init__(self, poster: WebhookPoster) -> None:
        self.poster = poster

    async def send(self, m: Message) -> Accepted:
        return await self.poster.post(m.address, webhook_payload(m), m.notification_id)


class SmsSender:
    """SMS through the provider's webhook (signed like ours); the provider's 2xx is acceptance."""

    def __init__(self, poster: WebhookPoster, provider_url: str | None) -> None:
        self.poster = poster
        self.provider_url = provider_url

    async def send(self, m: Message) -> Accepted:
        if not self.provider_url:
            raise DeliveryError("sms_not_configured", permanent=True)
        payload = {"notification_id": m.notification_id, "to": m.address, "text": f"{m.subject}: {m.body}"}
        await self.poster.post(self.provider_url, payload, m.notification_id)
        return Accepted(delivered=False)


class Senders:
    """The adapter per channel."""

    def __init__(self, by_channel: Mapping[str, Sender]) -> None:
        self.by_channel = dict(by_channel)

    async def send(self, m: Message) -> Accepted:
        sender = self.by_channel.get(m.channel)
        if sender is None:
            raise DeliveryError(f"no_adapter_{m.channel}", permanent=True)
        return await sender.send(m)
