"""What intake's handler tests share: a database with intake's migrations, a store, a vault, items."""

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.eventstore import EventStore
from intake import domain, recording
from intake.vault import Vault

from tests.conftest import fresh_database

MIGRATIONS = [Path(domain.__file__).parent / "migrations"]
store = EventStore("intake-test")
vault = Vault(os.urandom(32))


def item(
    email: str, content: str, client_id: str | None = None, customer_id: str | None = None, verified: bool = False
) -> recording.Item:
    """A chat message from `email` (or from the customer `customer_id`, by id alone); `verified`:
    from a key that verifies identities."""
    cmd = domain.RecordInteraction(
        channel="chat",
        direction="inbound",
        kind="message",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        identifiers=(domain.normalise_email(email),) if customer_id is None else (),
        customer_id=customer_id,
        content=content,
        verified=verified,
    )
    digest = hashlib.sha256(f"{email}|{content}|{customer_id}".encode()).hexdigest()
    return recording.Item(cmd, digest, f"client:chat:{client_id}" if client_id else None)


@pytest.fixture(scope="module")
async def intake_dsn(postgres: EmbeddedPostgres) -> str:
    return await fresh_database(postgres, MIGRATIONS)


@pytest.fixture
async def pool(intake_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on intake's test database (tests that make their own pools take intake_dsn)."""
    async with await db.create_pool(intake_dsn, 10) as p:
        yield p
