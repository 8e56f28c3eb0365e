"""What a service is (ServiceSpec) and what its routes and loops get at run time (Runtime).

Runtime is generic over the service's settings and its own context (case's rules and calendar,
intake's vault...), so a route declares `rt: <Service>Runtime` (the service's deps.py) and gets
both typed, with no casts.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from eventkit.consumer import IdempotentConsumer, Subscriber, Waiters
from eventkit.eventstore import EventStore
from eventkit.live import TimelineFeed
from eventkit.outbox import OutboxRelay
from fastapi import APIRouter, Request

from servicekit.auth import AuditLog, Authenticator, RateLimiter
from servicekit.keyring import KeyRing, KeySource, remote_keyring
from servicekit.settings import Settings
from servicekit.streamtickets import StreamTickets
from servicekit.timeline import own_events

S = TypeVar("S", bound=Settings)
C = TypeVar("C")


@dataclass
class ServiceSpec(Generic[S, C]):
    name: str
    subscribers: Sequence[Subscriber] = ()
    routers: Sequence[APIRouter] = ()
    migrations: Sequence[Path] = ()
    title: str = ""
    description: str = ""
    body_limits: dict[str, int] = field(default_factory=dict)  # path -> bytes, over MAX_BODY_BYTES
    # Long-running loops of the service (durable timers, schedulers): started after the consumer,
    # restarted if they fail, cancelled at shutdown.
    background: Sequence[Callable[["Runtime[S, C]"], Awaitable[None]]] = ()
    # Run once at start, after the migrations and before the consumer starts (analytics retires
    # the consumer group it no longer uses); one that fails stops the start.
    before_consumer: Sequence[Callable[["Runtime[S, C]"], Awaitable[None]]] = ()
    static: dict[str, Path] = field(default_factory=dict)  # URL prefix -> directory of files to serve
    # Where data keys come from: intake reads its own vault (key_source); a service that needs
    # the ring before the app exists passes it (keyring); otherwise one asking intake over HTTP.
    key_source: Callable[["Runtime[S, C]"], KeySource] | None = None
    keyring: KeyRing | None = None
    # URL prefix -> Content-Security-Policy (a page it serves); JSON routes get headers.API_POLICY.
    content_security: dict[str, str] = field(default_factory=dict)


@dataclass
class OutboxHead:
    """What readiness probes saw of the outbox's head: stuck only when the head has waited past
    the threshold and stayed the same for as long, so that a backlog being worked off (all the
    replicas of a service share one outbox) never takes the service out of rotation."""

    stuck_after_s: float
    position: int | None = None
    since: float = 0.0  # monotonic time this process first saw that head

    def flowing(self, position: int | None, age: float | None, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if position != self.position:
            self.position, self.since = position, now
        return age is None or age <= self.stuck_after_s or now - self.since <= self.stuck_after_s


@dataclass
class Runtime(Generic[S, C]):
    """What routes and handlers need at run time; app.state.runtime."""

    settings: S
    spec: ServiceSpec[S, C]
    events: EventStore  # the service's event store (not its store.py, which holds its own SQL)
    context: C  # the service's own: made in its main.py, handed to create_app
    waiters: Waiters = field(default_factory=Waiters)
    feed: TimelineFeed = field(default_factory=TimelineFeed)
    auth: Authenticator = field(init=False)
    audit: AuditLog = field(init=False)
    keyring: KeyRing = field(init=False)
    outbox_head: OutboxHead = field(init=False)
    tickets: StreamTickets = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.tickets = StreamTickets(s.service_name, s.stream_ticket_secret, s.stream_ticket_seconds)
        limiter = RateLimiter(s.rate_limit_per_key_rps, s.rate_limit_per_key_burst)
        failures = RateLimiter(s.auth_failures_per_address_rps, s.auth_failures_per_address_burst)
        self.auth = Authenticator(lambda: self.pool, s.auth_bootstrap_admin_key, limiter, failures, s.auth_required)
        self.audit = AuditLog(lambda: self.pool, s.service_name)
        self.outbox_head = OutboxHead(s.outbox_stuck_after_s)
        if self.spec.keyring is not None:
            self.keyring = self.spec.keyring
        elif self.spec.key_source is not None:
            self.keyring = KeyRing(self.spec.key_source(self), ttl_s=s.key_cache_seconds)
        else:
            self.keyring = remote_keyring(s)

    pool: asyncpg.Pool | None = None
    producer: AIOKafkaProducer | None = None
    consumer: IdempotentConsumer | None = None
    relay: OutboxRelay | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "service not started"
        return self.pool

    @property
    def own_events(self) -> bool:
        """Whether this service's timeline reads take its own events from its event store."""
        return own_events(self.spec.name)


def runtime_of(request: Request) -> Runtime[Any, Any]:
    rt: Runtime[Any, Any] = request.app.state.runtime
    return rt


async def runtime(request: Request) -> Runtime[Any, Any]:
    """The FastAPI dependency behind every service's typed `<Service>Runtime` (its deps.py).
    Async on purpose: FastAPI runs a plain `def` dependency on a worker thread, a thread hop per
    request (tests/contract/test_async_routes.py keeps every dependency async)."""
    return runtime_of(request)
