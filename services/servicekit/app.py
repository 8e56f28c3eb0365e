"""One service process: its database, producer, outbox relay, consumer and HTTP app.

A service's main.py describes itself with a ServiceSpec (name, subscribers, routers,
migrations); create_app() wires the rest the same way for all four.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import uvicorn
from aiokafka import AIOKafkaProducer
from eventkit import db
from eventkit.acceptance import Acceptance
from eventkit.consumer import IdempotentConsumer, StoredEventsApplier, Subscriber, Waiters
from eventkit.eventstore import EventStore
from eventkit.forgetful_broker import BrokerWatch
from eventkit.live import FeedOnLoop
from eventkit.no_idempotence import PRODUCER_OPTIONS
from eventkit.outbox import OutboxRelay
from eventkit.signing import EventVerifier
from eventkit.telemetry import configure_logging, configure_tracing
from eventkit.thread_loop import LoopThread
from eventkit.topics import ensure_topics, partition_for_key
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from contracts.registry import REGISTRY, schema_id
from contracts.security import SIGNED_TYPES
from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER, PROJECTED_WHEN_STORED
from servicekit import gc_tuning, migrations, timeline, topic_plan
from servicekit.apidocs import declare_security, install_docs
from servicekit.auth import KeyProjection, current_principal
from servicekit.http import (
    BodySizeLimit,
    RequestMetrics,
    SafeUrl,
    document_errors,
    install_error_handlers,
)
from servicekit.keyring import ErasedKeyEviction
from servicekit.routes import common
from servicekit.runtime import C, Runtime, S, ServiceSpec
from servicekit.security_headers import SecurityHeaders
from servicekit.settings import Settings
from servicekit.streamtickets import router as stream_tickets_router
from servicekit.timeline_count import count_settled_timeline

log = logging.getLogger(__name__)


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
    rt: Runtime[Settings, Any] = app.state.runtime
    s = rt.settings
    refuse_bad_settings(s)
    topics = topic_plan.service_topics(s)
    rt.pool = await db.connect_with_retry(s.database_url, s.database_pool_size)
    await migrations.on_start(rt.pool, s, migrations.directories(rt.spec.migrations))
    if s.kafka_create_topics:
        await ensure_topics(s.kafka_bootstrap_servers, topics, client_options=s.kafka_client_options())
    rt.producer = await _start_producer(s)
    for step in rt.spec.before_consumer:
        await step(rt)
    subscribers: list[Subscriber] = [
        timeline.TimelineProjection(),
        KeyProjection(),
        ErasedKeyEviction(rt.keyring),
        *rt.spec.subscribers,
    ]
    own_topic = PROJECTED_WHEN_STORED.get(rt.spec.name)
    if own_topic is not None:  # its own events go to its subscribers as they are stored,
        # but not into its timeline table: its timeline reads them from its event store
        stored = [timeline.TimelineProjection(rows=False), *subscribers[1:]]
        rt.events.on_stored = StoredEventsApplier(s.service_name, stored).apply
    # and to its live timelines once committed, which is the consumer's job otherwise
    feed = FeedOnLoop(rt.feed, asyncio.get_running_loop()) if own_topic is not None else None
    relay = LoopThread(f"{s.service_name}-outbox-relay", functools.partial(_relay, rt, feed))
    rt.consumer = runtime_consumer(
        rt,
        service=s.service_name,
        group_id=s.kafka_consumer_group,
        topics=[t for t in ALL_EVENT_TOPICS if t != own_topic],
        subscribers=subscribers,
        waiters=rt.waiters,
        feed=rt.feed,
    )
    await rt.consumer.start()
    relay.start()
    rt.tasks = [
        asyncio.create_task(_keep_running("consumer", rt.consumer.run), name="consumer"),
        asyncio.create_task(_keep_running("audit", rt.audit.run), name="audit"),
        asyncio.create_task(_keep_running("timeline count", functools.partial(count_settled_timeline, rt))),
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


def runtime_consumer(
    rt: Runtime[S, C],
    *,
    service: str,
    group_id: str,
    topics: Sequence[str],
    subscribers: Sequence[Subscriber],
    waiters: Waiters,
    **options: Any,
) -> IdempotentConsumer:
    """A consumer on the runtime's database and producer, with the service's Kafka settings and
    acceptance (`options`: feed, applied_table)."""
    s = rt.settings
    assert rt.producer is not None, "the producer starts before the consumers"
    return IdempotentConsumer(
        service=service,
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=group_id,
        topics=topics,
        pool=rt.db,
        producer=rt.producer,
        subscribers=subscribers,
        waiters=waiters,
        max_batch=s.consumer_max_batch,
        session_timeout_ms=s.kafka_session_timeout_ms,
        commit_interval_ms=s.consumer_commit_interval_ms,
        fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        # What grants access is applied only if signed by a trusted key (docs/product.md §14). The service's
        # own stored events (intake's) are not checked: they were made here.
        acceptance=acceptance(s),
        deadletter_topic=DEADLETTER,
        client_options=s.kafka_client_options(),
        **options,
    )


async def _relay(rt: Runtime[Settings, Any], feed: FeedOnLoop | None) -> None:
    """The outbox relay, on a thread and event loop of its own (eventkit.thread_loop), with a producer
    and broker check of its own too: aiokafka's clients belong to the loop they started on."""
    s = rt.settings
    producer = await _start_producer(s)
    watch = BrokerWatch(
        s.kafka_bootstrap_servers,
        topic_plan.service_topics(s),
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
        dataschema=schema_id,
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


def create_app(spec: ServiceSpec[S, C], settings: S, context: C) -> FastAPI:
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
        # FastAPI's pages load from a CDN; install_docs serves them from here.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = Runtime(
        settings=settings,
        spec=spec,
        events=EventStore(spec.name, max_event_bytes=settings.event_max_bytes),
        context=context,
    )
    install_error_handlers(app)
    document_errors(app, current_principal, then=[declare_security])
    install_docs(app)
    origins = [o.strip() for o in settings.cors_allow_origins.split(",") if o.strip()]
    if origins:  # the agent console calls every service from one page
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-Match"],
            expose_headers=["ETag", "Location", "Retry-After", "Content-Disposition"],
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
    problems = settings.startup_problems() + topic_plan.problems(settings)
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
