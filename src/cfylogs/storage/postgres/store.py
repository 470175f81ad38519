"""The shared backend: the storage operations on one PostgreSQL database for several relays.

Model (tables prefixed `cfylogs_`, so the database may be one that other
applications use, e.g. the Cloudify manager's own): `cfylogs_head` and
`cfylogs_events` (`events`), `cfylogs_registrations` (per consumer, a cursor
and the pending batch `[pending_start, cursor)` whose id is
`next_batch_id - 1`), adopted batches (`legacy`), dead letters.

Concurrency between instances
- Appends take the head row and hold its lock until they commit: seqs are
  handed out in commit order (`events`). Appends of one relay that arrive
  during a transaction go in the next one (`appender`).
- Every operation naming a registration first locks its row (the same
  `UPDATE` that renews its lease), so two instances never cut overlapping
  batches, and the second of two concurrent fetches hands out the batch the
  first one cut: same id, same bytes.
- Rows are locked in one order (head, then registrations by id), so
  instances cannot deadlock one another.
- Appends `NOTIFY` in their transaction; the listener (`connection`) wakes
  the long polls of this process when another instance ingested.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from cfylogs.config import Settings
from cfylogs.errors import (
    BatchNotDelivered,
    Conflict,
    RegistrationExpired,
    RegistrationNotFound,
    RelayError,
    StorageUnavailable,
)
from cfylogs.models import (
    AckResult,
    AppendOutcome,
    Batch,
    DeadLetter,
    DeadLetters,
    ExpiryOutcome,
    Registration,
    StoreStatus,
)
from cfylogs.storage.base import RegistrationRow, Storage, check_legacy_batches
from cfylogs.storage.policy import AppendRequest, DropReports, StorageLimits, storage_limits
from cfylogs.storage.postgres import caps, dead_letters, events, legacy, schema
from cfylogs.storage.postgres.appender import Appender
from cfylogs.storage.postgres.connection import (
    AConn,
    Database,
    fetchone,
    fetchone_required,
    lazy_commit,
)
from cfylogs.storage.postgres.events import BACKLOG_START, JOIN_BACKLOG_START
from cfylogs.storage.shared_entries import SharedEntries

_REG_COLUMNS = (
    "id, name, client_subject, created_at, last_seen, active, cursor, next_batch_id, "
    "pending_start, pending_deliveries, redeliveries, dropped"
)

#: A registration row, as read under its lock (columns in `_REG_COLUMNS` order).
_Reg = RegistrationRow


class PostgresStorage(Storage):
    name = "postgres"

    def __init__(
        self,
        dsn: str,
        limits: StorageLimits | None = None,
        *,
        sync: str | None = None,
        pool_size: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Values left out come from the settings table's defaults; `timeout` is the most
        seconds an operation waits for the database (`storage.postgres.timeout_sec`)."""
        defaults = Settings()
        self.limits = limits or storage_limits(defaults)
        self._db = Database(
            dsn,
            sync or defaults.storage_sync,
            pool_size or defaults.storage_postgres_pool_size,
            timeout or defaults.storage_postgres_timeout_sec,
        )
        self._appender = Appender(self._append_group, self._db.timeout)
        self._drops = DropReports()
        self._shared = SharedEntries()

    def __repr__(self) -> str:  # the DSN may hold a password: never show it
        return f"PostgresStorage(pool_size={self._db.pool_size})"

    @property
    def dsn(self) -> str:
        return self._db.dsn

    @property
    def instance(self) -> str:
        """Tells this relay's notifications from other instances'."""
        return self._db.instance

    # --- life cycle

    async def open(self) -> None:
        await self._db.open(schema.migrate)

    async def close(self) -> None:
        # The server waited for its requests already: what still runs is cut, what waits
        # for a connection is refused, and then so are the appends still queued.
        await self._db.close()
        await self._appender.close()

    def on_new_events(self, callback: Callable[[], None]) -> None:
        self._db.on_new_events(callback)

    async def _lock_registration(
        self, conn: AConn, registration_id: str, now: float
    ) -> tuple[_Reg, bool]:
        """Lock an active registration's row and renew its lease, in one statement; also
        say whether it has adopted batches left (`legacy`)."""
        row = await fetchone(
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

    # --- operations

    async def append(
        self, events: Sequence[bytes], now: float, dead_letters: DeadLetters | None = None
    ) -> AppendOutcome:
        if dead_letters is not None and not dead_letters.letters:
            dead_letters = None
        if not events and dead_letters is None:
            return AppendOutcome(0, 0)
        if not self._db.is_open:
            raise StorageUnavailable("the store is not open")
        return await self._appender.append(AppendRequest.of(events, now, dead_letters))

    async def _append_group(
        self, requests: list[AppendRequest], deadline: float
    ) -> list[AppendOutcome | RelayError]:
        count = sum(len(r.events) for r in requests)
        what = f"{len(requests)} append(s) ({count} events)"  # named if its commit is in doubt
        async with self._db.transaction(deadline, what) as conn:
            return await self._append_in(conn, requests)

    async def _append_in(
        self, conn: AConn, requests: Sequence[AppendRequest]
    ) -> list[AppendOutcome | RelayError]:
        """Append each request whole (its dead letters too) or refuse it, inside `conn`'s
        transaction."""
        head = await events.lock_head(conn)  # held until commit: seqs in commit order
        if head is None:
            # Nobody to deliver to: the events are counted and dropped, unwritten.
            results: list[AppendOutcome | RelayError] = [
                AppendOutcome(0, len(r.events)) for r in requests
            ]
            return await self._finish(conn, requests, results, 0)
        seq, byte = head
        results = []
        accepted: list[bytes] = []
        size = 0
        for request in requests:
            count = len(accepted) + len(request.events)
            refusal = None
            if request.events:
                refusal = await caps.refusal(
                    conn, self.limits, seq, byte, count, size + request.size
                )
            if refusal is not None:
                results.append(refusal)
                continue
            accepted.extend(request.events)
            size += request.size
            results.append(AppendOutcome(len(request.events), 0))
        dropped = 0
        if accepted:
            await events.store(conn, seq, byte, accepted, size, requests[-1].now)
            head_after = (seq + len(accepted), byte + size)
            dropped = await caps.drop_over_cap(conn, self.limits, *head_after, self._drops)
            await conn.execute("SELECT pg_notify(%s, %s)", (self._db.channel, self.instance))
        return await self._finish(conn, requests, results, dropped)

    async def _finish(
        self,
        conn: AConn,
        requests: Sequence[AppendRequest],
        results: list[AppendOutcome | RelayError],
        dropped: int,
    ) -> list[AppendOutcome | RelayError]:
        """Dead letters of the stored requests; what the caps and `max_kept` deleted is
        told in the last outcome (the sums are what counts)."""
        max_kept = None
        for request, result in zip(requests, results, strict=True):
            if request.dead_letters is not None and isinstance(result, AppendOutcome):
                await dead_letters.insert(conn, request.dead_letters, request.now)
                max_kept = request.dead_letters.max_kept  # the same for every request
        trimmed = 0 if max_kept is None else await dead_letters.trim(conn, max_kept)
        if trimmed or dropped:
            last = max(i for i, r in enumerate(results) if isinstance(r, AppendOutcome))
            outcome = results[last]
            assert isinstance(outcome, AppendOutcome)
            results[last] = dataclasses.replace(
                outcome, dropped=dropped, dead_letters_dropped=trimmed
            )
        return results

    async def register(
        self, registration_id: str, name: str | None, client_subject: str | None, now: float
    ) -> Registration:
        async with self._db.transaction() as conn:
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
        async with self._db.transaction() as conn:
            reg = await _insert_registration(conn, registration_id, None, None, now, next_id)
            if reg is None:
                return False  # the id exists: an import run twice adopts nothing twice
            await legacy.insert(conn, registration_id, legacy_batches, now)
        return True

    async def unregister(self, registration_id: str) -> None:
        async with self._db.transaction() as conn:
            row = await fetchone(
                conn,
                "DELETE FROM cfylogs_registrations WHERE id = %s RETURNING id",
                (registration_id,),
            )
            if row is None:
                raise RegistrationNotFound(registration_id)
            await events.collect(conn)
        self._drops.forget(registration_id)

    async def touch(self, registration_id: str, now: float) -> None:
        async with self._db.transaction() as conn:
            await self._lock_registration(conn, registration_id, now)
            await lazy_commit(conn)

    async def fetch(
        self,
        registration_id: str,
        max_entries: int,
        max_bytes: int,
        now: float,
        waiting: bool = False,  # the relay's wake-up (NOTIFY) serves long polls here
    ) -> Batch | None:
        async with self._db.transaction() as conn:
            reg, has_adopted = await self._lock_registration(conn, registration_id, now)
            if has_adopted:
                return await legacy.hand_out(conn, registration_id)
            if reg.pending_start is not None:
                return await self._redeliver(conn, reg)
            batch = await self._cut(conn, reg, max_entries, max_bytes)
            if batch is None:
                await lazy_commit(conn)
            return batch

    async def _redeliver(self, conn: AConn, reg: _Reg) -> Batch:
        assert reg.pending_start is not None and reg.pending_id is not None
        await conn.execute(
            "UPDATE cfylogs_registrations SET pending_deliveries = pending_deliveries + 1,"
            " redeliveries = redeliveries + 1 WHERE id = %s",
            (reg.id,),
        )
        key = (reg.id, reg.pending_id, reg.pending_start, reg.cursor)
        entries: Sequence[bytes] | None = self._shared.get(key)  # held by deliveries in flight
        if entries is None:
            read = await events.read(conn, reg.pending_start, reg.cursor - reg.pending_start)
            if len(read) != reg.cursor - reg.pending_start:
                raise StorageUnavailable(
                    f"events of the pending batch of registration {reg.id} are missing"
                )
            entries = self._shared.share(key, read)
        return Batch(reg.id, reg.pending_id, entries, reg.pending_deliveries + 1)

    async def _cut(self, conn: AConn, reg: _Reg, max_entries: int, max_bytes: int) -> Batch | None:
        # Seqs commit in order (see `events`): what is visible has no gap.
        entries = await events.read(conn, reg.cursor, max_entries, max_bytes)
        if not entries:
            return None
        await conn.execute(
            "UPDATE cfylogs_registrations SET pending_start = cursor, cursor = cursor + %s,"
            " next_batch_id = next_batch_id + 1, pending_deliveries = 1 WHERE id = %s",
            (len(entries), reg.id),
        )
        key = (reg.id, reg.next_batch_id, reg.cursor, reg.cursor + len(entries))
        return Batch(reg.id, reg.next_batch_id, self._shared.share(key, entries), 1)

    async def ack(self, registration_id: str, batch_id: int, now: float) -> AckResult:
        async with self._db.transaction() as conn:
            reg, has_adopted = await self._lock_registration(conn, registration_id, now)
            if has_adopted:
                return await legacy.ack(conn, registration_id, batch_id)
            if reg.pending_start is not None and batch_id == reg.pending_id:
                await conn.execute(
                    "UPDATE cfylogs_registrations SET pending_start = NULL,"
                    " pending_deliveries = 0 WHERE id = %s",
                    (registration_id,),
                )
                await events.collect(conn)
                return AckResult(True, reg.cursor - reg.pending_start)
            if 0 <= batch_id < reg.next_batch_id:
                return AckResult(False)
            raise BatchNotDelivered(registration_id, batch_id, reg.pending_id)

    async def expire(self, idle_since: float) -> ExpiryOutcome:
        forget_before = self.limits.forget_before(idle_since)
        async with self._db.transaction() as conn:
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
                await events.collect(conn)
            purged: list[str] = []
            if forget_before is not None:
                # Rows another instance is purging are skipped (it purges them): no waits.
                cur = await conn.execute(
                    "DELETE FROM cfylogs_registrations WHERE id IN (SELECT id"
                    " FROM cfylogs_registrations WHERE NOT active AND last_seen < %s"
                    " ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING id",
                    (forget_before,),
                )
                purged = [row[0] for row in await cur.fetchall()]
        for registration_id in purged:
            self._drops.forget(registration_id)
        return ExpiryOutcome(expired, purged)

    async def revive(self, registration_id: str, now: float) -> bool:
        async with self._db.transaction() as conn:
            row = await fetchone(
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
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                f"SELECT {', '.join('r.' + c.strip() for c in _REG_COLUMNS.split(','))},"
                f" h.seq - {BACKLOG_START}, h.byte - coalesce(e.byte, h.byte), e.ingested_at,"
                f" {legacy.BACKLOG_COLUMNS}"
                " FROM cfylogs_registrations r CROSS JOIN cfylogs_head h"
                f" {JOIN_BACKLOG_START} {legacy.BACKLOG_SQL}"
                " WHERE r.active ORDER BY r.created_at, r.id"
            )
            rows = await cur.fetchall()
        return [_listed(row) for row in rows]

    async def status(self) -> StoreStatus:
        try:
            return await self._status()  # within `timeout`, whatever the database does
        except StorageUnavailable as exc:
            return StoreStatus(self.name, False, exc.message, 0, 0, 0, None, 0)

    async def _status(self) -> StoreStatus:
        async with self._db.status_connection() as conn:
            row = await fetchone_required(
                conn,
                "SELECT h.seq, h.byte, t.seq, t.byte, adopted.*,"
                " pg_total_relation_size('cfylogs_events')"
                " + pg_total_relation_size('cfylogs_legacy_batches')"
                " FROM cfylogs_head h LEFT JOIN LATERAL"
                " (SELECT seq, byte FROM cfylogs_events ORDER BY seq LIMIT 1) t ON true"
                f" CROSS JOIN ({legacy.TOTALS_SQL}) adopted",
            )
        head, head_byte, tail, tail_byte, adopted_events, adopted_bytes, disk = row
        events_kept = head - (head if tail is None else tail) + int(adopted_events)
        nbytes = head_byte - (head_byte if tail_byte is None else tail_byte) + int(adopted_bytes)
        return StoreStatus(self.name, True, "ok", events_kept, nbytes, int(disk), None, head)

    # --- dead letters (stored by `append`)

    async def list_dead_letters(self, after_id: int, limit: int) -> list[DeadLetter]:
        async with self._db.transaction() as conn:
            return await dead_letters.page(conn, after_id, limit)

    async def count_dead_letters(self) -> int:
        async with self._db.transaction() as conn:
            return await dead_letters.count(conn)

    async def replay_dead_letters(self, ids: Sequence[int], now: float) -> AppendOutcome:
        wanted = sorted(set(ids))
        if not wanted:
            return AppendOutcome(0, 0)
        async with self._db.transaction() as conn:
            found, replayed = await dead_letters.take(conn, wanted)
            if not replayed:
                return AppendOutcome(0, 0)
            # The append step itself, so replayed events meet the same limits as ingest.
            [outcome] = await self._append_in(conn, [AppendRequest.of(replayed, now, None)])
            if isinstance(outcome, RelayError):
                raise outcome  # rolls back: nothing changes
            if outcome.stored:
                await dead_letters.delete(conn, found)
        return outcome

    async def purge_dead_letters(self, ids: Sequence[int] | None) -> int:
        async with self._db.transaction() as conn:
            return await dead_letters.delete(conn, None if ids is None else sorted(set(ids)))


def _listed(row: tuple[Any, ...]) -> Registration:
    """A row of `registrations()`: the registration, its backlog, its adopted batches."""
    (
        events_left,
        nbytes,
        oldest,
        adopted_events,
        adopted_bytes,
        adopted_oldest,
        first_id,
        first_n,
    ) = row[-8:]
    public = _Reg(*row[:-8]).public(
        backlog_events=max(int(events_left), 0) + int(adopted_events),
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
    row = await fetchone(
        conn,
        "INSERT INTO cfylogs_registrations (id, name, client_subject, created_at,"
        " last_seen, active, cursor, next_batch_id)"
        " SELECT %s, %s, %s, %s, %s, true, seq, %s FROM cfylogs_head"
        f" ON CONFLICT (id) DO NOTHING RETURNING {_REG_COLUMNS}",
        (registration_id, name, client_subject, now, now, next_batch_id),
    )
    return None if row is None else _Reg(*row)
