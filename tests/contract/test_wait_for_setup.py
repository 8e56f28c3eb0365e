"""deploy/k8s/wait-for-setup.py, the services' init container, against the real PostgreSQL and the
embedded broker: it holds a pod until the setup Jobs' work (migrations, topics) is there."""

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType

from crmtools.infra import EmbeddedPostgres
from eventkit import db

from tests.conftest import make_topic, unique_topic

ROOT = Path(__file__).resolve().parents[2]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wait_for_setup", ROOT / "deploy/k8s/wait-for-setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_waits_until_every_shipped_migration_is_applied(postgres: EmbeddedPostgres) -> None:
    script = load_script()
    dsn = postgres.dsn(f"test_{uuid.uuid4().hex[:12]}")
    await db.ensure_database(dsn)  # what the operator provisions: an empty database
    shipped = script.shipped_migrations("case")
    assert "eventkit/001_eventkit.sql" in shipped and "case/001_cases.sql" in shipped
    assert await script.missing_migrations(dsn, "case") == sorted(shipped)
    pool = await db.create_pool(dsn, 2)
    try:
        await db.migrate(pool, [db.EVENTKIT_MIGRATIONS])  # half done: the service's own still missing
        assert await script.missing_migrations(dsn, "case") == sorted(n for n in shipped if n.startswith("case/"))
        await db.migrate(pool, [db.EVENTKIT_MIGRATIONS, ROOT / "services/case/migrations"])  # what crm migrate does
    finally:
        await pool.close()
    assert await script.missing_migrations(dsn, "case") == []


async def test_waits_for_the_topics_and_gives_up_naming_what_is_missing(
    postgres: EmbeddedPostgres, bootstrap: str
) -> None:
    script = load_script()
    dsn = postgres.dsn(f"test_{uuid.uuid4().hex[:12]}")
    await db.ensure_database(dsn)
    pool = await db.create_pool(dsn, 2)
    try:
        await db.migrate(pool, [db.EVENTKIT_MIGRATIONS, ROOT / "services/analytics/migrations"])
    finally:
        await pool.close()
    topics = [unique_topic(), unique_topic()]
    await make_topic(bootstrap, topics[0])
    left = await script.wait(dsn, "analytics", bootstrap, timeout_s=0, topics=topics, options={})
    assert left == [topics[1]]  # listing the topics did not create it
    await make_topic(bootstrap, topics[1])
    assert await script.wait(dsn, "analytics", bootstrap, timeout_s=0, topics=topics, options={}) == []
    unreachable = await script.wait("postgresql://nobody@127.0.0.1:1/x", "analytics", bootstrap, 0, topics, {})
    assert unreachable and unreachable[0].startswith("(database: ")
