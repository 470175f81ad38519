"""The shared backend: one PostgreSQL database for several relay processes.

Model (tables prefixed `cfylogs_`, so the database may be one that other
applications use, e.g. the Cloudify manager's own)
- `cfylogs_head`: a single row, the next seq and the event bytes ever stored.
- `cfylogs_events`: one row per event, stored once whatever the number of
  registrations; `byte` is the event bytes stored before it, so a backlog's
  size is a subtraction.
- `cfylogs_registrations`: per consumer, a cursor (first seq not yet handed
  out) and the pending batch `[pending_start, cursor)` whose id is
  `next_batch_id - 1`.

Concurrency between instances
- Appends take the head row with `UPDATE ... RETURNING` and hold its lock
  until they commit. Seq numbers are therefore handed out in commit order:
  a reader that sees seq n committed has seen every seq below n, and never
  cuts a batch past a gap that a slower transaction would fill later (which
  a plain SEQUENCE would allow, and which would lose events for good). The
  price is that appends from every instance take turns, one commit each;
  batched ingest (one COPY per request) keeps that cheap.
- Every operation naming a registration first locks its row (the same
  `UPDATE` that renews its lease), so two instances never cut overlapping
  batches, and the second of two concurrent fetches hands out the batch the
  first one cut: same id, same bytes.
- Rows are locked in one order (head, then registrations by id), so
  instances cannot deadlock one another.
- Appends `NOTIFY` in their transaction; a dedicated `LISTEN` connection
  wakes the long-polls of this process when another instance ingested.
Every driver error leaves as `StorageUnavailable` (503, retried by Logstash);
the pool replaces broken connections, so the relay recovers by itself when
the database comes back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cfylogs.errors import (
    BatchNotDelivered,
    ConfigError,
    Conflict,
    RegistrationExpired,
    RegistrationNotFound,
    RelayError,
    StorageCorrupt,
    StorageUnavailable,
)
from cfylogs.models import (
    AckResult,
    AppendOutcome,
    Batch,
    DeadLetter,
    Registration,
    StoreStatus,
)
from cfylogs.storage import postgres_legacy as legacy
from cfylogs.storage.base import RegistrationRow, Storage, StorageLimits, check_legacy_batches
from cfylogs.storage.postgres_schema import MIGRATIONS

log = logging.getLogger(__name__)

AConn = psycopg.AsyncConnection[tuple[Any, ...]]

#: First key of our advisory locks (second: the schema), "cfyl" in ASCII.
LOCK_SPACE = 0x6366796C
MIGRATE_LOCK = 1
GC_LOCK = 2
#: Seconds an operation waits for a connection before answering 503 (a busy pool).
ACQUIRE_TIMEOUT = 5.0
#: The same while the database is known to be down: producers get their 503 quickly.
DOWN_ACQUIRE_TIMEOUT = 1.0
#: Seconds /health waits for the database.
STATUS_TIMEOUT = 2.0
#: One group commit takes at most this much event data.
MAX_GROUP_BYTES = 64 * 1024**2
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

_REG_COLUMNS = (
    "id, name, client_subject, created_at, last_seen, active, cursor, next_batch_id, "
    "pending_start, pending_deliveries, redeliveries, dropped"
)
_BACKLOG_START = "coalesce(r.pending_start, r.cursor)"


@dataclass(frozen=True, slots=True)
class _Append:
    """An append waiting for the group commit that takes it."""

    events: Sequence[bytes]
    size: int
    now: float
    future: asyncio.Future[AppendOutcome]


#: A registration row, as read under its lock (columns in `_REG_COLUMNS` order).
_Reg = RegistrationRow


class PostgresStorage(Storage):
    name = "postgres"

    def __init__(
        self,
        dsn: str,
        sync: str = "full",
        limits: StorageLimits | None = None,
        pool_size: int = 10,
    ) -> None:
        self.dsn = dsn
        self.sync = sync
        self.limits = limits or StorageLimits()
        self.pool_size = pool_size
        #: Tells our own notifications from other instances'.
        self.instance = uuid.uuid4().hex
        self._pool: AsyncConnectionPool[AConn] | None = None
        self._channel = "cfylogs_events"
        self._callbacks: list[Callable[[], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._failure: str | None = None
        self._appends: collections.deque[_Append] = collections.deque()
        self._appender: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # the DSN may hold a password: never show it
        return f"PostgresStorage(pool_size={self.pool_size})"

    # --- life cycle

    async def open(self) -> None:
        # The pool logs every failed reconnection attempt; we log the outage once.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        first = await self._prepare()
        self._pool = await self._new_pool()
        self._listener = asyncio.create_task(self._listen(first), name="cfylogs-pg-listen")

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

    async def _prepare(self) -> AConn:
        """Connect, migrate, and listen: fail fast and clearly at start-up.

        The connection is kept as the listener's first one."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, **CONNECT_KWARGS
            )
            try:
                await self._migrate(conn)
                schema: str = await _one(conn, "SELECT current_schema()")
                # One channel per schema: deployments sharing a database do not wake each other.
                self._channel = f"cfylogs_{schema}"[:63]
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
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

    async def _configure(self, conn: AConn) -> None:
        # Our statements are small and indexed: JIT compilation (on by default since
        # PostgreSQL 12, triggered by estimates on young tables) costs tens of ms each.
        await conn.execute("SET jit = off")
        if self.sync != "full":
            # Survives a crash of the relay (PostgreSQL has the commit), not of the database.
            await conn.execute("SET synchronous_commit = off")

    async def _migrate(self, conn: AConn) -> None:
        """Bring the schema to the newest version; one instance at a time does it."""
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
                (LOCK_SPACE + MIGRATE_LOCK,),
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS cfylogs_migrations ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = await _one(conn, "SELECT coalesce(max(version), 0) FROM cfylogs_migrations")
            if applied > len(MIGRATIONS):
                raise StorageCorrupt(
                    f"the database was migrated by a newer cfylogs (schema {applied}, this one "
                    f"knows {len(MIGRATIONS)}); run that version, or a later one, on it"
                )
            for version, statements in enumerate(MIGRATIONS[applied:], start=applied + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO cfylogs_migrations (version) VALUES (%s)", (version,)
                )
                log.info("PostgreSQL schema migrated to version %d", version)

    async def close(self) -> None:
        if self._appender is not None:
            await self._appender  # appends already queued are answered, not dropped
            self._appender = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def on_new_events(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

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
                        self._failure = self._failure or str(exc) or type(exc).__name__
                    lost = True
                await asyncio.sleep(delay)  # backoff before reconnecting, not synchronisation
                delay = min(delay * 2, RECONNECT_MAX)
        finally:
            if first is not None:  # cancelled before it took its first connection
                await first.close()

    async def _connect_listener(self, recovering: bool) -> AConn:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **CONNECT_KWARGS)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
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

    # --- transactions

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AConn]:
        """One transaction on a pooled connection; driver errors become 503s."""
        if self._pool is None:
            raise StorageUnavailable("the store is not open")
        try:
            timeout = ACQUIRE_TIMEOUT if self._failure is None else DOWN_ACQUIRE_TIMEOUT
            async with self._pool.connection(timeout) as conn, conn.transaction():
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            self._note_failure(exc)
            raise StorageUnavailable(f"PostgreSQL cannot take this now: {exc}") from exc
        if self._failure is not None:
            log.info("PostgreSQL answers again")
            self._failure = None

    def _note_failure(self, exc: Exception) -> None:
        if self._failure is None:
            log.error("PostgreSQL operation failed: %s", exc)
        self._failure = str(exc) or type(exc).__name__

    async def _lock_registration(
        self, conn: AConn, registration_id: str, now: float
    ) -> tuple[_Reg, bool]:
        """Lock an active registration's row and renew its lease, in one statement; also
        say whether it has adopted batches left (`postgres_legacy`)."""
        row = await _fetchone(
            conn,
            f"UPDATE cfylogs_registrations r SET last_seen = greatest(last_seen, %s) "
            f"WHERE id = %s RETURNING {_REG_COLUMNS}, {legacy.EXISTS_SQL}",
            (now, registration_id),
        )
        if row is None:
            raise RegistrationNotFound(registration_id)
        reg = _Reg(*row[:-1])
        if not reg.active:
            raise RegistrationExpired(registration_id)  # rolls the renewal back
        return reg, bool(row[-1])

    async def _collect_garbage(self, conn: AConn) -> None:
        """Delete the events every active registration is past.

        One collector at a time (a try-lock): concurrent deletes of the same
        rows could deadlock, and a skipped pass is done by the next one.
        """
        got = await _one(
            conn,
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema()))",
            (LOCK_SPACE + GC_LOCK,),
        )
        if got:
            await conn.execute(
                "DELETE FROM cfylogs_events WHERE seq < ("
                f" SELECT coalesce(min({_BACKLOG_START}), (SELECT seq FROM cfylogs_head))"
                " FROM cfylogs_registrations r WHERE r.active)"
            )

    # --- operations

    async def append(self, events: Sequence[bytes], now: float) -> AppendOutcome:
        if not events:
            return AppendOutcome(0, 0)
        if self._pool is None:
            raise StorageUnavailable("the store is not open")
        op = _Append(events, sum(map(len, events)), now, asyncio.get_running_loop().create_future())
        self._appends.append(op)
        if self._appender is None or self._appender.done():
            self._appender = asyncio.create_task(self._run_appends(), name="cfylogs-pg-append")
        return await op.future

    async def _run_appends(self) -> None:
        """Group commit: the appends that queued up while a transaction ran go in the next one.

        Appends from every instance take turns on the head row, so one commit
        per request would cap ingest at one fsync per request (Logstash's
        default is one event per request, 50 in parallel).
        """
        while self._appends:
            group: list[_Append] = []
            size = 0
            while self._appends and (not group or size + self._appends[0].size <= MAX_GROUP_BYTES):
                op = self._appends.popleft()
                if not op.future.done():  # a cancelled request stores nothing
                    group.append(op)
                    size += op.size
            if not group:
                continue
            try:
                results = await self._append_group(group)
            except RelayError as exc:
                results = [exc] * len(group)
            except Exception as exc:  # never lose the appender to an unexpected error
                log.exception("PostgreSQL append failed unexpectedly")
                error = StorageUnavailable(f"the store cannot take this now: {exc}")
                results = [error] * len(group)
            for op, result in zip(group, results, strict=True):
                if op.future.done():
                    continue
                if isinstance(result, RelayError):
                    op.future.set_exception(result)
                else:
                    op.future.set_result(result)

    async def _append_group(self, ops: list[_Append]) -> list[AppendOutcome | RelayError]:
        async with self._transaction() as conn:
            return await self._append_in(conn, [(op.events, op.size) for op in ops], ops[-1].now)

    async def _append_in(
        self, conn: AConn, requests: list[tuple[Sequence[bytes], int]], now: float
    ) -> list[AppendOutcome | RelayError]:
        """Append each request (events, size) whole or refuse it, inside `conn`'s transaction."""
        # The head row's lock is held until commit: seqs are handed out in commit order.
        row = await _fetchone(
            conn,
            "SELECT seq, byte FROM cfylogs_head"
            " WHERE EXISTS (SELECT FROM cfylogs_registrations WHERE active) FOR UPDATE",
        )
        if row is None:
            # Nobody to deliver to: counted and dropped without writing anything.
            return [AppendOutcome(0, len(events)) for events, _ in requests]
        head, head_byte = row
        results: list[AppendOutcome | RelayError] = []
        accepted: list[bytes] = []
        size = 0
        for events, request_size in requests:
            refusal = await self._refusal(
                conn, head, head_byte, len(accepted) + len(events), size + request_size
            )
            if refusal is not None:
                results.append(refusal)
                continue
            accepted.extend(events)
            size += request_size
            results.append(AppendOutcome(len(events), 0))
        if accepted:
            await self._store(conn, head, head_byte, accepted, size, now)
        return results

    async def _store(
        self, conn: AConn, head: int, head_byte: int, events: list[bytes], size: int, now: float
    ) -> None:
        await conn.execute(
            "UPDATE cfylogs_head SET seq = %s, byte = %s", (head + len(events), head_byte + size)
        )
        await _copy_events(conn, head, head_byte, events, now)
        if self.limits.backlog_policy == "drop_oldest":
            await self._drop_over_cap(conn, head + len(events), head_byte + size)
        await conn.execute("SELECT pg_notify(%s, %s)", (self._channel, self.instance))

    def _over_cap(self, head: int, head_byte: int, count: int, size: int) -> tuple[str, Any]:
        """The SQL condition (on `r` and its start event `e`) of a backlog over a cap."""
        return (
            f"r.active AND ((%(max_events)s > 0 AND %(head)s - {_BACKLOG_START} + %(count)s"
            " > %(max_events)s) OR (%(max_bytes)s > 0 AND %(head_byte)s"
            " - coalesce(e.byte, %(head_byte)s) + %(size)s > %(max_bytes)s))",
            {
                "max_events": self.limits.max_backlog_events,
                "max_bytes": self.limits.max_backlog_bytes,
                "head": head,
                "head_byte": head_byte,
                "count": count,
                "size": size,
            },
        )

    async def _refusal(
        self, conn: AConn, head: int, head_byte: int, count: int, size: int
    ) -> RelayError | None:
        """Policy reject: refuse when `count` events of `size` bytes overflow a backlog."""
        if self.limits.backlog_policy != "reject" or not (
            self.limits.max_backlog_events or self.limits.max_backlog_bytes
        ):
            return None
        where, params = self._over_cap(head, head_byte, count, size)
        row = await _fetchone(
            conn,
            "SELECT r.id FROM cfylogs_registrations r LEFT JOIN cfylogs_events e"
            f" ON e.seq = {_BACKLOG_START} WHERE {where} LIMIT 1",
            params,
        )
        if row is None:
            return None
        return StorageUnavailable(
            f"the backlog of registration {row[0]} is full (storage.max_backlog_events "
            "/ storage.max_backlog_bytes, policy reject); retry once it catches up"
        )

    async def _drop_over_cap(self, conn: AConn, head: int, head_byte: int) -> None:
        """Policy drop_oldest: move the start of every backlog over a cap forward."""
        if not (self.limits.max_backlog_events or self.limits.max_backlog_bytes):
            return
        where, params = self._over_cap(head, head_byte, 0, 0)
        cur = await conn.execute(
            f"SELECT r.id, {_BACKLOG_START}, r.cursor, r.pending_start"
            " FROM cfylogs_registrations r LEFT JOIN cfylogs_events e"
            f" ON e.seq = {_BACKLOG_START} WHERE {where} ORDER BY r.id FOR UPDATE OF r",
            params,
        )
        over = await cur.fetchall()
        for registration_id, start, cursor, pending_start in over:
            new_start = await self._capped_start(conn, start, head, head_byte)
            if new_start <= start:
                continue
            if pending_start is not None:
                # Part of the pending batch must go: all of it goes (its ack becomes a no-op).
                new_start = max(new_start, cursor)
            await conn.execute(
                "UPDATE cfylogs_registrations SET pending_start = NULL, pending_deliveries = 0,"
                " cursor = %s, dropped = dropped + %s WHERE id = %s",
                (max(cursor, new_start), new_start - start, registration_id),
            )
            log.warning(
                "registration %s is over its backlog cap (storage.max_backlog_events / "
                "storage.max_backlog_bytes): dropped its %d oldest unacknowledged events; "
                "is its consumer still running?",
                registration_id,
                new_start - start,
            )
        if over:
            await self._collect_garbage(conn)

    async def _capped_start(self, conn: AConn, start: int, head: int, head_byte: int) -> int:
        new_start = start
        if self.limits.max_backlog_events:
            new_start = max(new_start, head - self.limits.max_backlog_events)
        if self.limits.max_backlog_bytes:
            # The first event that starts at or after the byte position the cap allows.
            # Bytes grow with seq, so this walks the key from the backlog's start over
            # the events to drop only (about what was just appended): no index on byte.
            position = head_byte - self.limits.max_backlog_bytes
            at = await _one(
                conn,
                "SELECT coalesce((SELECT seq FROM cfylogs_events WHERE seq >= %s"
                " AND byte >= %s ORDER BY seq LIMIT 1), %s)",
                (new_start, position, head),
            )
            new_start = max(new_start, int(at))
        return new_start

    async def register(
        self, registration_id: str, name: str | None, client_subject: str | None, now: float
    ) -> Registration:
        async with self._transaction() as conn:
            reg = await _insert_registration(conn, registration_id, name, client_subject, now)
        if reg is None:
            raise Conflict(f"registration id {registration_id} already exists")
        return reg.public()

    async def adopt(
        self,
        registration_id: str,
        legacy_batches: Sequence[tuple[int, Sequence[bytes]]],
        now: float,
    ) -> bool:
        check_legacy_batches(legacy_batches)
        next_id = legacy_batches[-1][0] + 1 if legacy_batches else 0
        async with self._transaction() as conn:
            reg = await _insert_registration(conn, registration_id, None, None, now, next_id)
            if reg is None:
                return False  # the id exists: an import run twice adopts nothing twice
            await legacy.insert(conn, registration_id, legacy_batches, now)
        return True

    async def unregister(self, registration_id: str) -> None:
        async with self._transaction() as conn:
            row = await _fetchone(
                conn,
                "DELETE FROM cfylogs_registrations WHERE id = %s RETURNING id",
                (registration_id,),
            )
            if row is None:
                raise RegistrationNotFound(registration_id)
            await self._collect_garbage(conn)

    async def touch(self, registration_id: str, now: float) -> None:
        async with self._transaction() as conn:
            await self._lock_registration(conn, registration_id, now)
            await _lazy_commit(conn)

    async def fetch(
        self,
        registration_id: str,
        max_entries: int,
        max_bytes: int,
        now: float,
        waiting: bool = False,  # the relay's wake-up (NOTIFY) serves long polls here
    ) -> Batch | None:
        async with self._transaction() as conn:
            reg, has_adopted = await self._lock_registration(conn, registration_id, now)
            if has_adopted:
                return await legacy.hand_out(conn, registration_id)
            if reg.pending_start is not None:
                return await self._redeliver(conn, reg)
            batch = await self._cut(conn, reg, max_entries, max_bytes)
            if batch is None:
                await _lazy_commit(conn)
            return batch

    async def _redeliver(self, conn: AConn, reg: _Reg) -> Batch:
        assert reg.pending_start is not None and reg.pending_id is not None
        await conn.execute(
            "UPDATE cfylogs_registrations SET pending_deliveries = pending_deliveries + 1,"
            " redeliveries = redeliveries + 1 WHERE id = %s",
            (reg.id,),
        )
        entries = await _read_events(conn, reg.pending_start, reg.cursor - reg.pending_start)
        if len(entries) != reg.cursor - reg.pending_start:
            raise StorageUnavailable(
                f"events of the pending batch of registration {reg.id} are missing"
            )
        return Batch(reg.id, reg.pending_id, entries, reg.pending_deliveries + 1)

    async def _cut(self, conn: AConn, reg: _Reg, max_entries: int, max_bytes: int) -> Batch | None:
        # Seqs commit in order (see the module docstring): what is visible has no gap.
        entries = await _read_events(conn, reg.cursor, max_entries, max_bytes)
        if not entries:
            return None
        await conn.execute(
            "UPDATE cfylogs_registrations SET pending_start = cursor, cursor = cursor + %s,"
            " next_batch_id = next_batch_id + 1, pending_deliveries = 1 WHERE id = %s",
            (len(entries), reg.id),
        )
        return Batch(reg.id, reg.next_batch_id, entries, 1)

    async def ack(self, registration_id: str, batch_id: int, now: float) -> AckResult:
        async with self._transaction() as conn:
            reg, has_adopted = await self._lock_registration(conn, registration_id, now)
            if has_adopted:
                return await legacy.ack(conn, registration_id, batch_id)
            if reg.pending_start is not None and batch_id == reg.pending_id:
                await conn.execute(
                    "UPDATE cfylogs_registrations SET pending_start = NULL,"
                    " pending_deliveries = 0 WHERE id = %s",
                    (registration_id,),
                )
                await self._collect_garbage(conn)
                return AckResult(True, reg.cursor - reg.pending_start)
            if 0 <= batch_id < reg.next_batch_id:
                return AckResult(False)
            raise BatchNotDelivered(registration_id, batch_id, reg.pending_id)

    async def expire(self, idle_since: float) -> list[str]:
        async with self._transaction() as conn:
            # Locked in id order; a row another instance expired meanwhile is re-checked
            # after its lock and left out: a lease expires once, not once per instance.
            cur = await conn.execute(
                "SELECT id FROM cfylogs_registrations WHERE active AND last_seen < %s"
                " ORDER BY id FOR UPDATE",
                (idle_since,),
            )
            expired = [row[0] for row in await cur.fetchall()]
            if expired:
                await conn.execute(
                    "UPDATE cfylogs_registrations SET active = false, pending_start = NULL,"
                    " pending_deliveries = 0, cursor = (SELECT seq FROM cfylogs_head)"
                    " WHERE id = ANY(%s)",
                    (expired,),
                )
                await legacy.drop(conn, expired)
                await self._collect_garbage(conn)
        return expired

    async def revive(self, registration_id: str, now: float) -> bool:
        async with self._transaction() as conn:
            row = await _fetchone(
                conn,
                "UPDATE cfylogs_registrations SET active = true, pending_start = NULL,"
                " pending_deliveries = 0, last_seen = %s,"
                " cursor = (SELECT seq FROM cfylogs_head)"
                " WHERE id = %s AND NOT active RETURNING id",
                (now, registration_id),
            )
        return row is not None

    # --- views

    async def registrations(self) -> list[Registration]:
        async with self._transaction() as conn:
            cur = await conn.execute(
                f"SELECT {', '.join('r.' + c.strip() for c in _REG_COLUMNS.split(','))},"
                f" h.seq - {_BACKLOG_START}, h.byte - coalesce(e.byte, h.byte), e.ingested_at,"
                f" {legacy.BACKLOG_COLUMNS}"
                " FROM cfylogs_registrations r CROSS JOIN cfylogs_head h"
                f" LEFT JOIN cfylogs_events e ON e.seq = {_BACKLOG_START} {legacy.BACKLOG_SQL}"
                " WHERE r.active ORDER BY r.created_at, r.id"
            )
            rows = await cur.fetchall()
        return [_listed(row) for row in rows]

    async def status(self) -> StoreStatus:
        try:
            return await asyncio.wait_for(self._status(), STATUS_TIMEOUT + 1)
        except (StorageUnavailable, TimeoutError) as exc:
            detail = exc.message if isinstance(exc, StorageUnavailable) else "no answer in time"
            return StoreStatus(self.name, False, detail, 0, 0, 0, None, 0)

    async def _status(self) -> StoreStatus:
        if self._pool is None:
            raise StorageUnavailable("the store is not open")
        try:
            async with self._pool.connection(timeout=STATUS_TIMEOUT) as conn:
                row = await _fetchone_required(
                    conn,
                    "SELECT h.seq, h.byte, t.seq, t.byte, adopted.*,"
                    " pg_total_relation_size('cfylogs_events')"
                    " + pg_total_relation_size('cfylogs_legacy_batches')"
                    " FROM cfylogs_head h LEFT JOIN LATERAL"
                    " (SELECT seq, byte FROM cfylogs_events ORDER BY seq LIMIT 1) t ON true"
                    f" CROSS JOIN ({legacy.TOTALS_SQL}) adopted",
                )
        except (psycopg.Error, PoolTimeout) as exc:
            self._note_failure(exc)
            raise StorageUnavailable(f"PostgreSQL does not answer: {exc}") from exc
        head, head_byte, tail, tail_byte, adopted_events, adopted_bytes, disk = row
        events = head - (head if tail is None else tail) + int(adopted_events)
        nbytes = head_byte - (head_byte if tail_byte is None else tail_byte) + int(adopted_bytes)
        return StoreStatus(self.name, True, "ok", events, nbytes, int(disk), None, head)

    # --- dead letters: events the ingest filter kept from consumers (ingest.accept)

    async def append_dead_letters(
        self, letters: Sequence[tuple[bytes, str]], now: float, max_kept: int
    ) -> int:
        if not letters:
            return 0
        async with self._transaction() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO cfylogs_dead_letters (received_at, reason, event)"
                    " VALUES (%s, %s, %s)",
                    [(now, reason, event) for event, reason in letters],
                )
            if max_kept <= 0:
                return 0
            over = int(await _one(conn, "SELECT count(*) FROM cfylogs_dead_letters")) - max_kept
            if over <= 0:
                return 0
            await conn.execute(
                "DELETE FROM cfylogs_dead_letters WHERE id IN"
                " (SELECT id FROM cfylogs_dead_letters ORDER BY id LIMIT %s)",
                (over,),
            )
        return over

    async def list_dead_letters(self, after_id: int, limit: int) -> list[DeadLetter]:
        async with self._transaction() as conn:
            cur = await conn.execute(
                "SELECT id, event, reason, received_at FROM cfylogs_dead_letters"
                " WHERE id > %s ORDER BY id LIMIT %s",
                (after_id, limit),
            )
            rows = await cur.fetchall()
        return [DeadLetter(id, bytes(event), reason, at) for id, event, reason, at in rows]

    async def count_dead_letters(self) -> int:
        async with self._transaction() as conn:
            return int(await _one(conn, "SELECT count(*) FROM cfylogs_dead_letters"))

    async def replay_dead_letters(self, ids: Sequence[int], now: float) -> AppendOutcome:
        wanted = sorted(set(ids))
        if not wanted:
            return AppendOutcome(0, 0)
        async with self._transaction() as conn:
            # Locked (dead letters, then the head in `_append_in`): replayed once only.
            cur = await conn.execute(
                "SELECT id, event FROM cfylogs_dead_letters WHERE id = ANY(%s)"
                " ORDER BY id FOR UPDATE",
                (wanted,),
            )
            rows = await cur.fetchall()
            events = [bytes(event) for _, event in rows]
            if not events:
                return AppendOutcome(0, 0)
            # The append step itself, so replayed events meet the same limits as ingest.
            [outcome] = await self._append_in(conn, [(events, sum(map(len, events)))], now)
            if isinstance(outcome, RelayError):
                raise outcome  # rolls back: nothing changes
            if outcome.stored:
                await conn.execute(
                    "DELETE FROM cfylogs_dead_letters WHERE id = ANY(%s)", ([r[0] for r in rows],)
                )
        return outcome

    async def purge_dead_letters(self, ids: Sequence[int] | None) -> int:
        async with self._transaction() as conn:
            if ids is None:
                cur = await conn.execute("DELETE FROM cfylogs_dead_letters")
            else:
                cur = await conn.execute(
                    "DELETE FROM cfylogs_dead_letters WHERE id = ANY(%s)", (sorted(set(ids)),)
                )
            return cur.rowcount


