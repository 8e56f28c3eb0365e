"""One service process: its database, producer, outbox relay, consumer and HTTP app.

A service's main.py describes itself with a ServiceSpec (name, projections, routers,
migrations); create_app() wires the rest the same way for all four.
"""

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
import orjson
import uvicorn
from aiokafka import AIOKafkaProducer
from eventkit import db
from eventkit.acceptance import Acceptance
from eventkit.consumer import IdempotentConsumer, Projection, StoredEventsApplier, Waiters
from eventkit.eventstore import EventStore
from eventkit.forgetful_broker import BrokerWatch
from eventkit.live import FeedOnLoop, TimelineFeed, heartbeat_stream
from eventkit.no_idempotence import PRODUCER_OPTIONS
from eventkit.outbox import OutboxRelay
from eventkit.signing import EventVerifier
from eventkit.telemetry import configure_logging, configure_tracing
from eventkit.thread_loop import LoopThread
from eventkit.topics import ensure_topics, partition_for_key
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from contracts.registry import REGISTRY
from contracts.security import SIGNED_TYPES
from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER, PROJECTED_WHEN_STORED
from servicekit import gc_tuning, timeline
from servicekit.auth import AuditLog, Authenticator, KeyProjection, RateLimiter, current_principal, require
from servicekit.http import (
    BodySizeLimit,
    OrjsonResponse,
    RequestMetrics,
    SafeUrl,
    decode_cursor,
    document_errors,
    install_error_handlers,
)
from servicekit.keyring import ErasureProjection, KeyRing, KeySource, remote_keyring
from servicekit.security_headers import SecurityHeaders
from servicekit.settings import Settings
from servicekit.streamtickets import StreamTickets, stream_caller
from servicekit.streamtickets import router as stream_tickets_router

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    name: str
    projections: Sequence[Projection] = ()
    routers: Sequence[APIRouter] = ()
    migrations: Sequence[Path] = ()
    title: str = ""
    description: str = ""
    body_limits: dict[str, int] = field(default_factory=dict)  # path -> bytes, over MAX_BODY_BYTES
    # Long-running loops of the service (durable timers, schedulers): started after the consumer,
    # restarted if they fail, cancelled at shutdown.
    background: Sequence[Callable[["Runtime"], Awaitable[None]]] = ()
    static: dict[str, Path] = field(default_factory=dict)  # URL prefix -> directory of files to serve
    # Where data keys come from: intake reads its own vault (key_source); a service that needs
    # the ring before the app exists passes it (keyring); otherwise one asking intake over HTTP.
    key_source: Callable[["Runtime"], KeySource] | None = None
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
class Runtime:
    """What routes and handlers need at run time; app.state.runtime."""

    settings: Settings
    spec: ServiceSpec
    store: EventStore
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


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def _start_producer(settings: Settings) -> AIOKafkaProducer:
    while True:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            linger_ms=settings.kafka_linger_ms,
            max_batch_size=512 * 1024,
            partitioner=partition_for_key,
            request_timeout_ms=15_000,
            **PRODUCER_OPTIONS,  # no idempotent producer on the embedded broker (no_idempotence.py)
            **settings.kafka_client_options(),
        )
        try:
            await producer.start()
            return producer
        except Exception as exc:
            await producer.stop()
            log.warning("broker not reachable yet: %s", type(exc).__name__)
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    rt: Runtime = app.state.runtime
    s = rt.settings
    refuse_bad_settings(s)
    rt.pool = await db.connect_with_retry(s.database_url, s.database_pool_size)
    applied = await db.migrate(rt.pool, [db.EVENTKIT_MIGRATIONS, *rt.spec.migrations])
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    if s.kafka_create_topics:
        await ensure_topics(
            s.kafka_bootstrap_servers,
            s.kafka_topic_partitions,
            s.kafka_replication_factor,
            [*ALL_EVENT_TOPICS, DEADLETTER],
            client_options=s.kafka_client_options(),
        )
    rt.producer = await _start_producer(s)
    projections: list[Projection] = [
        timeline.TimelineProjection(),
        KeyProjection(),
        ErasureProjection(rt.keyring),
        *rt.spec.projections,
    ]
    own_topic = PROJECTED_WHEN_STORED.get(rt.spec.name)
    if own_topic is not None:  # its own events go to its projections as they are stored
        rt.store.on_stored = StoredEventsApplier(s.service_name, projections).apply
    # and to its live timelines once committed, which is the consumer's job otherwise
    feed = FeedOnLoop(rt.feed, asyncio.get_running_loop()) if own_topic is not None else None
    relay = LoopThread(f"{s.service_name}-outbox-relay", functools.partial(_relay, rt, feed))
    rt.consumer = IdempotentConsumer(
        service=s.service_name,
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=s.kafka_consumer_group,
        topics=[t for t in ALL_EVENT_TOPICS if t != own_topic],
        pool=rt.pool,
        producer=rt.producer,
        projections=projections,
        waiters=rt.waiters,
        max_batch=s.consumer_max_batch,
        session_timeout_ms=s.kafka_session_timeout_ms,
        feed=rt.feed,
        commit_interval_ms=s.consumer_commit_interval_ms,
        fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        # What grants access is applied only if signed by a trusted key (docs/product.md §14). The service's
        # own stored events (intake's) are not checked: they were made here.
        acceptance=acceptance(s),
        deadletter_topic=DEADLETTER,
        client_options=s.kafka_client_options(),
    )
    await rt.consumer.start()
    relay.start()
    rt.tasks = [
        asyncio.create_task(_keep_running("consumer", rt.consumer.run), name="consumer"),
        asyncio.create_task(_keep_running("audit", rt.audit.run), name="audit"),
        *(
            asyncio.create_task(_keep_running(loop.__name__, functools.partial(loop, rt)), name=loop.__name__)
            for loop in rt.spec.background
        ),
    ]
    gc_tuning.settle(s.service_name)
    log.info("%s ready on %s:%s", s.service_name, s.http_host, s.http_port)
    try:
        yield
    finally:
        for task in rt.tasks:
            task.cancel()
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        await relay.stop()
        with contextlib.suppress(Exception):
            await rt.audit.flush()
        await rt.consumer.stop()
        await rt.producer.stop()
        await rt.pool.close()


