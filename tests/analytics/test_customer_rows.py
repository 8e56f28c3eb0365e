"""analytics_customers written a batch at a time, on a real PostgreSQL: every column comes back
as it went in (the array of complaint times and the JSON risk reasons travel as text), and a
second write of the same customers replaces their rows."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from analytics import store
from crmtools.infra import EmbeddedPostgres
from eventkit import db

from tests.conftest import fresh_database

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "analytics" / "migrations"
AT = datetime(2026, 3, 2, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    async with await db.create_pool(await fresh_database(postgres, [MIGRATIONS]), 2) as p:
        yield p


def row(customer_id: str, n: int, complaints: list[datetime], reasons: list[dict[str, Any]]) -> tuple[Any, ...]:
    return (customer_id, AT, "DE-BE", n % 2 == 0, AT + timedelta(hours=n), n, 1, Decimal("19.90"),
            len(complaints), complaints, 0, 1, 9 if n else None, 40 + n, "medium", reasons, "loyal",
            AT + timedelta(hours=n))  # fmt: skip


async def test_a_batch_of_customers_round_trips_and_a_second_write_replaces_them(pool: asyncpg.Pool) -> None:
    reasons = [{"code": "complaints", "detail": 'two "recent" complaints, one, two'}]
    first = [
        row("a", 0, [], []),
        row("b", 1, [AT, AT - timedelta(days=3, microseconds=1)], reasons),
        row("c", 2, [AT.astimezone(UTC) - timedelta(minutes=5)], [{"code": "quiet"}]),
    ]
    async with pool.acquire() as conn:
        await store.write_customers(conn, first)
        await store.write_customers(conn, [])
        second = [row("b", 3, [AT], []), row("d", 4, [], reasons)]
        await store.write_customers(conn, second)
        got = {r["customer_id"]: tuple(r.values()) for r in await store.customers(conn, {"a", "b", "c", "d"})}
    assert got == {r[0]: r for r in [first[0], second[0], first[2], second[1]]}
