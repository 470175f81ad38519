"""The embedded backend: the storage operations on one SQLite database under home_directory.

Every write is an operation queued to the writer thread (`writer`), which
runs a group of them in one transaction and answers after the commit; the
mirror (`mirror`) answers what needs no disk; reads of event data run on a
small pool of reader connections. The life of an event here: `append`
(stored by `appends` as chunks, `chunks`), `fetch` (a batch cut as a range
of them), `ack` (the range released), `_collect` (chunks every registration
is past are deleted).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cfylogs.config import Settings
from cfylogs.errors import (
    BatchNotDelivered,
    Conflict,
    RegistrationNotFound,
    StorageCorrupt,
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
from cfylogs.storage.base import Storage, check_legacy_batches
from cfylogs.storage.policy import AppendRequest, StorageLimits, storage_limits
from cfylogs.storage.reserve import DiskReserve
from cfylogs.storage.shared_entries import BatchKey
from cfylogs.storage.sqlite import chunks, dead_letters, files, legacy, schema, space
from cfylogs.storage.sqlite.appends import Appends
from cfylogs.storage.sqlite.files import DB_FILE, RESERVE_FILE
from cfylogs.storage.sqlite.mirror import Mirror, Reg, Wish
from cfylogs.storage.sqlite.txn import Txn
from cfylogs.storage.sqlite.writer import AppendResult, Checkpointer, Op, Writer, WriterHooks

log = logging.getLogger("cfylogs.storage.sqlite")

#: Reader threads (and connections).
READERS = 2
#: A batch up to this size is read by the writer in the transaction that cuts it (a
#: larger one by a reader, off the writer); one cut ahead for a waiting consumer too.
READY_MAX_BYTES = 1024**2
#: Housekeeping (last-seen flush, giving space back) runs at most this often (s).
MAINTENANCE_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class _ToRead:
    """A batch handed out whose entries a reader fetches (too large for the writer)."""

    batch_id: int
    deliveries: int
    count: int
    read: Callable[[sqlite3.Connection], Sequence[bytes]]
    #: Under which its entries are shared (None: an adopted batch).
    key: BatchKey | None


class SqliteStorage(Storage):
    name = "sqlite"

    def __init__(
        self,
        home: Path,
        limits: StorageLimits | None = None,
        *,
        sync: str | None = None,
        reserve_bytes: int | None = None,
        readers: int = READERS,
        hooks: WriterHooks | None = None,
    ) -> None:
        """Values left out come from the settings table's defaults."""
        defaults = Settings()
        self.home = Path(home)
        self.path = self.home / DB_FILE
        self.limits = limits or storage_limits(defaults)
        if reserve_bytes is None:
            reserve_bytes = defaults.storage_disk_reserve_bytes
        self._reserve = DiskReserve(self.home / RESERVE_FILE, reserve_bytes)
        self._lock = files.HomeLock(self.home)
        self._connections = files.Connections(self.path, sync or defaults.storage_sync)
        self._readers = files.Readers(self._connections, readers)
        self._checkpointer = Checkpointer(self._connections)
        self._hooks = hooks
        self._mirror = Mirror()
        self._appends = Appends(self.home, self.limits, self._reserve, self._mirror)
        self._writer: Writer | None = None
        self._maintained_at = time.monotonic()

    # --- life cycle

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer = await asyncio.to_thread(self._open_sync)
        self._readers.start()
        self._writer.start(loop)
        self._checkpointer.start()

    def _open_sync(self) -> Writer:
        self._lock.acquire()
        try:
            files.check_not_truncated(self.path)
            schema.check_ours(self.path)
            conn = self._connections.open()
            # Python's SQLite is built with SECURE_DELETE: deleting acknowledged events
            # would write every freed page again, zeroed. FAST zeroes only what costs
            # no extra I/O; the file is private to the relay (docs/SECURITY.md).
            conn.execute("PRAGMA secure_delete = FAST")
            meta_head, head = schema.prepare(conn, self.path)
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            self._mirror.load(conn)
        except sqlite3.DatabaseError as exc:
            self._abandon()
            raise StorageCorrupt(
                f"{self.path}: the database cannot be used ({exc}). Nothing was changed; "
                "move the file aside to start empty, or restore it from a backup"
            ) from None
        except BaseException:
            self._abandon()
            raise
        self._mirror.head = head
        self._appends.page_size = page_size
        if not self._reserve.acquire():
            log.warning("not enough free space for the disk reserve; ingest waits for space")
        return Writer(
            conn, self._mirror, self, self._checkpointer, meta_head, page_size, self._hooks
        )

    def _abandon(self) -> None:
        self._connections.close_all()
        self._lock.release()

    async def close(self) -> None:
        if self._writer is None:
            return
        await self._writer.stop()
        self._writer = None
        await self._checkpointer.stop()
        self._readers.stop()
        self._connections.close_all()
        self._lock.release()

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise StorageUnavailable("the store is not open")
        return self._writer

    # --- inside the writer's transactions (`writer.Steps`)

    def appends_alone(self, ops: Sequence[Op]) -> bool:
        return self._appends.alone(ops)

    def append_in(self, txn: Txn, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        return self._appends.append(txn, requests)

    def before_commit(self, txn: Txn) -> None:
        if txn.head != self._mirror.head and self._mirror.waiting:
            self._cut_for_waiting(txn)
        if txn.gc:
            self._collect(txn)

    def housekeeping(self, conn: sqlite3.Connection) -> None:
        if self._appends.reclaim or time.monotonic() - self._maintained_at > MAINTENANCE_EVERY:
            self._maintained_at = time.monotonic()
            self.flush(conn)
            reclaim, self._appends.reclaim = self._appends.reclaim, False
            space.give_back(conn, self._appends.page_size, reclaim)

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write the last-seen times noted since (lazily kept: a crash loses a few seconds
        of them, which can only delay an expiry)."""
        stale = self._mirror.unflushed()
        if not stale:
            return
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("UPDATE registrations SET last_seen = ? WHERE id = ?", stale)
        except sqlite3.Error as exc:
            log.warning("could not record last-seen times: %s", exc)
            return
        self._mirror.flushed(stale)

    def disk_full(self) -> None:
        self._reserve.release()

    def _collect(self, txn: Txn) -> None:
        """Delete the chunks every active registration is past."""
        starts = [reg.backlog_start for reg in txn.active_regs()]
        chunks.delete_before(txn.conn, min(starts) if starts else txn.head.seq)

    # --- operations

    async def append(
        self, events: Sequence[bytes], now: float, dead_letters: DeadLetters | None = None
    ) -> AppendOutcome:
        if dead_letters is not None and not dead_letters.letters:
            dead_letters = None
        if dead_letters is None:
            if not events:
                return AppendOutcome(0, 0)
            if not self._mirror.has_active:
                # Nobody to deliver to: counted and dropped without touching the disk.
                return AppendOutcome(0, len(events))
        return await self.writer.append(events, sum(map(len, events)), now, dead_letters)

    async def register(
        self, registration_id: str, name: str | None, client_subject: str | None, now: float
    ) -> Registration:
        def run(txn: Txn) -> Reg:
            if txn.reg(registration_id) is not None:
                raise Conflict(f"registration id {registration_id} already exists")
            return txn.create(registration_id, name, client_subject, now)

        return self._public(await self.writer.submit(run))

    async def adopt(
        self,
        registration_id: str,
        legacy_batches: Sequence[tuple[int, Sequence[bytes]]],
        now: float,
    ) -> bool:
        check_legacy_batches(legacy_batches)

        def run(txn: Txn) -> bool:
            if txn.reg(registration_id) is not None:
                return False
            next_id = legacy_batches[-1][0] + 1 if legacy_batches else 0
            txn.create(registration_id, None, None, now, next_batch_id=next_id)
            legacy.insert(txn, registration_id, legacy_batches, now)
            return True

        size = sum(len(e) for _, entries in legacy_batches for e in entries)
        adopted: bool = await self.writer.submit(run, weight=size)
        return adopted

    async def unregister(self, registration_id: str) -> None:
        def run(txn: Txn) -> None:
            if txn.reg(registration_id) is None:
                raise RegistrationNotFound(registration_id)
            txn.delete(registration_id)
            self._appends.drops.forget(registration_id)

        await self.writer.submit(run)

    async def touch(self, registration_id: str, now: float) -> None:
        self._mirror.lookup(registration_id)
        self._mirror.saw(registration_id, now)

    async def fetch(
        self,
        registration_id: str,
        max_entries: int,
        max_bytes: int,
        now: float,
        waiting: bool = False,
    ) -> Batch | None:
        answered, ready = self._mirror.arrive(registration_id, now, waiting, max_entries, max_bytes)
        if answered:
            return ready
        wish: Wish | None = (max_entries, max_bytes) if waiting else None
        hand_out = partial(self._hand_out, registration_id, max_entries, max_bytes, wish)
        for _attempt in range(3):
            cut = await self.writer.submit(hand_out)
            if not isinstance(cut, _ToRead):
                return cut
            entries = await self._readers.read(cut.read)
            if len(entries) == cut.count:
                if cut.key is not None:
                    entries = self._mirror.shared.share(cut.key, entries)  # committed: cut
                return Batch(registration_id, cut.batch_id, entries, cut.deliveries)
            # The batch was acknowledged (and collected) between the cut and the read.
        raise StorageUnavailable("the pending batch changed while it was read; retry")

    def _hand_out(
        self,
        registration_id: str,
        max_entries: int,
        max_bytes: int,
        wish: Wish | None,
        txn: Txn,
    ) -> Batch | _ToRead | None:
        """In the writer: the pending batch again, else a new one, else None."""
        reg = txn.active_reg(registration_id)
        ready = self._mirror.take_ready(reg)
        if ready is not None:
            return ready
        if txn.legacy(registration_id):
            first = legacy.hand_out(txn, reg)
            read = partial(legacy.read, registration_id=registration_id, batch_id=first.batch_id)
            return _ToRead(first.batch_id, first.deliveries, first.count, read, None)
        self._mirror.withdraw(registration_id)  # a batch goes out now, or it is re-added
        if (pending_start := reg.pending_start) is not None:
            reg = dataclasses.replace(
                reg,
                pending_deliveries=reg.pending_deliveries + 1,
                redeliveries=reg.redeliveries + 1,
            )
            txn.put(reg)
            key = (registration_id, reg.next_batch_id - 1, pending_start, reg.cursor)
            shared = self._mirror.shared.get(key)
            if shared is not None:  # handed out and still held: no second copy
                return Batch(registration_id, key[1], shared, reg.pending_deliveries)
            size = chunks.byte_position(txn.conn, reg.cursor, txn.head) - (
                chunks.byte_position(txn.conn, pending_start, txn.head)
            )
        elif reg.cursor < txn.head.seq:
            reg, size = self._cut_new(txn, reg, max_entries, max_bytes)
        else:
            if wish is not None:
                self._mirror.wish(registration_id, wish)
            return None
        assert reg.pending_start is not None
        key = (registration_id, reg.next_batch_id - 1, reg.pending_start, reg.cursor)
        if size <= READY_MAX_BYTES:
            # Read here, in the transaction: no trip to a reader and back.
            entries = txn.share(key, chunks.read(txn.conn, key[2], key[3]))
            return Batch(registration_id, key[1], entries, reg.pending_deliveries)
        read_range = partial(chunks.read_snapshot, start=key[2], end=key[3])
        return _ToRead(key[1], reg.pending_deliveries, key[3] - key[2], read_range, key)

    @staticmethod
    def _cut_new(txn: Txn, reg: Reg, max_entries: int, max_bytes: int) -> tuple[Reg, int]:
        """A new pending batch from the registration's cursor (it has events past it),
        and its size in event bytes."""
        end = min(reg.cursor + max_entries, txn.head.seq)
        end, size = chunks.limit_bytes(txn.conn, reg.cursor, end, max_bytes, txn.head)
        reg = dataclasses.replace(
            reg,
            pending_start=reg.cursor,
            cursor=end,
            next_batch_id=reg.next_batch_id + 1,
            pending_deliveries=1,
        )
        txn.put(reg)
        return reg, size

    def _cut_for_waiting(self, txn: Txn) -> None:
        """Cut, in the transaction that appended events, a batch for each consumer
        waiting in a long poll (see `fetch(waiting=True)`), entries read right here.

        Its request then finds the batch ready when the append's wake-up reaches it:
        no second commit, no trip through the writer and a reader. The batch is
        committed as handed out once (deliveries 1) like any fetched batch; if the
        consumer went away it is simply the pending batch it gets next time. The
        poll's last fetch (at its deadline), or its cancellation (`abandon_wait`),
        withdraws the wish, so nothing is cut for a consumer that left.
        """
        reads: dict[tuple[int, int], Sequence[bytes]] = {}  # fan-out: one read per range
        for registration_id, wish in self._mirror.wishes():
            reg = txn.reg(registration_id)
            if (
                reg is None
                or not reg.active
                or txn.legacy(registration_id)
                or reg.pending_start is not None  # it has its batch: not waiting any more
            ):
                self._mirror.withdraw(registration_id)
                continue
            if reg.cursor >= txn.head.seq:
                continue
            max_entries, max_bytes = wish
            reg, _ = self._cut_new(txn, reg, max_entries, min(max_bytes, READY_MAX_BYTES))
            assert reg.pending_start is not None
            key = (registration_id, reg.next_batch_id - 1, reg.pending_start, reg.cursor)
            span = (key[2], key[3])
            if span not in reads:
                reads[span] = chunks.read(txn.conn, *span)
            entries = txn.share(key, reads[span])
            txn.ready[registration_id] = Batch(registration_id, key[1], entries, 1)

    def abandon_wait(self, registration_id: str) -> None:
        self._mirror.abandon(registration_id)

    async def ack(self, registration_id: str, batch_id: int, now: float) -> AckResult:
        self._mirror.lookup(registration_id)
        self._mirror.saw(registration_id, now)

        def run(txn: Txn) -> AckResult:
            reg = txn.active_reg(registration_id)
            if txn.legacy(registration_id):
                return legacy.ack(txn, registration_id, batch_id)
            if reg.pending_start is not None and batch_id == reg.pending_id:
                start_byte = chunks.byte_position(txn.conn, reg.cursor, txn.head)
                txn.put(
                    dataclasses.replace(
                        reg, pending_start=None, pending_deliveries=0, start_byte=start_byte
                    )
                )
                txn.gc = True
                return AckResult(True, reg.cursor - reg.pending_start)
            if 0 <= batch_id < reg.next_batch_id:
                return AckResult(False)
            raise BatchNotDelivered(registration_id, batch_id, reg.pending_id)

        result: AckResult = await self.writer.submit(run)
        return result

    async def expire(self, idle_since: float) -> ExpiryOutcome:
        forget_before = self.limits.forget_before(idle_since)

        def run(txn: Txn) -> ExpiryOutcome:
            expired, purged = [], []
            for reg in txn.all_regs():
                if reg.active and (seen := self._mirror.seen(reg)) < idle_since:
                    reg = txn.emptied(reg, active=False, last_seen=seen)
                    txn.put(reg)
                    txn.drop_legacy(reg.id)
                    expired.append(reg.id)
                if not reg.active and forget_before is not None and reg.last_seen < forget_before:
                    txn.delete(reg.id)
                    self._appends.drops.forget(reg.id)
                    purged.append(reg.id)
            txn.gc = txn.gc or bool(expired)
            return ExpiryOutcome(expired, purged)

        outcome: ExpiryOutcome = await self.writer.submit(run)
        return outcome

    async def revive(self, registration_id: str, now: float) -> bool:
        def run(txn: Txn) -> bool:
            reg = txn.reg(registration_id)
            if reg is None or reg.active:
                return False
            txn.put(txn.emptied(reg, active=True, last_seen=now))
            return True

        revived: bool = await self.writer.submit(run)
        if revived:
            self._mirror.saw(registration_id, now)
        return revived

    # --- views

    def _public(self, reg: Reg, **backlog: Any) -> Registration:
        public = reg.public(self._mirror.seen(reg), **backlog)
        adopted = self._mirror.legacy.get(reg.id)
        if not adopted:
            return public
        # Adopted batches come before the rest: the first of them is the pending one.
        return dataclasses.replace(
            public,
            backlog_events=public.backlog_events + sum(b.count for b in adopted),
            backlog_bytes=public.backlog_bytes + sum(b.size for b in adopted),
            oldest_unacked_at=adopted[0].ingested_at,
            pending_batch_id=adopted[0].batch_id,
            pending_deliveries=adopted[0].deliveries,
        )

    async def registrations(self) -> list[Registration]:
        regs = sorted(self._mirror.active(), key=lambda r: r.created_at)
        head = self._mirror.head

        def backlog(conn: sqlite3.Connection) -> list[Registration]:
            out = []
            for reg in regs:
                start = min(reg.backlog_start, head.seq)
                out.append(
                    self._public(
                        reg,
                        backlog_events=head.seq - start,
                        backlog_bytes=head.byte - chunks.byte_position(conn, start, head),
                        oldest_unacked_at=chunks.ingested_at(conn, start)
                        if start < head.seq
                        else None,
                    )
                )
            return out

        return await self._readers.read(backlog)

    async def status(self) -> StoreStatus:
        head = self._mirror.head

        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            tail = chunks.first_seq(conn)
            tail = head.seq if tail is None else tail
            return head.seq - tail, head.byte - chunks.byte_position(conn, tail, head)

        writer = self._writer
        failure = None if writer is None else writer.failure
        ok, detail = failure is None, failure or "ok"
        if writer is None or not writer.running:
            ok, detail = False, "the store's writer has stopped"
        try:
            events, nbytes = await self._readers.read(read)
        except StorageUnavailable as exc:
            ok, detail, events, nbytes = False, exc.message, 0, 0
        adopted = self._mirror.all_adopted()
        events += sum(batch.count for batch in adopted)
        nbytes += sum(batch.size for batch in adopted)
        disk, free = await asyncio.to_thread(self._disk_usage)
        return StoreStatus(self.name, ok, detail, events, nbytes, disk, free, head.seq)

    def _disk_usage(self) -> tuple[int, int | None]:
        disk = files.disk_usage(self.path)
        try:
            return disk, shutil.disk_usage(self.home).free
        except OSError:
            return disk, None

    # --- dead letters (stored by `append`)

    async def list_dead_letters(self, after_id: int, limit: int) -> list[DeadLetter]:
        return await self._readers.read(partial(dead_letters.page, after_id=after_id, limit=limit))

    async def count_dead_letters(self) -> int:
        return await self._readers.read(dead_letters.count)

    async def replay_dead_letters(self, ids: Sequence[int], now: float) -> AppendOutcome:
        wanted = sorted(set(ids))
        if not wanted:
            return AppendOutcome(0, 0)

        def run(txn: Txn) -> AppendOutcome:
            events = dead_letters.events(txn.conn, wanted)
            if not events:
                return AppendOutcome(0, 0)
            # The append step itself, so replayed events meet the same limits as ingest.
            [(outcome, refusal)] = self._appends.append(txn, [AppendRequest.of(events, now, None)])
            if refusal is not None:
                raise refusal
            assert outcome is not None
            if outcome.stored:
                dead_letters.delete(txn.conn, wanted)
            return outcome

        replayed: AppendOutcome = await self.writer.submit(run)
        return replayed

    async def purge_dead_letters(self, ids: Sequence[int] | None) -> int:
        wanted = None if ids is None else sorted(set(ids))
        purged: int = await self.writer.submit(lambda txn: dead_letters.delete(txn.conn, wanted))
        return purged