# --- small helpers


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


def _listed(row: tuple[Any, ...]) -> Registration:
    """A row of `registrations()`: the registration, its backlog, its adopted batches."""
    events, nbytes, oldest, adopted_events, adopted_bytes, adopted_oldest, first_id, first_n = row[
        -8:
    ]
    public = _Reg(*row[:-8]).public(
        backlog_events=max(int(events), 0) + int(adopted_events),
        backlog_bytes=max(int(nbytes), 0) + int(adopted_bytes),
        oldest_unacked_at=oldest,
    )
    if first_id is None:
        return public
    # Adopted batches come before the rest: the first of them is the pending one.
    return dataclasses.replace(
        public,
        oldest_unacked_at=adopted_oldest,
        pending_batch_id=first_id,
        pending_deliveries=first_n,
    )


async def _insert_registration(
    conn: AConn,
    registration_id: str,
    name: str | None,
    client_subject: str | None,
    now: float,
    next_batch_id: int = 0,
) -> _Reg | None:
    """A new active registration that sees the events appended from now on; None if the
    id is taken."""
    row = await _fetchone(
        conn,
        "INSERT INTO cfylogs_registrations (id, name, client_subject, created_at,"
        " last_seen, active, cursor, next_batch_id)"
        " SELECT %s, %s, %s, %s, %s, true, seq, %s FROM cfylogs_head"
        f" ON CONFLICT (id) DO NOTHING RETURNING {_REG_COLUMNS}",
        (registration_id, name, client_subject, now, now, next_batch_id),
    )
    return None if row is None else _Reg(*row)


