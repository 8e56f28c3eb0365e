"""`crm migrate <service>` applies what a service's start would, and a service started with
MIGRATE_ON_START=false serves only on a database that has every migration; otherwise it exits,
naming the first one missing. Real processes: the command as Kubernetes' Job calls it, and the
service as `make run` starts it, on the session's PostgreSQL and a broker of their own."""

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest
from crmtools.devstack import SERVICES, Stack
from crmtools.infra import EmbeddedPostgres
from crmtools.processes import free_port
from eventkit import db
from servicekit.migrations import service_directories

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "analytics"


async def empty_database(postgres: EmbeddedPostgres) -> str:
    dsn = postgres.dsn(f"test_{uuid.uuid4().hex[:12]}")
    await db.ensure_database(dsn)
    return dsn


async def crm(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m crmtools.cli ARGS` as the Kubernetes Job runs it: the service's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    clean["PYTHONPATH"] = f"{ROOT / 'services'}{os.pathsep}{ROOT}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crmtools.cli", *args, env={**clean, **env}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def service_process(tmp_path: Path, postgres: EmbeddedPostgres, broker: str, dsn: str) -> Stack:
    """A stack on external infra whose one service (not started) uses `dsn` and does not migrate."""
    stack = Stack(
        tmp_path / "stack",
        service_ports={},
        postgres_dsn=postgres.dsn(),
        kafka_bootstrap=broker,
        env={"MIGRATE_ON_START": "false", "KAFKA_REPLICATION_FACTOR": "1", "KAFKA_SESSION_TIMEOUT_MS": "6000"},
    )
    stack.logs.mkdir(parents=True, exist_ok=True)
    stack.services[SERVICE].env["DATABASE_URL"] = dsn
    return stack


def test_every_service_migrates_from_its_own_package() -> None:
    for name in SERVICES:
        dirs = service_directories(name)
        assert dirs == [db.EVENTKIT_MIGRATIONS, ROOT / "services" / name / "migrations"]
        assert list(dirs[1].glob("*.sql")), name


async def test_crm_migrate_then_the_service_starts_without_migrating(
    postgres: EmbeddedPostgres, broker: str, tmp_path: Path
) -> None:
    dsn = await empty_database(postgres)
    expected = [name for name, _ in db.migration_files(service_directories(SERVICE))]

    code, out, err = await crm("migrate", SERVICE, env={"DATABASE_URL": dsn})
    assert (code, err) == (0, "")
    assert out == f"{SERVICE}: applied {', '.join(expected)}\n"
    assert await crm("migrate", SERVICE, env={"DATABASE_URL": dsn}) == (0, f"{SERVICE}: up to date\n", "")

    stack = service_process(tmp_path, postgres, broker, dsn)
    try:
        await asyncio.to_thread(stack.start_services, [SERVICE])  # waits for /readyz 200
    finally:
        await asyncio.to_thread(stack.stop)


async def test_a_service_on_a_database_without_its_migrations_exits_naming_one(
    postgres: EmbeddedPostgres, broker: str, tmp_path: Path
) -> None:
    dsn = await empty_database(postgres)
    first = db.migration_files(service_directories(SERVICE))[0][0]
    stack = service_process(tmp_path, postgres, broker, dsn)
    try:
        with pytest.raises(RuntimeError, match=f"{SERVICE} exited"):
            await asyncio.to_thread(stack.start_services, [SERVICE])
    finally:
        await asyncio.to_thread(stack.stop)
    log = (stack.logs / f"{SERVICE}.log").read_text()
    assert f"{SERVICE}: database lacks migration {first} and " in log
    assert f"MIGRATE_ON_START=false; run `crm migrate {SERVICE}` first" in log
    conn = await db.connect(dsn)
    try:  # it changed nothing
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


async def test_migrate_all_wants_a_database_per_service() -> None:
    code, out, err = await crm("migrate", "--all", env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/one"})
    assert (code, out) == (1, "")
    assert err == "migrate intake: LookupError: DATABASE_URL is one database: set CRM_INTAKE_DATABASE_URL for --all\n"


async def test_a_database_out_of_reach_ends_with_one_line() -> None:
    url = f"postgresql://u@127.0.0.1:{free_port()}/x"
    code, _, err = await crm("migrate", SERVICE, "--wait", "0", env={"DATABASE_URL": url})
    assert code == 1
    assert err.splitlines()[-1].startswith(f"migrate {SERVICE}: ConnectionRefusedError: ")
