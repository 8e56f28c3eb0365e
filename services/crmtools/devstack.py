"""The embedded stack: PostgreSQL 18 and a Kafka-protocol broker from PyPI wheels (infra.py),
plus the four services as real processes. `make run` uses it, and so do the end-to-end tests.

    python -m crmtools.devstack run [--data-dir .data]

Every child runs in its own process group (Ctrl-C reaches only this runner, which then stops
services, broker and database in that order) and, on Linux, gets a parent-death signal, so no
process outlives the runner even if the runner itself is killed.
"""

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import orjson
from eventkit.db import ensure_database, with_database
from eventkit.signing import generate_key_pair, public_key_of
from servicekit.settings import DEFAULT_PORTS

from contracts.services import SERVICE_NAMES
from crmtools import previous_run
from crmtools.infra import EmbeddedBroker, EmbeddedPostgres, ExternalBroker, ExternalPostgres, last_line
from crmtools.log_tail import LogFollower
from crmtools.processes import free_port, spawn, stop_process

if TYPE_CHECKING:
    from crmtools.mailsink import MailSink

SERVICES = SERVICE_NAMES  # in start order
ROOT = Path(__file__).resolve().parents[2]


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
        self.proc = spawn(
            [sys.executable, "-m", f"{self.name}.main"],
            self.log_path,
            signal.SIGTERM,
            env={**self.env, **(extra_env or {})},
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                last = last_line(self.log_path) if self.log_path else "no log"
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {last} (log: {self.log_path})")
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

    postgres: EmbeddedPostgres | ExternalPostgres
    broker: EmbeddedBroker | ExternalBroker

    def __init__(
        self,
        data_dir: Path,
        pg_port: int = 5432,
        kafka_port: int = 9092,
        service_ports: dict[str, int] | None = None,
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
                self.logs / f"{name}.log",
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
            if isinstance(self.broker, EmbeddedBroker):  # one broker: no replicas to keep in sync
                svc.env.setdefault("KAFKA_REPLICATION_FACTOR", "1")

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

    def pids(self) -> list[int]:
        """The processes this stack started that are running now."""
        procs = [self.postgres.proc if isinstance(self.postgres, EmbeddedPostgres) else None]
        procs.append(self.broker.proc if isinstance(self.broker, EmbeddedBroker) else None)
        procs += [svc.proc for svc in self.services.values()]
        return [p.pid for p in procs if p is not None and p.poll() is None]

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
    """`make run`: the whole system in the foreground until Ctrl-C; 1 with a one-line reason if it
    cannot start."""
    stack = Stack(
        data_dir,
        pg_port=_port_setting("CRM_PG_PORT", 5432),
        kafka_port=_port_setting("CRM_KAFKA_PORT", 9092),
        service_ports={name: _port_setting(f"CRM_{name.upper()}_PORT", port) for name, port in DEFAULT_PORTS.items()},
        admin_key=os.environ.get("CRM_ADMIN_KEY") or _admin_key(data_dir),
    )
    # The console (served by intake) calls the others from the browser: allow the ports in use.
    origins = ",".join(
        f"http://{host}:{svc.port}" for host in ("127.0.0.1", "localhost") for svc in stack.services.values()
    )
    for svc in stack.services.values():
        svc.env.setdefault("CORS_ALLOW_ORIGINS", origins)
    # Somewhere to deliver mail to, unless the environment names a real server (SMTP_HOST).
    mail_ports = {} if os.environ.get("SMTP_HOST") else {
        "mail (SMTP)": _port_setting("CRM_MAIL_SMTP_PORT", 1025),
        "mail": _port_setting("CRM_MAIL_PORT", 8025),
    }  # fmt: skip
    pid_file = stack.data_dir / "run.pids"
    follower = LogFollower({name: svc.log_path for name, svc in stack.services.items() if svc.log_path}, print)
    sink: MailSink | None = None
    failed: Exception | None = None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        left = previous_run.stop_leftovers(pid_file)
        if left:
            print(f"stopped what the last run left running: {', '.join(left)}", flush=True)
        assert isinstance(stack.broker, EmbeddedBroker) and isinstance(stack.postgres, EmbeddedPostgres)
        ports = {"postgresql": stack.postgres.port, "broker": stack.broker.port}
        ports |= {name: svc.port for name, svc in stack.services.items()} | mail_ports
        previous_run.wait_for_free_ports(ports)
        print(f"starting PostgreSQL on 127.0.0.1:{stack.postgres.port} (data in {data_dir}/postgres)", flush=True)
        print(f"starting the broker on {stack.broker.bootstrap} (memory only)", flush=True)
        if mail_ports:
            from crmtools import mailsink  # aiosmtpd: a development dependency (requirements-dev.txt)

            sink = mailsink.MailSink(mail_ports["mail (SMTP)"], mail_ports["mail"])
            stack.services["notification"].env.update({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.smtp_port)})
            stack.services["intake"].env.setdefault("CONSOLE_MAIL_URL", sink.url.rstrip("/"))  # the console links it
            print(f"starting the mail sink on 127.0.0.1:{sink.smtp_port} (memory only)", flush=True)
            sink.start()
        stack.start_infra()
        print("starting intake, case, notification, analytics ...", flush=True)
        follower.start()
        stack.start_services()
        previous_run.record(pid_file, stack.pids())
        _print_ready(stack, sink, data_dir)
        while True:
            for svc in stack.services.values():
                if svc.proc is not None and svc.proc.poll() is not None:
                    print(f"{svc.name} exited with {svc.proc.returncode}; restarting it", flush=True)
                    svc.start()
                    previous_run.record(pid_file, stack.pids())
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except (previous_run.StartRefused, RuntimeError, TimeoutError, OSError) as exc:
        failed = exc
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        follower.stop()
        if sink is not None:
            sink.stop()
        previous_run.clear(pid_file)
        if failed is None:
            print("stopped.", flush=True)
        else:  # last, after whatever stopping printed: the one line to read
            print(f"make run: {failed}", file=sys.stderr, flush=True)


def _print_ready(stack: Stack, sink: "MailSink | None", data_dir: Path) -> None:
    intake = stack.services["intake"].url
    print("\nready:")
    for name, svc in stack.services.items():
        print(f"  {name:<13} {svc.url}   (docs {svc.url}/docs)")
    print(f"  {'console':<13} {intake}/console/")
    if sink is not None:
        print(f"  {'mail':<13} {sink.url}   (what notification sent; SMTP 127.0.0.1:{sink.smtp_port})")
    else:
        print(f"  {'mail':<13} sent to {os.environ['SMTP_HOST']} (SMTP_HOST)")
    print(f"  {'kafka':<13} {stack.broker.bootstrap}")
    print(f"  {'postgresql':<13} {stack.postgres.dsn('crm_<service>')}")
    print(f"  {'logs':<13} {stack.logs}/<service>.log   (JSON lines; shown readable below)")
    print(f"\nDevelopment admin key (also in {data_dir}/admin.key):\n  {stack.admin_key}")
    print("\nTry it:")
    print(f"  export CRM_KEY={stack.admin_key}")
    print(
        f'  curl -s -X POST {intake}/v1/interactions -H "authorization: Bearer $CRM_KEY" \\\n'
        "    -H 'content-type: application/json' \\\n"
        '    -d \'{"customer": {"email": "ada@example.com"}, "channel": "web", '
        '"direction": "inbound", "kind": "message", "occurred_at": "2026-01-01T10:00:00Z", '
        '"content": "hello"}\''
    )
    print("\nCtrl-C stops everything.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the embedded stack and the four services.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="start everything and stay in the foreground")
    run_cmd.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CRM_DATA_DIR", ".data")))
    args = parser.parse_args(argv)
    return run(args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