def acceptance(settings: Settings) -> Acceptance:
    """What this service's consumer applies (and `crm replay` with it): events read from their
    type's own topic, signed where the type must be."""
    return Acceptance(
        schemas={name: t.model for name, t in REGISTRY.items()},
        checks=[EventVerifier(settings.auth_event_public_keys, SIGNED_TYPES)],
        home_topics={name: t.topic for name, t in REGISTRY.items()},
    )


async def _relay(rt: Runtime, feed: FeedOnLoop | None) -> None:
    """The outbox relay, on a thread and event loop of its own (eventkit.thread_loop), with a producer
    and broker check of its own too: aiokafka's clients belong to the loop they started on."""
    s = rt.settings
    producer = await _start_producer(s)
    watch = BrokerWatch(
        s.kafka_bootstrap_servers,
        [*ALL_EVENT_TOPICS, DEADLETTER],
        s.kafka_topic_partitions,
        s.kafka_replication_factor,
        s.service_name,
        client_options=s.kafka_client_options(),
    )
    rt.relay = OutboxRelay(
        s.database_url,
        producer,
        s.service_name,
        batch_size=s.outbox_batch_size,
        poll_interval_s=s.outbox_poll_interval_ms / 1000,
        broker_watch=watch,
        broker_check_interval_s=s.broker_check_interval_ms / 1000,
        feed=feed,
    )
    try:
        await rt.relay.run()
    finally:
        await watch.stop()
        await producer.stop()


