"""Stream tickets: how a browser opens the live timeline without putting its API key in a URL.

An EventSource cannot send an Authorization header, so the page first asks, with its key in the
header, `POST /v1/stream-tickets {"customer_id"}` of the service it will stream from, and opens
`/v1/customers/{customer_id}/timeline/stream?ticket=<ticket>`. A ticket is good for that one
route, that customer, that service and that key, for `STREAM_TICKET_SECONDS` (60), once.

A ticket is an HMAC-SHA256 over its claims, so the service checks it without a database round
trip: `STREAM_TICKET_SECRET` (shared by the replicas of a service behind one address), or a
random secret per process when not set, which is enough when the process that issues a ticket
also serves the stream. Used tickets are remembered per process until they expire. A revoked
key's tickets stop working when they expire, at the latest 60 s after the revocation.
"""

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from servicekit.auth import Principal, require
from servicekit.http import ApiError

PURPOSE = "timeline-stream"
MAX_TICKET_CHARS = 1024
MAX_REMEMBERED = 200_000  # used tickets kept until expiry; past this, new tickets are refused


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketRefused(Exception):
    """Why a ticket is not accepted (the message is safe to show the caller)."""


class StreamTickets:
    """Issues and redeems the tickets of one service (the audience)."""

    def __init__(
        self,
        audience: str,
        secret: str | None,
        ttl_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        # Derived, so the configured secret is used for nothing but stream tickets.
        raw = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hmac.new(raw, b"crm stream tickets v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self._clock = clock
        self._used: dict[str, float] = {}  # ticket id -> expiry

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, key_id: str, customer_id: str, expires_at: float | None = None) -> str:
        claims = {
            "use": PURPOSE,
            "aud": self.audience,
            "sub": key_id,
            "cid": customer_id,
            "exp": int(expires_at if expires_at is not None else self._clock() + self.ttl_s),
            "jti": secrets.token_urlsafe(12),
        }
        payload = _b64(orjson.dumps(claims))
        return f"{payload}.{self._mac(payload)}"

    def redeem(self, ticket: str, customer_id: str) -> str:
        """The key id the ticket was issued to; TicketRefused if it is not good for this stream now.
        A ticket redeemed once is refused afterwards."""
        if len(ticket) > MAX_TICKET_CHARS or ticket.count(".") != 1:
            raise TicketRefused("not a stream ticket")
        payload, mac = ticket.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise TicketRefused("not a stream ticket issued by this service")
        try:
            claims = orjson.loads(_unb64(payload))
        except ValueError as exc:  # cannot happen for a ticket we signed; kept for safety
            raise TicketRefused("not a stream ticket") from exc
        if claims.get("use") != PURPOSE or claims.get("aud") != self.audience:
            raise TicketRefused("this ticket is not for this service's timeline stream")
        if claims.get("cid") != customer_id:
            raise TicketRefused("this ticket is for another customer")
        now = self._clock()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise TicketRefused("this ticket has expired; ask for a new one")
        self._forget_expired(now)
        jti = str(claims.get("jti"))
        if jti in self._used:
            raise TicketRefused("this ticket was used already; ask for a new one")
        if len(self._used) >= MAX_REMEMBERED:
            raise TicketRefused("too many tickets in use; try again shortly")
        self._used[jti] = claims["exp"]
        return str(claims["sub"])

    def _forget_expired(self, now: float) -> None:
        if len(self._used) < 1024:
            return
        self._used = {jti: exp for jti, exp in self._used.items() if exp > now}


def tickets_of(request: Request) -> StreamTickets:
    tickets: StreamTickets = request.app.state.runtime.tickets
    return tickets


async def stream_caller(
    request: Request,
    customer_id: str,
    ticket: Annotated[
        str | None, Query(max_length=MAX_TICKET_CHARS, description="from POST /v1/stream-tickets, for browsers")
    ] = None,
) -> Principal:
    """The caller of the timeline stream: an Authorization header as everywhere, or a ticket."""
    if ticket is None or request.headers.get("authorization"):
        principal = await request.app.state.runtime.auth.authenticate(request)
        if not principal.allows("agent"):
            raise ApiError(403, "forbidden", "this key may not do this; it needs one of: agent", required=["agent"])
        return principal
    try:
        key_id = tickets_of(request).redeem(ticket, customer_id)
    except TicketRefused as exc:
        raise ApiError(401, "unauthenticated", str(exc)) from exc
    principal = Principal(key_id, "stream ticket", frozenset({"agent"}))
    request.state.principal = principal  # audited as the key the ticket was issued to
    return principal


router = APIRouter()


class TicketIn(BaseModel):
    customer_id: str = Field(min_length=1, max_length=200, description="The customer whose timeline to stream")


class TicketOut(BaseModel):
    ticket: str = Field(description="Pass as ?ticket= to this service's /v1/customers/{customer_id}/timeline/stream")
    expires_in: int = Field(description="Seconds it stays valid; it is good for one request")


@router.post(
    "/v1/stream-tickets",
    operation_id="createStreamTicket",
    tags=["timeline"],
    summary="A short-lived, single-use ticket to open this customer's timeline stream here (for browsers)",
    response_model=TicketOut,
)
async def issue_ticket(
    request: Request, body: TicketIn, principal: Annotated[Principal, require("agent")]
) -> TicketOut:
    tickets = tickets_of(request)
    return TicketOut(ticket=tickets.issue(principal.key_id, body.customer_id), expires_in=tickets.ttl_s)
