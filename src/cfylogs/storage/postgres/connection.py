"""Connections to PostgreSQL: the pool and its renewal, the LISTEN listener, transactions.

Every driver error leaves as `StorageUnavailable` (503, retried by Logstash),
and every operation ends by its deadline, whatever the database does
(`timeouts`). The pool replaces broken connections; the listener, on a
connection of its own, reconnects with a backoff and, once the database is
back after an outage, replaces the whole pool at once and wakes the long
polls (events may have been stored while nobody listened).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cfylogs.errors import ConfigError, StorageCorrupt, StorageUnavailable
from cfylogs.storage.postgres.timeouts import (
    BoundedConnection,
    Watch,
    connect_kwargs,
    session_options,
)

log = logging.getLogger("cfylogs.storage.postgres")

AConn = psycopg.AsyncConnection[tuple[Any, ...]]

#: Seconds an operation waits for a pool connection while the database is known to be
#: down (else until its deadline): producers get their 503 quickly.
DOWN_ACQUIRE_TIMEOUT = 1.0
#: Seconds the pool's closing waits for its workers, which stop at once unless they are
#: connecting to a silent server; only then does it fail the operations waiting for one.
POOL_CLOSE_WAIT = 0.1
#: The listener reconnects after this many seconds, doubling up to the maximum.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0
#: The listener checks its idle connection this often (seconds).
LISTEN_PING_EVERY = 10.0


class Database:
    """One relay's connections to the shared database."""

    def __init__(self, dsn: str, sync: str, pool_size: int, timeout: float) -> None:
        self.dsn = dsn
        self.sync = sync
        self.pool_size = pool_size
        #: Seconds an operation may take, waiting for a connection included.
        self.timeout = timeout
        #: libpq's parameters of every connection; the pool's add server settings.
        self._kwargs = connect_kwargs(timeout)
        self._pool_kwargs: dict[str, Any] = {}
        #: Tells our own notifications from other instances'.
        self.instance = uuid.uuid4().hex
        #: The NOTIFY channel, one per schema: deployments sharing a database do not
        #: wake each other.
        self.channel = "cfylogs_events"
        #: The last failure, until an operation succeeds again (for /health).
        self.failure: str | None = None
        self._pool: AsyncConnectionPool[AConn] | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        #: The operations holding a connection now (cut when the relay stops).
        self._watches: set[Watch] = set()
        self._closing = False

    def __repr__(self) -> str:  # the DSN may hold a password: never show it
        return f"Database(pool_size={self.pool_size})"

    async def open(self, migrate: Callable[[AConn], Awaitable[None]]) -> None:
        # The pool logs every failed reconnection attempt; we log the outage once.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        first = await self._prepare(migrate)
        options = session_options(self.dsn, self.timeout, self.sync)
        self._pool_kwargs = {**self._kwargs, "options": options, "autocommit": True}
        self._pool = await self._new_pool()
        self._listener = asyncio.create_task(self._listen(first), name="cfylogs-pg-listen")

    async def close(self) -> None:
        """Stop waiting for the database: what holds a connection gives up now, what waits
        for one or asks for one from now on is refused."""
        self._closing = True
        for watch in tuple(self._watches):
            watch.cut()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close(timeout=POOL_CLOSE_WAIT)
            self._pool = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def on_new_events(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    # --- transactions

    @contextlib.asynccontextmanager
    async def transaction(
        self, deadline: float | None = None, what: str = "a transaction"
    ) -> AsyncIterator[AConn]:
        """One transaction on a pooled connection, ended by `deadline` (event loop time;
        default: `timeout` from now); driver errors become 503s. `what` names it in the
        log if its commit goes unconfirmed."""
        watch = Watch(self.timeout, deadline)
        async with self._connection(watch, what) as conn, conn.transaction():
            yield conn
            watch.committing = True
        self._answered()

    @contextlib.asynccontextmanager
    async def status_connection(self) -> AsyncIterator[AConn]:
        """A connection for /health, in autocommit, for `timeout` at most."""
        async with self._connection(Watch(self.timeout)) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _connection(self, watch: Watch, what: str = "") -> AsyncIterator[AConn]:
        if self._closing:
            raise StorageUnavailable("the relay is shutting down; retry shortly")
        if self._pool is None:
            raise StorageUnavailable("the store is not open")
        wait = watch.left() if self.failure is None else min(watch.left(), DOWN_ACQUIRE_TIMEOUT)
        if wait <= 0:
            raise StorageUnavailable(f"PostgreSQL did not answer within {self.timeout:g} s")
        try:
            async with self._pool.connection(wait) as conn, watch.guarding(conn):
                self._watches.add(watch)
                try:
                    yield conn
                finally:
                    self._watches.discard(watch)
        except (psycopg.Error, PoolTimeout) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # psycopg before 3.3 may raise its own error for a cancelled query.
                raise asyncio.CancelledError from exc
            raise self._unavailable(exc, watch, what) from exc

    def _unavailable(self, exc: Exception, watch: Watch, what: str) -> StorageUnavailable:
        detail = str(exc) or type(exc).__name__
        self._note_failure(detail)
        if watch.committing and _in_doubt(exc):
            log.warning(
                "PostgreSQL did not confirm the commit of %s (%s): it may have been stored "
                "although answered 503, and a retry then stores it again",
                what,
                detail,
            )
            return StorageUnavailable(f"PostgreSQL did not confirm the commit ({detail})")
        return StorageUnavailable(f"PostgreSQL cannot take this now ({detail})")

    def _answered(self) -> None:
        if self.failure is not None:
            log.info("PostgreSQL answers again")
            self.failure = None

    def _note_failure(self, detail: str) -> None:
        if self.failure is None:
            log.error("PostgreSQL operation failed: %s", detail)
        self.failure = detail

    # --- the pool

    async def _new_pool(self) -> AsyncConnectionPool[AConn]:
        pool: AsyncConnectionPool[AConn] = AsyncConnectionPool(
            self.dsn,
            kwargs=self._pool_kwargs,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            connection_class=BoundedConnection,
            # No check before each use (a round trip per operation): after an outage the
            # listener replaces the whole pool, and a connection that fails alone costs
            # one 503 and is then discarded by the pool.
            timeout=self.timeout,
            name="cfylogs",
        )
        await pool.open()
        return pool

    async def _renew_pool(self) -> None:
        """Swap in a fresh pool once the database is back.

        The pool reconnects by itself, but with an exponential backoff that can
        leave it idle for a minute after a long outage; the listener, which
        retries every few seconds, knows sooner.
        """
        old, self._pool = self._pool, await self._new_pool()
        if old is not None:
            await old.close()  # operations still on its connections finish first

    async def _prepare(self, migrate: Callable[[AConn], Awaitable[None]]) -> AConn:
        """Connect, migrate, and listen: fail fast and clearly at start-up.

        The connection is kept as the listener's first one."""
        try:
            conn: AConn = await BoundedConnection.connect(self.dsn, autocommit=True, **self._kwargs)
            try:
                await migrate(conn)
                schema: str = await one(conn, "SELECT current_schema()")
                self.channel = f"cfylogs_{schema}"[:63]
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            except BaseException:
                await conn.close()
                raise
        except psycopg.Error as exc:
            # libpq's messages name the host and port, never the password.
            message = (
                f"storage.postgres.dsn: cannot use PostgreSQL: {exc}; check that the server "
                "runs, that the DSN's host, port, user and database are right, and that "
                "pg_hba.conf lets this host in"
            )
            if _unreachable(exc):
                # Exit status 1, not 2: a service manager restarts the relay until the
                # database is up (relays may well start before it).
                raise ConnectionError(message) from None
            raise ConfigError(message) from None
        return conn

    # --- cross-instance wake-ups

    async def _listen(self, first: AConn | None) -> None:
        """LISTEN on a connection of its own; reconnect with backoff when it drops."""
        delay, lost = RECONNECT_FIRST, False
        try:
            while True:
                self._listening = False
                try:
                    conn, first = first or await self._connect_listener(recovering=lost), None
                    async with conn:
                        self._listening = True
                        await self._receive(conn)
                except Exception as exc:  # psycopg's, or the pool's: keep listening regardless
                    if self._listening:
                        delay, lost = RECONNECT_FIRST, False
                    if not lost:
                        log.warning("PostgreSQL connection lost (%s); reconnecting", exc)
                        # Operations now wait less for a connection: producers get a quick 503.
                        self.failure = self.failure or str(exc) or type(exc).__name__
                    lost = True
                await asyncio.sleep(delay)  # backoff before reconnecting, not synchronisation
                delay = min(delay * 2, RECONNECT_MAX)
        finally:
            if first is not None:  # cancelled before it took its first connection
                await first.close()

    async def _connect_listener(self, recovering: bool) -> AConn:
        conn: AConn = await BoundedConnection.connect(self.dsn, autocommit=True, **self._kwargs)
        try:
            async with Watch(self.timeout).guarding(conn):
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            if recovering:
                log.info("PostgreSQL reachable again")
                await self._renew_pool()
                self._wake()  # events may have been stored while nobody listened
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _receive(self, conn: AConn) -> None:
        while True:
            async for note in conn.notifies(timeout=LISTEN_PING_EVERY):
                if note.payload != self.instance:
                    self._wake()
            async with Watch(self.timeout).guarding(conn):
                await conn.execute("SELECT 1")  # an idle connection may be dead: find out

    def _wake(self) -> None:
        for callback in self._callbacks:
            callback()


def _in_doubt(exc: Exception) -> bool:
    """Whether a COMMIT that failed so may have been carried out (docs/HA.md): no answer,
    a lost connection, or the server stopping mid-way (a commit waiting for a standby is
    committed locally) say nothing; any other error of the server's is a rollback."""
    sqlstate = getattr(exc, "sqlstate", None)
    return not sqlstate or sqlstate.startswith(("08", "57P"))


def _unreachable(exc: psycopg.Error) -> bool:
    """The server is not there (yet): no answer at all, or it is starting or stopping.
    Anything else (authentication, an unknown database, a bad DSN) is configuration."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if exc.sqlstate is not None:
        return exc.sqlstate.startswith(("08", "57P"))
    # libpq reports a refusal during start-up as text only: "FATAL:" is the server speaking.
    text = str(exc)
    return "FATAL:" not in text or any(
        phrase in text for phrase in ("starting up", "shutting down", "recovery", "too many")
    )


# --- small query helpers


async def fetchone(conn: AConn, query: str, params: Any = None) -> tuple[Any, ...] | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def fetchone_required(conn: AConn, query: str, params: Any = None) -> tuple[Any, ...]:
    row = await fetchone(conn, query, params)
    if row is None:
        raise StorageCorrupt(f"the cfylogs tables are incomplete (no answer to {query[:40]}...)")
    return row


async def one(conn: AConn, query: str, params: Any = None) -> Any:
    return (await fetchone_required(conn, query, params))[0]


async def lazy_commit(conn: AConn) -> None:
    """Commit without waiting for the disk: the transaction only renewed a lease, and
    losing that in a database crash only delays an expiry (empty long polls stay cheap)."""
    await conn.execute("SET LOCAL synchronous_commit TO off")