async def _keep_running(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """A service loop must not die quietly: log, back off, go on."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s loop failed; restarting it", name)
            await asyncio.sleep(1.0)


# --- routes every service has ------------------------------------------------------------------

common = APIRouter()


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, bool] = Field(
        description="database, broker, consumer_assigned, and outbox_flowing: the event at the head of"
        " the outbox has not waited longer than OUTBOX_STUCK_AFTER_S, or the head has moved meanwhile"
        " (a backlog being worked off is flowing)"
    )
    outbox_oldest_age_s: float | None = Field(default=None, description="how long the oldest unpublished event waited")


class TimelineItem(BaseModel):
    event_id: str
    type: str = Field(description="The event type, e.g. crm.interaction.recorded.v1")
    time: str = Field(description="RFC 3339, when it happened")
    source: str = Field(description="The producing service, e.g. /crm/intake")
    subject: str = Field(description="The customer id it was recorded under (a merged id included)")
    data: dict[str, Any] = Field(description="The event's data; personal fields read [erased] after erasure")


class TimelinePage(BaseModel):
    customer_id: str
    events: list[TimelineItem] = Field(description="Newest first")
    next_before: str | None = Field(description="Pass as before for the next page; null on the last one")


class TimelineTimeout(TimelinePage):
    error: Literal["wait_timeout"]
    message: str


class DigestOut(BaseModel):
    customer_id: str
    events: int
    digest: str = Field(description="hex SHA-256 over the event ids, one per line, in (time, id) order")


class AuditRow(BaseModel):
    at: str = Field(description="RFC 3339")
    key_id: str
    method: str
    route: str = Field(description="The route template, never the raw path")
    customer_id: str | None
    target: dict[str, str] | None = Field(description="The route's other path parameters (case_id, key_id...)")
    status: int


class AuditPage(BaseModel):
    items: list[AuditRow]
    next_before: int | None = Field(description="Pass as before for the next page; null on the last one")


MERGED: dict[int | str, dict[str, Any]] = {308: {"description": "a merged customer: the same URL for the survivor"}}


@common.get("/healthz", tags=["operations"], summary="Alive", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@common.get(
    "/readyz",
    tags=["operations"],
    summary="Database and broker reachable, consumer assigned",
    responses={200: {"model": ReadyOut}, 503: {"model": ReadyOut, "description": "not ready: checks says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    rt = runtime(request)
    checks: dict[str, bool] = {"database": False, "broker": False, "consumer_assigned": False, "outbox_flowing": False}
    oldest_age: float | None = None
    if rt.pool is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0), rt.pool.acquire() as conn:
                checks["database"] = await conn.fetchval("SELECT true")
                head = await conn.fetchrow(_OUTBOX_HEAD)
                oldest_age = head["age"] if head else None
                checks["outbox_flowing"] = rt.outbox_head.flowing(head and head["position"], oldest_age)
    if rt.producer is not None:
        checks["broker"] = bool(rt.producer.client.cluster.brokers())
    if rt.consumer is not None:
        checks["consumer_assigned"] = bool(rt.consumer.assignment())
    ready = all(checks.values())
    body = {"ready": ready, "checks": checks, "outbox_oldest_age_s": oldest_age}
    return JSONResponse(body, 200 if ready else 503)


# The event at the head of the outbox and how long it has waited (no row: none waits). Parked
# events are out of the outbox: counted by crm_outbox_parked_events and alerted on, not held
# against readiness.
_OUTBOX_HEAD = (
    "SELECT position, extract(epoch FROM clock_timestamp() - queued_at)::float8 AS age"
    " FROM outbox ORDER BY position LIMIT 1"
)


@common.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@common.get(
    "/v1/customers/{customer_id}/timeline",
    tags=["timeline"],
    summary="The customer's timeline",
    dependencies=[require("agent")],
    # Documented, not validated: this is the hot read path (FastAPI would check every page).
    responses={
        200: {"model": TimelinePage},
        308: {"description": "a merged customer: the survivor's URL"},
        504: {
            "model": TimelineTimeout,
            "description": "wait_for: the event was not applied within timeout_ms; the current page anyway",
        },
    },
)
async def get_timeline(
    request: Request,
    customer_id: str,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="next_before of the previous page")] = None,
    wait_for: Annotated[uuid.UUID | None, Query(description="answer once this event is applied")] = None,
    timeout_ms: Annotated[int, Query(ge=0, le=30_000)] = 1000,
) -> Response:
    rt = runtime(request)
    cursor = decode_cursor(timeline.Cursor.decode, before)
    applied = True
    if wait_for is not None:
        applied = await timeline.wait_until_applied(rt.db, rt.waiters, wait_for, timeout_ms / 1000)
    async with rt.db.acquire() as conn:
        survivor, members = await timeline.resolve(conn, customer_id)
        if survivor is not None:
            return _redirect(request, customer_id, survivor)
        items, next_cursor = await timeline.page(conn, customer_id, limit, cursor, members)
    items = await rt.keyring.unseal_items(items)
    body = {
        "customer_id": customer_id,
        "events": items,
        "next_before": next_cursor.encode() if next_cursor else None,
    }
    if not applied:
        body["error"] = "wait_timeout"
        body["message"] = f"event {wait_for} not applied within {timeout_ms} ms; this is the current state"
        return OrjsonResponse(body, 504)
    return OrjsonResponse(body)


@common.get(
    "/v1/customers/{customer_id}/timeline/digest",
    tags=["timeline"],
    summary="Event count and SHA-256 over the event ids in canonical order (time, id)",
    dependencies=[require("agent")],
    responses={200: {"model": DigestOut}, **MERGED},
)
async def get_digest(request: Request, customer_id: str) -> Response:
    rt = runtime(request)
    async with rt.db.acquire() as conn:
        survivor, members = await timeline.resolve(conn, customer_id)
        if survivor is not None:
            return _redirect(request, customer_id, survivor)
        count, digest = await timeline.digest(conn, customer_id, members)
    return JSONResponse({"customer_id": customer_id, "events": count, "digest": digest})


@common.get(
    "/v1/customers/{customer_id}/timeline/stream",
    tags=["timeline"],
    summary="Server-sent events: each new timeline item as this service applies it (key or ?ticket=)",
    response_class=StreamingResponse,
    dependencies=[Depends(stream_caller)],
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "one `data:` line of JSON per timeline item"},
        401: {"description": "unauthenticated: no valid key, or the ticket is forged, expired, used or another's"},
        403: {"description": "forbidden: the key lacks the agent scope"},
        429: {"description": "rate_limited: too many requests for this key; retry after Retry-After seconds"},
        503: {"description": "unavailable: the key could not be checked; retry after Retry-After seconds"},
        **MERGED,
    },
)
async def stream_timeline(request: Request, customer_id: str) -> Response:
    rt = runtime(request)
    async with rt.db.acquire() as conn:
        survivor, members = await timeline.resolve(conn, customer_id)
        if survivor is not None:
            return _redirect(request, customer_id, survivor)
        _, seen_before = await timeline.digest(conn, customer_id, members)
    queue = rt.feed.subscribe(members)
    state = {"digest": seen_before}

    async def catch_up() -> list[dict[str, Any]]:
        async with rt.db.acquire() as conn:
            _, now = await timeline.digest(conn, customer_id)
            if now == state["digest"]:
                return []
            state["digest"] = now
            items, _ = await timeline.page(conn, customer_id, 50, None)
        return list(reversed(items))

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in heartbeat_stream(queue, catch_up, rt.keyring.unseal_items):
                yield chunk
        finally:
            rt.feed.unsubscribe(members, queue)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


@common.get(
    "/v1/admin/audit",
    tags=["admin"],
    summary="Who read or changed what here, newest first",
    dependencies=[require("admin")],
    responses={200: {"model": AuditPage}},
)
async def get_audit(
    request: Request,
    key_id: str | None = None,
    customer_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="next_before of the previous page")] = None,
) -> Response:
    rt = runtime(request)
    await rt.audit.flush()
    async with rt.db.acquire() as conn:
        items, next_before = await audit_page(conn, key_id, customer_id, limit, before)
    return JSONResponse({"items": items, "next_before": next_before})


async def audit_page(
    conn: asyncpg.Connection, key_id: str | None, customer_id: str | None, limit: int, before: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Audit rows newest first, and the cursor of the next page (None on the last one)."""
    rows = await conn.fetch(
        "SELECT id, at, key_id, method, route, customer_id, target, status FROM audit_log"
        " WHERE ($1::text IS NULL OR key_id = $1) AND ($2::text IS NULL OR customer_id = $2)"
        " AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $3",
        key_id,
        customer_id,
        limit,
        before,
    )
    items = [
        {k: v for k, v in r.items() if k != "id"}
        | {"at": r["at"].isoformat(), "target": orjson.loads(r["target"]) if r["target"] else None}
        for r in rows
    ]
    return items, rows[-1]["id"] if len(rows) == limit else None


def _redirect(request: Request, merged_id: str, survivor_id: str) -> RedirectResponse:
    """A merged customer's URLs answer 308 with the survivor's, query string kept."""
    url = request.url.path.replace(f"/customers/{merged_id}", f"/customers/{survivor_id}", 1)
    if request.url.query:
        url = f"{url}?{request.url.query}"
    return RedirectResponse(url, status_code=308)


def create_app(spec: ServiceSpec, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.for_service(spec.name)
    configure_logging(spec.name, settings.log_level)
    configure_tracing(spec.name, settings.otel_exporter_otlp_endpoint)
    app = FastAPI(
        title=spec.title or f"crm {spec.name}",
        description=spec.description,
        version="1.0.0",
        lifespan=lifespan,
        # Our middleware makes the one server span per request (route template, no raw paths that
        # hold customer ids); FastAPI's own tracing would add a second one.
        telemetry={"tracing": False},
    )
    app.state.runtime = Runtime(
        settings=settings, spec=spec, store=EventStore(spec.name, max_event_bytes=settings.event_max_bytes)
    )
    install_error_handlers(app)
    document_errors(app, current_principal)
    origins = [o.strip() for o in settings.cors_allow_origins.split(",") if o.strip()]
    if origins:  # the agent console calls every service from one page
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-Match"],
            expose_headers=["ETag", "Location", "Retry-After"],
        )
    app.add_middleware(SecurityHeaders, policies=spec.content_security)
    app.add_middleware(BodySizeLimit, default_bytes=settings.max_body_bytes, per_path=spec.body_limits)
    app.add_middleware(SafeUrl)
    app.add_middleware(RequestMetrics, service=spec.name)
    app.include_router(common)
    app.include_router(stream_tickets_router)
    for router in spec.routers:
        app.include_router(router)
    for prefix, directory in spec.static.items():
        app.mount(prefix, StaticFiles(directory=directory, html=True), name=prefix.strip("/"))
    return app


class StartupRefused(RuntimeError):
    """Settings a service must not run with (Settings.startup_problems)."""


def refuse_bad_settings(settings: Settings) -> None:
    problems = settings.startup_problems()
    if problems:
        message = f"{settings.service_name} refuses to start (CRM_ENV={settings.crm_env}): " + "; ".join(problems)
        log.error("%s", message)
        raise StartupRefused(message)


def serve(app: FastAPI) -> None:
    """Run one service in the foreground; SIGINT/SIGTERM stop it gracefully."""
    settings: Settings = app.state.runtime.settings
    try:
        refuse_bad_settings(settings)
    except StartupRefused as exc:  # before uvicorn: a clear message and exit status, not a traceback
        raise SystemExit(str(exc)) from None
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=5,
    )
