"""A service's database migrations: applied at start (MIGRATE_ON_START, the default), or by
`crm migrate <service>` before the services start (a Kubernetes Job), in which case a service
refuses to start on a database that lacks one, naming it, rather than serve a wrong schema."""

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

from eventkit import db

from servicekit.settings import Settings

log = logging.getLogger(__name__)


class NotMigrated(RuntimeError):
    """MIGRATE_ON_START=false and the database lacks a migration of this service."""


def directories(service_migrations: Sequence[Path]) -> list[Path]:
    """eventkit's migrations, then the service's own (its ServiceSpec.migrations), in the order
    they are applied."""
    return [db.EVENTKIT_MIGRATIONS, *service_migrations]


def service_directories(service: str) -> list[Path]:
    """directories() of a service by name, without importing its wiring (main.py makes the app):
    each service's ServiceSpec names the `migrations` folder of its package."""
    found = importlib.util.find_spec(service)
    if found is None or found.origin is None:
        raise LookupError(f"no package {service}")
    return directories([Path(found.origin).parent / "migrations"])


def not_migrated_reason(service: str, missing: Sequence[str]) -> str:
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return (
        f"{service}: database lacks migration {missing[0]}{more} and MIGRATE_ON_START=false;"
        f" run `crm migrate {service}` first"
    )


async def on_start(pool: db.Pool, settings: Settings, dirs: Sequence[Path]) -> None:
    """Migrate (MIGRATE_ON_START=true) or check that nothing is left to migrate (NotMigrated)."""
    if settings.migrate_on_start:
        applied = await db.migrate(pool, dirs)
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))
        return
    missing = await db.pending_migrations(pool, dirs)
    if missing:
        reason = not_migrated_reason(settings.service_name, missing)
        log.error("%s", reason)
        raise NotMigrated(reason)


async def migrate_service(service: str, database_url: str, wait_s: float = 60.0) -> list[str]:
    """What `crm migrate <service>` does: the service's migrations, as its start would apply
    them, against its database (waited for up to `wait_s`); the names applied now."""
    pool = await db.connect_with_retry(database_url, 1, timeout_s=wait_s)
    try:
        return await db.migrate(pool, service_directories(service))
    finally:
        await pool.close()
