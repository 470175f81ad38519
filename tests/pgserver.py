"""A real PostgreSQL server for the tests, started by the tests themselves.

The server binaries come from the distribution's packages
(`scripts/ensure-test-tools.sh` installs them when `make test` finds none).
PostgreSQL refuses to run as root, and tests run as root in CI: then the
cluster belongs to a dedicated system user and every server command runs
through `runuser`. The cluster lives in a temporary directory outside
pytest's own (whose parents are private to root), listens on a free
loopback port and keeps its socket in that directory, so nothing of the
machine's own PostgreSQL, if any, is touched.

One cluster serves a whole test run, all its xdist workers (each test makes
its own database or schema): the run's first process (the xdist controller,
or pytest alone) makes its directory, the first worker that needs the server
starts it under a lock in that directory, and the first process stops it at
the end. The same process first removes what killed runs left behind;
tests/pgmachine.py says how that, and the service user, stay race-free.

fsync stays on: the durability tests must mean what they say. Only
`full_page_writes` is off (torn pages need a power cut, which no test does)
and initdb skips its own fsyncs.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.pgmachine import (
    ensure_service_user,
    locked,
    new_cluster_dir,
    remove_cluster,
    remove_dead_clusters,
)
from tests.support import wait_until

SUPERUSER = "postgres"
#: The application_name of `PgServer.commits_stalled`'s probe.
_PROBE = "cfylogs_stall_probe"


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
            "run scripts/ensure-test-tools.sh (make test does) or apt-get install postgresql"
        )
    return max(candidates)[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgServer:
    """One throw-away cluster: `start()`, `stop()`, `admin_dsn`, `create_database()`."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.bindir = find_bindir()
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "server.log"
        self.port = free_port() if port is None else port
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

    @property
    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def processes(self) -> list[int]:
        """The postmaster and every process under it (backends, background workers)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        found = [self.postmaster]
        for pid in found:  # grows as it goes: children, then theirs
            found.extend(child for child, parent in parents.items() if parent == pid)
        return found

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the cluster stopped (SIGSTOP): connections stay open and the
        kernel acknowledges what is sent, but nothing answers, as when the database's
        host hangs. Resumed (SIGCONT) on the way out, whatever happened inside."""
        stopped: list[int] = []
        try:
            os.kill(self.postmaster, signal.SIGSTOP)  # first: then it starts no one
            stopped.append(self.postmaster)
            for pid in self.processes()[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def commits_stalled(self) -> Iterator[None]:
        """Commits wait for a synchronous standby that never comes: the server answers
        everything but COMMIT (a slow database; a commit sent and not answered, that the
        server carries out once released). Released on the way out."""
        self._set_standbys("'cfylogs_nobody'", stalled=True)
        try:
            yield
        finally:
            self._set_standbys(None, stalled=False)

    def _set_standbys(self, names: str | None, stalled: bool) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS cfylogs_stall_probe (n int)")
            if names is None:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            else:
                conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = {names}")
            conn.execute("SELECT pg_reload_conf()")
        # Backends learn it from the checkpointer, a moment after the reload.
        wait_until(lambda: self._commit_stalls() == stalled)

    def _commit_stalls(self) -> bool:
        """Commit one row; True once the commit is seen waiting for the standby (it stays
        waiting, and ends when commits are released), False once it is answered."""
        answered = threading.Event()

        def commit() -> None:
            with psycopg.connect(self.dsn(application_name=_PROBE)) as conn:
                conn.execute("INSERT INTO cfylogs_stall_probe VALUES (1)")
                conn.commit()
            answered.set()

        threading.Thread(target=commit, daemon=True).start()

        def outcome() -> str | None:
            if answered.is_set():
                return "answered"
            with psycopg.connect(self.admin_dsn) as conn:
                waiting = conn.execute(
                    "SELECT 1 FROM pg_stat_activity"
                    " WHERE application_name = %s AND wait_event = 'SyncRep'",
                    (_PROBE,),
                ).fetchone()
            return "waiting" if waiting else None

        return bool(wait_until(outcome) == "waiting")

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
    """A cluster of the caller's own (one it stops and starts, a benchmark's), removed after."""
    root = new_cluster_dir()
    try:
        server = PgServer(root)
        server.init()
        server.start()
        yield server
    finally:
        remove_cluster(root)


# --- the run's shared cluster ---------------------------------------------------------------

#: The directory of this run's shared cluster: made by the run's first process
#: (`pytest_configure`), handed to the xdist workers in their `workerinput`.
_RUN_KEY = "cfylogs_pg_run"
_run_root: Path | None = None
_owns_run_root = False
_shared: PgServer | None = None


def _attach_or_start(root: Path) -> PgServer:
    """The run's cluster in `root`: started by the first process that asks, found by the rest."""
    port_file = root / "port"
    with locked(root / "lock"):
        if port_file.exists():
            return PgServer(root, int(port_file.read_text()))
        for partial in (root / "data", root / "sockets"):  # a worker killed while starting it
            shutil.rmtree(partial, ignore_errors=True)
        server = PgServer(root)
        server.init()
        server.start()
        port_file.write_text(str(server.port))
        return server


def shared_server() -> PgServer:
    """The test run's server, started on first use, shared by all workers, stopped at the end.

    For code that has no fixture at hand (the contract's `BACKENDS`, a
    hypothesis state machine); tests take it as the `pg_server` fixture.
    Outside a pytest run (this module not loaded as its plugin) it is a
    cluster of this process, removed at exit.
    """
    global _shared
    if _shared is None:
        if _run_root is not None:
            _shared = _attach_or_start(_run_root)
        else:
            stack = contextlib.ExitStack()
            _shared = stack.enter_context(running_server())
            atexit.register(stack.close)
    return _shared


def pytest_configure(config: pytest.Config) -> None:
    global _run_root, _owns_run_root
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        _run_root = Path(workerinput[_RUN_KEY])
        return
    remove_dead_clusters()  # what killed runs left: their clusters and postmasters
    _run_root, _owns_run_root = new_cluster_dir(), True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker gets the run's cluster directory."""
    node.workerinput[_RUN_KEY] = str(_run_root)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _run_root, _owns_run_root, _shared
    if _owns_run_root and _run_root is not None:
        remove_cluster(_run_root)  # after every worker is done: the run is over
    _run_root, _owns_run_root, _shared = None, False, None


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The run's PostgreSQL server. Unreachable or missing is a failure, never a skip."""
    return shared_server()
