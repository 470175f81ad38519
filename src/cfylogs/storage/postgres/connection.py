"""Connections to PostgreSQL: the pool and its renewal, the LISTEN listener, transactions.

Every driver error leaves as `StorageUnavailable` (503, retried by Logstash).
The pool replaces broken connections; the listener, on a connection of its
own, reconnects with a backoff and, once the database is back after an
outage, replaces the whole pool at once and wakes the long polls (events may
have been stored while nobody listened).
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

log = logging.getLogger("cfylogs.storage.postgres")

AConn = psycopg.AsyncConnection[tuple[Any, ...]]

#: Seconds an operation waits for a connection before answering 503 (a busy pool).
ACQUIRE_TIMEOUT = 5.0
#: The same while the database is known to be down: producers get their 503 quickly.
DOWN_ACQUIRE_TIMEOUT = 1.0
#: Seconds /health waits for the database.
STATUS_TIMEOUT = 2.0
#: The listener reconnects after this many seconds, doubling up to the maximum.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0
#: The listener checks its idle connection this often (seconds).
LISTEN_PING_EVERY = 10.0
#: libpq settings of every connection: notice a dead peer in seconds, not hours.
CONNECT_KWARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "application_name": "cfylogs",
}


class Database:
    """One relay's connections to the shared database."""

    def __init__(self, dsn: str, sync: str, pool_size: int) -> None:
        self.dsn = dsn
        self.sync = sync
        self.pool_size = pool_size
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

    def __repr__(self) -> str:  # the DSN may hold a password: never show it
        return f"Database(pool_size={self.pool_size})"

    async def open(self, migrate: Callable[[AConn], Awaitable[None]]) -> None:
        # The pool logs every failed reconnection attempt; we log the outage once.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        first = await self._prepare(migrate)
        self._pool = await self._new_pool()
        self._listener = asyncio.create_task(self._listen(first), name="cfylogs-pg-listen")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def on_new_events(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    # --- transactions

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AConn]:
        """One transaction on a pooled connection; driver errors become 503s."""
        if self._pool is None:
            raise StorageUnavailable("the store is not open")
        try:
            timeout = ACQUIRE_TIMEOUT if self.failure is None else DOWN_ACQUIRE_TIMEOUT
            async with self._pool.connection(timeout) as conn, conn.transaction():
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            self.note_failure(exc)
            raise StorageUnavailable(f"PostgreSQL cannot take this now: {exc}") from exc
        if self.failure is not None:
            log.info("PostgreSQL answers again")
            self.failure = None

    @contextlib.asynccontextmanager
    async def status_connection(self) -> AsyncIterator[AConn]:
        """A connection for /health, waited for STATUS_TIMEOUT at most."""
        if self._pool is None:
            raise StorageUnavailable("the store is not open")
        try:
            async with self._pool.connection(timeout=STATUS_TIMEOUT) as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            self.note_failure(exc)
            raise StorageUnavailable(f"PostgreSQL does not answer: {exc}") from exc

    def note_failure(self, exc: Exception) -> None:
        if self.failure is None:
            log.error("PostgreSQL operation failed: %s", exc)
        self.failure = str(exc) or type(exc).__name__

    # --- the pool

    async def _new_pool(self) -> AsyncConnectionPool[AConn]:
        pool: AsyncConnectionPool[AConn] = AsyncConnectionPool(
            self.dsn,
            kwargs={"autocommit": True, **CONNECT_KWARGS},
            min_size=1,
            max_size=self.pool_size,
            open=False,
            configure=self._configure,
            # No check before each use (a round trip per operation): after an outage the
            # listener replaces the whole pool, and a connection that fails alone costs
            # one 503 and is then discarded by the pool.
            timeout=ACQUIRE_TIMEOUT,
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

    async def _configure(self, conn: AConn) -> None:
        # Our statements are small and indexed: JIT compilation (on by default since
        # PostgreSQL 12, triggered by estimates on young tables) costs tens of ms each.
        await conn.execute("SET jit = off")
        if self.sync != "full":
            # Survives a crash of the relay (PostgreSQL has the commit), not of the database.
            await conn.execute("SET synchronous_commit = off")

    async def _prepare(self, migrate: Callable[[AConn], Awaitable[None]]) -> AConn:
        """Connect, migrate, and listen: fail fast and clearly at start-up.

        The connection is kept as the listener's first one."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, **CONNECT_KWARGS
            )
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
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **CONNECT_KWARGS)
        try:
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
            await conn.execute("SELECT 1")  # an idle connection may be dead: find out

    def _wake(self) -> None:
        for callback in self._callbacks:
            callback()


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