async def _fetchone(conn: AConn, query: str, params: Any = None) -> tuple[Any, ...] | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def _fetchone_required(conn: AConn, query: str, params: Any = None) -> tuple[Any, ...]:
    row = await _fetchone(conn, query, params)
    if row is None:
        raise StorageCorrupt(f"the cfylogs tables are incomplete (no answer to {query[:40]}...)")
    return row


async def _one(conn: AConn, query: str, params: Any = None) -> Any:
    return (await _fetchone_required(conn, query, params))[0]


async def _lazy_commit(conn: AConn) -> None:
    """Commit without waiting for the disk: the transaction only renewed a lease, and
    losing that in a database crash only delays an expiry (empty long polls stay cheap)."""
    await conn.execute("SET LOCAL synchronous_commit TO off")


async def _read_events(
    conn: AConn, start: int, limit: int, max_bytes: int | None = None
) -> list[bytes]:
    """Events from seq `start` on: at most `limit`, and with `max_bytes` only as many as
    fit (but at least one). Sizes are summed in the database, so events that do not fit
    are never read: memory stays bounded by `max_bytes` whatever the events' sizes."""
    cur = await conn.execute(
        "WITH firsts AS (SELECT seq, octet_length(data) AS size FROM cfylogs_events"
        "  WHERE seq >= %(start)s ORDER BY seq LIMIT %(limit)s),"
        " running AS (SELECT seq, sum(size) OVER (ORDER BY seq) AS total FROM firsts)"
        " SELECT e.seq, e.data FROM running r JOIN cfylogs_events e USING (seq)"
        " WHERE r.seq = %(start)s OR %(max_bytes)s::bigint IS NULL OR r.total <= %(max_bytes)s"
        " ORDER BY e.seq",
        {"start": start, "limit": limit, "max_bytes": max_bytes},
    )
    entries: list[bytes] = []
    for seq, data in await cur.fetchall():
        if seq != start + len(entries):
            break  # a gap: only collected events could make one; the caller checks counts
        entries.append(bytes(data))
    return entries


async def _copy_events(
    conn: AConn, first: int, first_byte: int, events: Sequence[bytes], now: float
) -> None:
    """Batched ingest: the whole request in one binary COPY, encoded here in one pass
    (several times faster than the driver's row-by-row adaptation)."""
    cur = conn.cursor()
    async with cur.copy(
        "COPY cfylogs_events (seq, byte, ingested_at, data) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        await copy.write(_binary_copy(first, first_byte, events, now))


#: PostgreSQL's binary COPY framing: signature, flags, header extension length.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
#: Per row: 4 fields; int8 seq, int8 byte, float8 ingested_at, then the bytea's length.
_COPY_ROW = struct.Struct("!hiqiqidi")


def _binary_copy(first: int, first_byte: int, events: Sequence[bytes], now: float) -> bytes:
    parts = [_COPY_HEADER]
    position = first_byte
    for offset, event in enumerate(events):
        parts.append(_COPY_ROW.pack(4, 8, first + offset, 8, position, 8, now, len(event)))
        parts.append(event)
        position += len(event)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)
