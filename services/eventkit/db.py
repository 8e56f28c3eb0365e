"""PostgreSQL access: connection pools, database creation and a small migration runner.

Migrations are plain SQL files applied in name order, once each, under an advisory lock so
that two instances of a service starting together do not race.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

log = logging.getLogger(__name__)

EVENTKIT_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 7_300_001

# Errors after which the same work may succeed later: retry, answer 503, never 500.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # A connection whose previous operation was cut off by the outage ("another operation is in
    # progress"); the pool drops it on release.
    asyncpg.InternalClientError,
)

Pool = asyncpg.Pool
Connection = asyncpg.Connection
Record = asyncpg.Record


async def _init_connection(conn: asyncpg.Connection) -> None:
    for json_type in ("jsonb", "json"):  # event data is json (migration 006), the rest jsonb
        await conn.set_type_codec(
            json_type, schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads
        )


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the same codecs as the pools (jsonb as Python values)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


class PooledConnection(asyncpg.Connection):
    """A pooled connection released without asyncpg's reset query.

    The default reset (unlock all advisory locks, CLOSE ALL, UNLISTEN *, RESET ALL) is one more
    round trip on every release, about 4 % of intake's CPU under single POSTs. Pooled
    connections here hold only transaction-scoped locks and no cursors, listeners or session
    settings (those live on dedicated connections), so it would undo nothing; asyncpg still
    rolls back a transaction left open."""

    def get_reset_query(self) -> str:
        return ""


@contextlib.asynccontextmanager
async def transaction(conn: asyncpg.Connection, first: str) -> AsyncIterator[None]:
    """BEGIN ... COMMIT (ROLLBACK on an exception), with `first`, a statement without parameters,
    sent in the same round trip as the BEGIN: what conn.transaction() followed by that
    statement does in two. Every round trip of a write transaction is time its locks are held
    and its requests wait (under single POSTs intake's transactions were waiting on intake
    itself, between statements, most of their time)."""
    await conn.execute(f"BEGIN; {first}")
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):  # the connection broke: the server rolls back
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def create_pool(dsn: str, size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_init_connection,
        command_timeout=30,
        connection_class=PooledConnection,
    )
    assert pool is not None
    return pool


async def connect_with_retry(dsn: str, size: int, timeout_s: float = 60.0) -> asyncpg.Pool:
    """Wait for the database at start-up instead of crashing while it comes up."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await create_pool(dsn, size)
        except TRANSIENT_ERRORS as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("database not reachable yet: %s", type(exc).__name__)
            await asyncio.sleep(0.5)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def ensure_database(dsn: str) -> None:
    """Create the database named in dsn if it is missing (development and tests)."""
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def migration_files(directories: Sequence[Path]) -> list[tuple[str, Path]]:
    """Every migration in the order applied, with the name schema_migrations records it by."""
    return [(f"{d.parent.name}/{path.name}", path) for d in directories for path in sorted(d.glob("*.sql"))]


async def migrate(pool: asyncpg.Pool, directories: Sequence[Path]) -> list[str]:
    """Apply every not yet applied *.sql file; return the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for name, path in migration_files(directories):
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                applied_now.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def pending_migrations(pool: asyncpg.Pool, directories: Sequence[Path]) -> list[str]:
    """The migrations `migrate` would apply now, changing nothing (none applied yet: all)."""
    async with pool.acquire() as conn:
        done: set[str] = set()
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is not None:
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    return [name for name, _ in migration_files(directories) if name not in done]


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()
