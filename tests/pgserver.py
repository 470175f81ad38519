"""A real PostgreSQL server for the tests, started by the tests themselves.

The server binaries come from the distribution's packages
(`scripts/ensure-postgres.sh` installs them when `make test` finds none).
PostgreSQL refuses to run as root, and tests run as root in CI: then the
cluster belongs to a dedicated system user and every server command runs
through `runuser`. The cluster lives in a temporary directory outside
pytest's own (whose parents are private to root), listens on a free
loopback port and keeps its socket in that directory, so nothing of the
machine's own PostgreSQL, if any, is touched.

fsync stays on: the durability tests must mean what they say. Only
`full_page_writes` is off (torn pages need a power cut, which no test does)
and initdb skips its own fsyncs.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SERVICE_USER = "cfylogs-pg"
SUPERUSER = "postgres"


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and postgres."""
    candidates = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        version = bindir.parent.name
        if (bindir / "postgres").exists() and version.isdigit():
            candidates.append((int(version), bindir))
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: "
            "run scripts/ensure-postgres.sh (make test does) or apt-get install postgresql"
        )
    return max(candidates)[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_service_user() -> pwd.struct_passwd:
    """The system user the cluster runs as when the tests run as root (created once)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        check=False,  # a concurrent run may have created it first: checked just below
        capture_output=True,
    )
    return pwd.getpwnam(SERVICE_USER)


class PgServer:
    """One throw-away cluster: `start()`, `stop()`, `admin_dsn`, `create_database()`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bindir = find_bindir()
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "server.log"
        self.port = free_port()
        self.as_user = ensure_service_user() if os.geteuid() == 0 else None

    def dsn(self, dbname: str = "postgres", **options: str) -> str:
        parts = {"host": "127.0.0.1", "port": str(self.port), "user": SUPERUSER}
        parts.update(dbname=dbname, **options)
        return " ".join(f"{key}={value}" for key, value in parts.items())

    @property
    def admin_dsn(self) -> str:
        return self.dsn()

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_user is not None:
            command = ["runuser", "-u", self.as_user.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        self.sockets.mkdir()
        if self.as_user is not None:
            for path in (self.root, self.sockets):
                os.chown(path, self.as_user.pw_uid, self.as_user.pw_gid)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockets}'",
            "max_connections": "300",
            "shared_buffers": "64MB",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        self._run("pg_ctl", "--pgdata", str(self.data), "--log", str(self.log), "--wait", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "--pgdata", str(self.data), "--mode", mode, "--wait", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its DSN."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def create_schema(self, dbname: str = "postgres") -> str:
        """A new empty schema; returns a DSN whose search_path is that schema alone.

        Much faster than a database per test (no copy of the template)."""
        name = f"s_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return self.dsn(dbname, options=f"'-c search_path={name}'")


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    root = Path(tempfile.mkdtemp(prefix="cfylogs-pg-"))
    server = PgServer(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            with contextlib.suppress(RuntimeError):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


_shared: PgServer | None = None
_shared_stack = contextlib.ExitStack()


def shared_server() -> PgServer:
    """The test session's server, started on first use and stopped at exit.

    For code that has no fixture at hand (the contract's `BACKENDS`, a
    hypothesis state machine); tests take it as the `pg_server` fixture.
    """
    global _shared
    if _shared is None:
        _shared = _shared_stack.enter_context(running_server())
        atexit.register(_stop_shared)
    return _shared


def _stop_shared() -> None:
    global _shared
    _shared_stack.close()
    _shared = None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server. Unreachable or missing is a failure, never a skip."""
    yield shared_server()
    _stop_shared()
