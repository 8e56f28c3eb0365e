"""The embedded PostgreSQL runs with the settings sized for the machine, durability untouched."""

import asyncpg
from crmtools.infra import EmbeddedPostgres


async def test_settings_are_sized_for_the_machine_and_commits_stay_durable(postgres: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(postgres.dsn())
    try:
        shown = {name: await conn.fetchval(f"SHOW {name}") for name in (
            "shared_buffers", "max_wal_size", "min_wal_size", "checkpoint_timeout",
            "synchronous_commit", "fsync", "full_page_writes",
        )}  # fmt: skip
    finally:
        await conn.close()
    assert shown == {
        "shared_buffers": "1GB",
        "max_wal_size": "8GB",
        "min_wal_size": "1GB",
        "checkpoint_timeout": "15min",
        "synchronous_commit": "on",
        "fsync": "on",
        "full_page_writes": "on",
    }
