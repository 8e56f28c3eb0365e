"""Shared fixtures: a real PostgreSQL and a real Kafka-protocol broker for the whole session.

No fakes: the embedded stack from the PyPI wheels (the same one `make run` uses), on free
ports in a temporary directory, so tests never touch a running `make run`.
"""

import asyncio
import contextlib
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from crmtools.devstack import SERVICES, Stack
from crmtools.infra import EmbeddedBroker, EmbeddedPostgres
from crmtools.processes import free_port
from eventkit import db
from eventkit.signing import generate_key_pair
from pydantic import BaseModel

from contracts.registry import REGISTRY
from contracts.topics import DEADLETTER
from tests.notification.receivers import SmtpServer, smtp_server

# Every stack the tests start gets this admin key (services read AUTH_BOOTSTRAP_ADMIN_KEY, set by
# the Stack from CRM_ADMIN_KEY) and a rate limit no test reaches; the auth tests make other keys.
os.environ.setdefault("CRM_ADMIN_KEY", f"crm_test_{secrets.token_urlsafe(24)}")
os.environ.setdefault("RATE_LIMIT_PER_KEY_RPS", "1000000")
os.environ.setdefault("RATE_LIMIT_PER_KEY_BURST", "1000000")
os.environ.setdefault("AUTH_FAILURES_PER_ADDRESS_BURST", "1000000")  # the auth tests send many bad keys
ADMIN_KEY = os.environ["CRM_ADMIN_KEY"]
# Development defaults are accepted only with CRM_ENV=development; API key events are signed by
# a key pair made for the session (in-process services read these; stacks pass them on).
os.environ.setdefault("CRM_ENV", "development")
if "AUTH_EVENT_SIGNING_KEY" not in os.environ:
    _private, _public = generate_key_pair()
    os.environ["AUTH_EVENT_SIGNING_KEY_ID"] = "test"
    os.environ["AUTH_EVENT_SIGNING_KEY"] = _private
    os.environ["AUTH_EVENT_PUBLIC_KEYS"] = json.dumps({"test": _public})


# Every event type of the contracts with its payload model, for an eventkit Acceptance (the
# services' wiring passes eventkit the same).
SCHEMAS: dict[str, type[BaseModel]] = {name: t.model for name, t in REGISTRY.items()}


def auth_headers(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api_client(key: str | None = ADMIN_KEY, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client that calls the services with an API key (the admin key unless told)."""
    headers = {**(auth_headers(key) if key else {}), **kwargs.pop("headers", {})}
    return httpx.AsyncClient(headers=headers, **kwargs)


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedPostgres, EmbeddedBroker]]:
    data = tmp_path_factory.mktemp("infra")
    (data / "logs").mkdir()
    postgres = EmbeddedPostgres(data, free_port())
    broker = EmbeddedBroker(data / "logs" / "broker.log", free_port())
    postgres.start()
    broker.start()
    try:
        yield postgres, broker
    finally:
        broker.stop()
        postgres.stop()


@pytest.fixture(scope="session")
def postgres(infra: tuple[EmbeddedPostgres, EmbeddedBroker]) -> EmbeddedPostgres:
    return infra[0]


@pytest.fixture(scope="session")
def bootstrap(infra: tuple[EmbeddedPostgres, EmbeddedBroker]) -> str:
    return infra[1].bootstrap


async def fresh_database(postgres: EmbeddedPostgres, migrations: list[Path]) -> str:
    dsn = postgres.dsn(f"test_{uuid.uuid4().hex[:12]}")
    await db.ensure_database(dsn)
    pool = await db.create_pool(dsn, 2)
    try:
        await db.migrate(pool, [db.EVENTKIT_MIGRATIONS, *migrations])
    finally:
        await pool.close()
    return dsn


@pytest.fixture
async def dsn(postgres: EmbeddedPostgres) -> str:
    """A brand-new database with the eventkit tables, one per test."""
    return await fresh_database(postgres, [])


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with await db.create_pool(dsn, 5) as p:  # closed on the way out
        yield p


@pytest.fixture
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """A producer to the test broker, as the relay configures it (acks=all, no idempotence)."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await p.start()
    yield p
    await p.stop()


def unique_topic() -> str:
    return f"test.{uuid.uuid4().hex[:10]}"


async def produce_batch(producer: AIOKafkaProducer, topic: str, partition: int, n: int) -> None:
    """n messages sent together, so the broker stores them as one batch of several records (the
    case in which the embedded broker's ListOffsets answers too low)."""
    sends = [await producer.send(topic, b"x", partition=partition) for _ in range(n)]
    await asyncio.gather(*sends)


async def read_from_start(
    bootstrap: str,
    topic: str,
    timeout_s: float,
    enough: Callable[[list[ConsumerRecord[bytes, bytes]]], bool] = lambda _: False,
) -> list[ConsumerRecord[bytes, bytes]]:
    """What a new subscriber reading the topic from the start gets within timeout_s (sooner, once
    `enough` says so of what it has)."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not enough(got) and loop.time() < deadline:
            for records in (await reader.getmany(timeout_ms=200)).values():
                got.extend(records)
    finally:
        await reader.stop()
    return got


async def topic_and_dead_letters(bootstrap: str) -> str:
    """A new topic to consume from, and the dead-letter topic a consumer parks poison in."""
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    await make_topic(bootstrap, DEADLETTER)
    return topic


async def make_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


@contextlib.contextmanager
def running_stack(
    directory: Path, env: dict[str, str], services: Iterable[str] = SERVICES, **options: Any
) -> Iterator[Stack]:
    """A whole stack on free ports with these services running; stopped afterwards, whatever happens.

    A short session timeout, so a SIGKILLed member's partitions move on after seconds, not 30.
    `options` go to Stack: service_ports, or postgres_dsn and kafka_bootstrap of external infra.
    """
    options = {"pg_port": 0, "kafka_port": 0, "service_ports": {}, **options}
    stack = Stack(directory, env={"KAFKA_SESSION_TIMEOUT_MS": "6000", **env}, **options)
    stack.start_infra()
    try:
        stack.start_services(services)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server for a module's stack (smtp_env points the stack at it)."""
    with smtp_server() as server:
        yield server


def smtp_env(smtp: SmtpServer) -> dict[str, str]:
    """A stack's settings to mail through `smtp`, with notification looking for due sends often."""
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "NOTIFICATION_POLL_INTERVAL_MS": "100"}


T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 30, what: str = "") -> T:
    """The first non-None answer of probe(), asked every 0.1 s; AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.1)
