"""`crm migrate <service> | --all`: a service's database migrations, applied and done.

The same migrations, in the same order, that a service applies at start with MIGRATE_ON_START=true
(servicekit/migrations.py). Kubernetes runs it in a Job before the services, which then run with
MIGRATE_ON_START=false and refuse to start on a database that lacks one.

The database is the service's DATABASE_URL (CRM_<SERVICE>_DATABASE_URL first, as for every crm
command). DATABASE_URL names one database, so --all takes each service's from
CRM_<SERVICE>_DATABASE_URL, or `make run`'s when DATABASE_URL is not set either.
"""

import os
import sys
from collections.abc import Sequence
from typing import TextIO

import asyncpg
from eventkit import db
from servicekit.migrations import migrate_service
from servicekit.settings import Settings


def database_url(service: str, several: bool) -> str:
    if url := os.environ.get(f"CRM_{service.upper()}_DATABASE_URL"):
        return url
    if several and os.environ.get("DATABASE_URL"):
        raise LookupError(f"DATABASE_URL is one database: set CRM_{service.upper()}_DATABASE_URL for --all")
    return Settings.for_service(service).database_url


async def migrate(
    services: Sequence[str], wait_s: float = 60.0, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """0 when every service's database has all its migrations; 1 with a one-line reason (the last
    line on stderr) if not. A database not reachable yet is waited for up to `wait_s`."""
    for service in services:
        try:
            applied = await migrate_service(service, database_url(service, len(services) > 1), wait_s)
        except (LookupError, *db.TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
            print(f"migrate {service}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  file=err)  # fmt: skip
            return 1
        print(f"{service}: applied {', '.join(applied)}" if applied else f"{service}: up to date", file=out)
    return 0
