"""Wait until a service's database and topics are set up (the services' init container).

    python /scripts/wait-for-setup.py <service>   # DATABASE_URL and the Kafka settings from the environment

The Job crm-migrate-<service> applies the migrations (`crm migrate <service>`; the services run
with MIGRATE_ON_START=false) and the Job crm-topics makes the topics (`crm topics apply`).
`kubectl apply -k` creates Jobs and Deployments at once, so each pod waits here until the database
holds every migration this image ships and the broker has every topic, then starts on a schema it
knows. After WAIT_TIMEOUT_S it exits 1 naming what is missing (the kubelet then retries).
"""

import asyncio
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from eventkit.db import EVENTKIT_MIGRATIONS
from servicekit.settings import kafka_options

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

TOPICS = (*ALL_EVENT_TOPICS, DEADLETTER)


def shipped_migrations(service: str) -> set[str]:
    """The names db.migrate records for this image's files: <package>/<file>.sql."""
    spec = importlib.util.find_spec(service)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"unknown service {service!r}")
    directories = [EVENTKIT_MIGRATIONS, Path(next(iter(spec.submodule_search_locations))) / "migrations"]
    return {f"{d.parent.name}/{p.name}" for d in directories for p in d.glob("*.sql")}


async def missing_migrations(dsn: str, service: str) -> list[str]:
    """What the database still lacks; every shipped name while it has no schema_migrations."""
    wanted = shipped_migrations(service)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        rows = []
    finally:
        await conn.close()
    return sorted(wanted - {r["name"] for r in rows})


async def missing_topics(bootstrap: str, wanted: Sequence[str], options: dict[str, Any]) -> list[str]:
    """The wanted topics the broker does not list (a listing: asking for one by name could create it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
    await admin.start()
    try:
        listed = set(await admin.list_topics())
    finally:
        await admin.close()
    return [t for t in wanted if t not in listed]


async def missing(dsn: str, service: str, bootstrap: str, topics: Sequence[str], options: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for what, probe in (
        ("database", lambda: missing_migrations(dsn, service)),
        ("kafka", lambda: missing_topics(bootstrap, topics, options)),
    ):
        try:
            found += await probe()
        except Exception as exc:  # not reachable yet, or refused: wait and say which
            found.append(f"({what}: {type(exc).__name__})")
    return found


async def wait(
    dsn: str,
    service: str,
    bootstrap: str,
    timeout_s: float,
    topics: Sequence[str] = TOPICS,
    options: dict[str, Any] | None = None,
    interval_s: float = 2.0,
) -> list[str]:
    """Poll until nothing is missing ([]) or the time is up (what is still missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = await missing(dsn, service, bootstrap, topics, options if options is not None else kafka_options())
        if not left or time.monotonic() >= deadline:
            return left
        print(f"{service}: waiting for the setup Jobs: {', '.join(left[:5])}", flush=True)
        await asyncio.sleep(interval_s)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    service = argv[0]
    left = asyncio.run(
        wait(
            os.environ["DATABASE_URL"],
            service,
            os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            float(os.environ.get("WAIT_TIMEOUT_S", "300")),
        )
    )
    if left:
        print(f"{service}: still missing {', '.join(left)} (did crm-migrate-{service} and crm-topics run?)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"{service}: schema and topics in place", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
