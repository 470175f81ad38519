"""How long an operation may wait for PostgreSQL (`storage.postgres.timeout_sec`).

A database can fail in four ways: it refuses connections, it resets them, it
is slow (a lock held, a commit waiting for a standby), or it is silent (its
host hangs, the network drops packets, its processes are stopped: TCP stays
up, nothing answers). Each has its bound here:

- connecting: libpq's `connect_timeout`;
- sending: TCP's user timeout (`tcp_user_timeout`), and keepalives for idle
  connections (the LISTEN one);
- slow: the server's own `lock_timeout` (half the bound, so that it wins and
  the connection stays usable), `statement_timeout` and, for a relay that
  stopped in the middle of a transaction and holds a lock that the others
  wait for, `idle_in_transaction_session_timeout`;
- silent: no server-side limit acts on a server that does not run, and the
  kernel still acknowledges what is sent, so a `Watch` drops the connection
  at the operation's deadline (a shutdown of its socket: what waits on it
  fails at once with "server closed the connection").

A cancel request is no way out of a silent server: it needs a new connection
that such a server does not answer either (libpq's waits for it, psycopg
gives it 5 s and then waits 5 s more for the query). So `BoundedConnection`
drops the connection instead when psycopg would cancel (a task cancelled in
the middle of a query); the pool then replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

#: libpq settings of every connection: notice a dead peer in seconds, not hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def connect_kwargs(timeout: float) -> dict[str, Any]:
    """libpq's bounds for connecting and sending (every connection, start-up's too)."""
    return {
        # libpq counts whole seconds and takes less than 2 as 2.
        "connect_timeout": max(2, math.ceil(timeout)),
        "tcp_user_timeout": int(timeout * 1000),
        **KEEPALIVES,
        "application_name": "cfylogs",
    }


def session_options(dsn: str, timeout: float, sync: str) -> str:
    """The server settings of the pool's connections, as a start-up `options` value after
    the DSN's own (or PGOPTIONS'): set while connecting, so bounded by connect_timeout."""
    given = conninfo_to_dict(dsn).get("options") or os.environ.get("PGOPTIONS", "")
    ms = int(timeout * 1000)
    settings = {
        # Our statements are small and indexed: JIT compilation (on by default since
        # PostgreSQL 12, triggered by estimates on young tables) costs tens of ms each.
        "jit": "off",
        "lock_timeout": ms // 2,
        "statement_timeout": ms,
        "idle_in_transaction_session_timeout": ms,
    }
    if sync != "full":
        # Survives a crash of the relay (PostgreSQL has the commit), not of the database.
        settings["synchronous_commit"] = "off"
    ours = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{given} {ours}".strip()


def abort(conn: psycopg.AsyncConnection[Any]) -> None:
    """Cut a connection without a word to the server: whatever waits on it fails now,
    libpq marks it broken and the pool discards it. The socket stays open until psycopg
    closes it, so the event loop never watches a closed descriptor."""
    if conn.closed:
        return
    sock = socket.socket(fileno=conn.pgconn.socket)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already cut by the peer
        pass
    finally:
        sock.detach()


class BoundedConnection(psycopg.AsyncConnection[tuple[Any, ...]]):
    """A connection that is dropped, not cancelled, when its task is cancelled mid-query."""

    async def cancel_safe(self, *, timeout: float = 30.0) -> None:
        abort(self)


class Watch:
    """One operation's deadline: the connection it holds is cut when the deadline passes."""

    __slots__ = ("_conn", "_loop", "committing", "deadline", "fired", "timeout")

    def __init__(self, timeout: float, deadline: float | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.deadline = self._loop.time() + timeout if deadline is None else deadline
        #: The deadline passed while the operation held a connection.
        self.fired = False
        #: The operation's COMMIT was sent (or about to be).
        self.committing = False
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def left(self) -> float:
        return self.deadline - self._loop.time()

    @contextlib.asynccontextmanager
    async def guarding(self, conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
        self._conn = conn
        timer = self._loop.call_at(self.deadline, self.cut)
        try:
            yield
        except psycopg.Error as exc:
            if self.fired:  # "server closed the connection" would blame the wrong side
                raise psycopg.OperationalError(f"no answer within {self.timeout:g} s") from exc
            raise
        finally:
            timer.cancel()
            self._conn = None
            if self.fired:
                # Cut after its last answer, the connection still looks usable: close it.
                await conn.close()

    def cut(self) -> None:
        """Give up now (the deadline, or the relay shutting down)."""
        if self._conn is not None:
            self.fired = True
            abort(self._conn)
