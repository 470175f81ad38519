"""The embedded backend: one SQLite database (WAL mode) under `home_directory`.

Model
- `chunks`: events in ingest order, stored once whatever the number of
  registrations. A chunk is the events of one commit, concatenated as they
  were posted, with their boundaries in `offsets`: batched ingest is one
  B-tree insert per commit, not one per event.
- `registrations`: per consumer, a cursor (first seq not yet handed out) and
  the pending batch `[pending_start, cursor)` whose id is `next_batch_id - 1`.
- `meta`: schema version and the head (next seq, total bytes ever stored).
- `legacy_batches`: batches adopted from the Java server (`import-legacy`),
  per registration, handed out before its events from `chunks`.

Concurrency (the datasette way): one writer thread owns the write connection.
Operations are queued; the writer runs every queued operation in one
transaction, commits once (group commit: one fsync for all the requests that
were waiting), updates the in-memory mirror of the registrations, and only
then answers each caller. Reads of event data run on a small pool of read
connections, so neither disk writes nor reads block the event loop.
A checkpointer thread copies the WAL into the database file in the
background, every megabyte or so, so that the commit which reaches SQLite's
own checkpoint point (4 MB of WAL: it bounds the WAL, also on a full disk)
finds little or nothing left to copy and its callers do not wait for a
second write and fsync.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import queue
import shutil
import sqlite3
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from cfylogs.errors import (
    BatchNotDelivered,
    Conflict,
    RegistrationExpired,
    RegistrationNotFound,
    RelayError,
    StorageCorrupt,
    StorageUnavailable,
    StoreInUse,
)
from cfylogs.models import (
    AckResult,
    AppendOutcome,
    Batch,
    DeadLetter,
    JoinedEntries,
    Registration,
    StoreStatus,
)
from cfylogs.storage.base import RegistrationRow, Storage, StorageLimits, check_legacy_batches
from cfylogs.storage.reserve import DiskReserve

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_FILE = "cfylogs.sqlite3"
LOCK_FILE = "cfylogs.lock"
RESERVE_FILE = "cfylogs.reserve"
SCHEMA_VERSION = 4
#: Appends coalesced into one chunk stop growing it past this size.
MAX_CHUNK_BYTES = 32 * 1024**2
#: One transaction takes at most this much event data before committing.
MAX_GROUP_BYTES = 64 * 1024**2
#: How often lazily kept state (last seen) is written when idle, in seconds.
FLUSH_INTERVAL = 5.0
#: Housekeeping (last-seen flush, giving space back) runs at most this often (s).
MAINTENANCE_EVERY = 10.0
VACUUM_MIN_BYTES = 64 * 1024**2
VACUUM_SLICE_BYTES = 64 * 1024**2
#: The checkpointer copies the WAL into the database once about this much was written.
CHECKPOINT_BYTES = 1024**2
#: ...and at least this often (s) while anything was written since.
CHECKPOINT_EVERY = 1.0
#: A batch up to this size is read by the writer in the transaction that cuts it (a
#: larger one by a reader, off the writer); one cut ahead for a waiting consumer too.
READY_MAX_BYTES = 1024**2
#: A registration losing events to its backlog cap is reported at most this often (s).
DROP_WARN_EVERY = 60.0
#: Free space is measured for every commit unless it was measured this recently (s)
#: and found more than this above storage.min_free_bytes (bytes).
FREE_RECHECK_SEC = 0.5
FREE_RECHECK_MARGIN = 1024**3

_SYNC_PRAGMA = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE chunks (
    first_seq   INTEGER PRIMARY KEY,  -- seq of its first event
    count       INTEGER NOT NULL,
    first_byte  INTEGER NOT NULL,     -- event bytes stored before it, for backlog sizes
    ingested_at REAL NOT NULL,
    offsets     BLOB NOT NULL,        -- count + 1 uint32 boundaries in data
    data        BLOB NOT NULL         -- the events, exactly as posted, back to back
);
CREATE INDEX chunks_by_byte ON chunks (first_byte);
CREATE TABLE registrations (
    id                 TEXT PRIMARY KEY,
    name               TEXT,
    client_subject     TEXT,
    created_at         REAL NOT NULL,
    last_seen          REAL NOT NULL,
    active             INTEGER NOT NULL,
    cursor             INTEGER NOT NULL,
    next_batch_id      INTEGER NOT NULL,
    pending_start      INTEGER,           -- NULL when no batch is pending
    pending_deliveries INTEGER NOT NULL DEFAULT 0,
    redeliveries       INTEGER NOT NULL DEFAULT 0,
    dropped            INTEGER NOT NULL DEFAULT 0,
    start_byte         INTEGER NOT NULL DEFAULT 0  -- byte position of the backlog's start
);
"""
_LEGACY_SCHEMA = """
CREATE TABLE legacy_batches (
    registration_id TEXT NOT NULL,
    batch_id        INTEGER NOT NULL,
    ingested_at     REAL NOT NULL,
    deliveries      INTEGER NOT NULL DEFAULT 0,
    offsets         BLOB NOT NULL,      -- count + 1 uint32 boundaries in data
    data            BLOB NOT NULL,      -- the entries, exactly as the Java server kept them
    PRIMARY KEY (registration_id, batch_id)
);
"""
#: Events `ingest.accept` kept from consumers.
_DEAD_LETTERS_SCHEMA = """
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    reason      TEXT NOT NULL,
    event       BLOB NOT NULL
);
"""
#: What turns a store of schema version N into N + 1 (run at open, in one transaction).
#: 3 -> 4 changes no table: chunks written from 4 on hold a comma after each event and
#: meta's head may lag the last chunk, which releases before 4 would misread.
_MIGRATIONS = {1: _LEGACY_SCHEMA, 2: _DEAD_LETTERS_SCHEMA, 3: ""}


def encode_offsets(values: Sequence[int]) -> bytes:
    arr = array("I", values)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tobytes()


def decode_offsets(blob: bytes) -> array[int]:
    arr = array("I")
    arr.frombytes(blob)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr


@dataclass(frozen=True, slots=True)
class _Reg(RegistrationRow):
    """Mirror of a registration row, with where its backlog starts in the byte stream."""

    start_byte: int

    @property
    def backlog_start(self) -> int:
        return self.cursor if self.pending_start is None else self.pending_start


_REG_COLUMNS = [f.name for f in dataclasses.fields(_Reg)]
_REG_UPSERT = (
    f"INSERT OR REPLACE INTO registrations ({', '.join(_REG_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_REG_COLUMNS))})"
)


def _row(reg: _Reg) -> tuple[Any, ...]:
    return tuple(getattr(reg, name) for name in _REG_COLUMNS)


@dataclass(frozen=True, slots=True)
class _Legacy:
    """Mirror of an adopted batch (without its entries, which stay on disk)."""

    batch_id: int
    count: int
    size: int
    ingested_at: float
    deliveries: int


@dataclass(slots=True)
class _Op:
    run: Callable[[_Txn], Any]
    future: asyncio.Future[Any]
    events: Sequence[bytes] | None = None  # appends only: coalesced by the writer
    size: int = 0
    now: float = 0.0


class _Txn:
    """The writer's view during one transaction: staged registration changes."""

    def __init__(self, store: SqliteStorage) -> None:
        self.store = store
        self.conn = store._write_conn
        self.head = store._head
        self.head_byte = store._head_byte
        self.changed: dict[str, _Reg | None] = {}
        self.legacy_changed: dict[str, tuple[_Legacy, ...]] = {}
        self.gc = False

    def reg(self, registration_id: str) -> _Reg | None:
        if registration_id in self.changed:
            return self.changed[registration_id]
        return self.store._regs.get(registration_id)

    def active_reg(self, registration_id: str) -> _Reg:
        reg = self.reg(registration_id)
        if reg is None:
            raise RegistrationNotFound(registration_id)
        if not reg.active:
            raise RegistrationExpired(registration_id)
        return reg

    def emptied(self, reg: _Reg, **changes: Any) -> _Reg:
        """`reg` with an empty backlog: it starts at the head, nothing pending."""
        return dataclasses.replace(
            reg,
            cursor=self.head,
            start_byte=self.head_byte,
            pending_start=None,
            pending_deliveries=0,
            **changes,
        )

    def legacy(self, registration_id: str) -> tuple[_Legacy, ...]:
        if registration_id in self.legacy_changed:
            return self.legacy_changed[registration_id]
        return self.store._legacy.get(registration_id, ())

    def drop_legacy(self, registration_id: str) -> None:
        if self.legacy(registration_id):
            self.conn.execute(
                "DELETE FROM legacy_batches WHERE registration_id = ?", (registration_id,)
            )
            self.legacy_changed[registration_id] = ()

    def create(
        self,
        registration_id: str,
        name: str | None,
        client_subject: str | None,
        now: float,
        next_batch_id: int = 0,
    ) -> _Reg:
        """A new active registration that sees the events appended from now on."""
        reg = _Reg(
            id=registration_id,
            name=name,
            client_subject=client_subject,
            created_at=now,
            last_seen=now,
            active=True,
            cursor=self.head,
            next_batch_id=next_batch_id,
            pending_start=None,
            pending_deliveries=0,
            redeliveries=0,
            dropped=0,
            start_byte=self.head_byte,
        )
        self.put(reg)
        return reg

    def put(self, reg: _Reg) -> None:
        self.conn.execute(_REG_UPSERT, _row(reg))
        self.changed[reg.id] = reg

    def delete(self, registration_id: str) -> None:
        self.conn.execute("DELETE FROM registrations WHERE id = ?", (registration_id,))
        self.drop_legacy(registration_id)
        self.changed[registration_id] = None
        self.gc = True

    def active_regs(self) -> list[_Reg]:
        merged: dict[str, _Reg | None] = dict(self.store._regs)
        merged.update(self.changed)
        return [reg for reg in merged.values() if reg is not None and reg.active]


class SqliteStorage(Storage):
    name = "sqlite"

    def __init__(
        self,
        home: Path,
        sync: str = "full",
        limits: StorageLimits | None = None,
        readers: int = 2,
        reserve_bytes: int = 0,
    ) -> None:
        self.home = Path(home)
        self._reserve = DiskReserve(self.home / RESERVE_FILE, reserve_bytes)
        self._reclaim = False
        self.limits = limits or StorageLimits()
        self._page_size = 4096
        self._dropped_unreported: dict[str, int] = {}
        self._dropped_warned_at: dict[str, float] = {}
        self._maintained_at = time.monotonic()
        self.path = self.home / DB_FILE
        self.sync = _SYNC_PRAGMA[sync]
        self._reader_count = readers
        self._regs: dict[str, _Reg] = {}
        #: Long polls waiting for events: (max entries, max bytes) per registration...
        self._wanted: dict[str, tuple[int, int]] = {}
        #: ...and the batches cut for them by the append that brought events.
        self._ready: dict[str, Batch] = {}
        #: Whether any registration is active (read on every append, kept by the writer).
        self._has_active = False
        #: While the writer thread runs (cheaper to read than Thread.is_alive()).
        self._writer_running = False
        #: Adopted batches per registration, in delivery order (none for most).
        self._legacy: dict[str, tuple[_Legacy, ...]] = {}
        self._last_seen: dict[str, float] = {}
        self._head = 0
        self._head_byte = 0
        #: The head as meta has it (appends committed alone leave it behind).
        self._meta_head = (0, 0)
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        #: Set by the writer when the WAL should be copied into the database.
        self._checkpoint_due = threading.Event()
        #: Bytes committed since the checkpointer was last woken (an estimate).
        self._wal_bytes = 0
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: str | None = None
        #: Last free-space measure: (bytes, monotonic time, head_byte then).
        self._free_seen: tuple[int, float, int] | None = None

    # --- life cycle

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_sync)
        self._readers = ThreadPoolExecutor(self._reader_count, thread_name_prefix="cfylogs-read")
        self._thread = threading.Thread(target=self._writer_loop, name="cfylogs-write", daemon=True)
        self._writer_running = True  # before start: a request right after open() may come
        self._thread.start()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="cfylogs-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _open_sync(self) -> None:
        try:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if self.home.exists() and not self.home.is_dir():
                raise StorageCorrupt(
                    f"home_directory {self.home} is a file, not a directory; "
                    "point home_directory at a directory (it is created if missing)"
                ) from None
            raise StorageCorrupt(
                f"home_directory {self.home}: cannot use it ({exc.strerror}); "
                "check that it exists and that this user may write to it"
            ) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StoreInUse(
                f"home_directory {self.home} is in use by another cfylogs process; "
                "each relay needs its own home_directory (or share PostgreSQL instead)"
            ) from None
        try:
            _check_not_truncated(self.path)
            self._check_ours()
            self._write_conn = self._connect()
            # Python's SQLite is built with SECURE_DELETE: deleting acknowledged events
            # would write every freed page again, zeroed. FAST zeroes only what costs
            # no extra I/O; the file is private to the relay (docs/SECURITY.md).
            self._write_conn.execute("PRAGMA secure_delete = FAST")
            self._init_schema()
            self._load_mirror()
        except sqlite3.DatabaseError as exc:
            self._release_lock()
            raise StorageCorrupt(
                f"{self.path}: the database cannot be used ({exc}). Nothing was changed; "
                "move the file aside to start empty, or restore it from a backup"
            ) from None
        if not self._reserve.acquire():
            log.warning("not enough free space for the disk reserve; ingest waits for space")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.sync}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -16384")
        # The WAL is rewound after each checkpoint; past this size it is also truncated.
        conn.execute("PRAGMA journal_size_limit = 67108864")
        with self._conn_lock:
            self._connections.append(conn)
        return conn

    def _check_ours(self) -> None:
        """Read-only look at an existing file: a foreign or newer one is refused untouched
        (opening it for writing would already switch its journal mode)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                if tables:
                    raise StorageCorrupt(f"{self.path} is an SQLite database not made by cfylogs")
                return
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        finally:
            conn.close()
        version = row[0] if row else None
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StorageCorrupt(
                f"{self.path} was written by a newer cfylogs (schema {version}, this one "
                f"knows {SCHEMA_VERSION}); run that version, or a later one, on it"
            )

    def _init_schema(self) -> None:
        conn = self._write_conn
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if has_meta is None:  # a new file (`_check_ours` refused any other)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table
            conn.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA}; {_LEGACY_SCHEMA}; {_DEAD_LETTERS_SCHEMA}; "
                "INSERT INTO meta (key, value) VALUES "
                f"('schema_version', {SCHEMA_VERSION}), ('head_seq', 0), ('head_byte', 0); COMMIT;"
            )
            log.info("created the embedded store %s", self.path)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        # `_check_ours` refused a newer or foreign file: older ones are brought up to date.
        version = int(meta["schema_version"])
        while version < SCHEMA_VERSION:
            conn.executescript(
                f"BEGIN IMMEDIATE; {_MIGRATIONS[version]}; UPDATE meta SET value = "
                f"{version + 1} WHERE key = 'schema_version'; COMMIT;"
            )
            log.info("upgraded the embedded store %s to schema %d", self.path, version + 1)
            version += 1
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._meta_head = (int(meta["head_seq"]), int(meta["head_byte"]))
        self._head, self._head_byte = self._meta_head
        # Appends committed alone do not update meta (see _appends_alone): the last
        # chunk tells where the head is. Meta has it right whenever no chunk is left.
        last = conn.execute(
            "SELECT first_seq, count, first_byte, offsets FROM chunks "
            "ORDER BY first_seq DESC LIMIT 1"
        ).fetchone()
        if last is not None and last[0] + last[1] > self._head:
            self._head = int(last[0] + last[1])
            self._head_byte = int(last[2] + decode_offsets(last[3])[-1])

    def _load_mirror(self) -> None:
        cur = self._write_conn.execute(f"SELECT {', '.join(_REG_COLUMNS)} FROM registrations")
        self._regs = {}
        for row in cur.fetchall():
            values = dict(zip(_REG_COLUMNS, row, strict=True))
            values["active"] = bool(values["active"])
            reg = _Reg(**values)
            self._regs[reg.id] = reg
        self._has_active = any(reg.active for reg in self._regs.values())
        legacy: dict[str, list[_Legacy]] = {}
        for rid, batch_id, offsets, size, ingested_at, deliveries in self._write_conn.execute(
            "SELECT registration_id, batch_id, offsets, length(data), ingested_at, deliveries "
            "FROM legacy_batches ORDER BY registration_id, batch_id"
        ):
            count = len(decode_offsets(offsets)) - 1
            legacy.setdefault(rid, []).append(
                _Legacy(batch_id, count, size, ingested_at, deliveries)
            )
        self._legacy = {rid: tuple(batches) for rid, batches in legacy.items()}

    async def close(self) -> None:
        if self._thread is None:
            return
        self._closing = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._checkpointer is not None:
            self._checkpoint_due.set()  # with _closing set: it stops
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the writer

    async def _submit(
        self,
        run: Callable[[_Txn], T],
        events: Sequence[bytes] | None = None,
        size: int = 0,
        now: float = 0.0,
    ) -> T:
        if self._closing or self._loop is None:
            raise StorageUnavailable("the relay is shutting down; retry shortly")
        if not self._writer_running:
            raise StorageUnavailable("the store's writer has stopped; see the relay's log")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Op(run, future, events, size, now))
        return await future

    def _writer_loop(self) -> None:
        try:
            self._write_until_closed()
        finally:
            self._writer_running = False

    def _write_until_closed(self) -> None:
        stopping = False
        while not stopping:
            if self._reclaim or time.monotonic() - self._maintained_at > MAINTENANCE_EVERY:
                self._maintain()
            try:
                first = self._queue.get(timeout=FLUSH_INTERVAL)
            except queue.Empty:
                self._flush_last_seen()
                continue
            ops: list[_Op] = []
            size = 0
            item: _Op | None = first
            while True:
                if item is None:
                    stopping = True
                else:
                    ops.append(item)
                    size += item.size
                if size >= MAX_GROUP_BYTES:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if ops:
                try:
                    self._run_group(ops)
                except Exception as exc:  # outside the transaction: answer them, go on
                    log.exception("the store's writer failed %d operation(s)", len(ops))
                    error = StorageUnavailable(f"the store cannot take this now: {exc}")
                    failed: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
                        (op.future, None, error) for op in ops
                    ]
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(_resolve_all, failed)
        self._flush_last_seen()

    def _run_group(self, ops: list[_Op]) -> None:
        """Run `ops` in one transaction and answer their callers after the commit."""
        try:
            outcomes = self._transaction(ops)
        except Exception as exc:
            error = StorageUnavailable(f"the store cannot take this now: {exc}")
            error.__cause__ = exc
            if _is_disk_full(exc):
                self._reserve.release()  # room for the acks and fetches below
            outcomes = [(op.future, None, error) for op in ops if op.events is not None]
            others = [op for op in ops if op.events is None]
            # A full disk refuses the appends; acks and fetches, which let consumers
            # drain and space come back, get a transaction of their own.
            if others and outcomes:
                try:
                    outcomes += self._transaction(others)
                except Exception:
                    outcomes += [(op.future, None, error) for op in others]
            else:
                outcomes += [(op.future, None, error) for op in others]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve_all, outcomes)

    def _transaction(
        self, ops: list[_Op]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        if self._appends_alone(ops):
            return self._append_alone(ops)
        txn = _Txn(self)
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        conn = self._write_conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            index = 0
            while index < len(ops):
                op = ops[index]
                if op.events is not None:
                    run_end = index
                    while run_end < len(ops) and ops[run_end].events is not None:
                        run_end += 1
                    appends = ops[index:run_end]
                    for op_, (result, refusal) in zip(
                        appends, self._append_run(txn, appends), strict=True
                    ):
                        outcomes.append((op_.future, result, refusal))
                    index = run_end
                    continue
                try:
                    outcomes.append((op.future, op.run(txn), None))
                except RelayError as exc:  # a refusal: the operation wrote nothing
                    outcomes.append((op.future, None, exc))
                index += 1
            ready = self._cut_for_waiting(txn) if self._wanted and txn.head != self._head else {}
            if txn.gc:
                self._collect_garbage(txn)
            if (txn.head, txn.head_byte) != self._meta_head:
                conn.executemany(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    [(txn.head, "head_seq"), (txn.head_byte, "head_byte")],
                )
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._on_failure(exc)
            raise
        self._failure = None
        self._note_written(txn.head_byte - self._head_byte + self._page_size * len(ops))
        for registration_id, reg in txn.changed.items():
            if reg is None or not reg.active:
                self._wanted.pop(registration_id, None)
                self._ready.pop(registration_id, None)
            if reg is None:
                self._regs.pop(registration_id, None)
                self._last_seen.pop(registration_id, None)
            else:
                self._regs[registration_id] = reg
        for registration_id in ready:  # after the mirror: _take_ready checks against it
            self._wanted.pop(registration_id, None)
        self._ready.update(ready)
        if txn.changed:
            self._has_active = any(reg.active for reg in self._regs.values())
        for registration_id, batches in txn.legacy_changed.items():
            if batches:
                self._legacy[registration_id] = batches
            else:
                self._legacy.pop(registration_id, None)
        self._head, self._head_byte = txn.head, txn.head_byte
        self._meta_head = (txn.head, txn.head_byte)
        return outcomes

    def _appends_alone(self, ops: list[_Op]) -> bool:
        """Whether `ops` are appends that one INSERT stores whole, with nothing else to write.

        Such a group (single-event ingest under load is made of them) needs no
        explicit transaction: the INSERT commits itself, in one SQLite call where
        BEGIN, INSERT, meta and COMMIT took four, each giving the GIL away and
        waiting to get it back from the busy event loop. Not when an event cap
        would move a backlog (that writes registrations) or the group needs two
        chunks (they must commit together).
        """
        count = size = 0
        for op in ops:
            if op.events is None:
                return False
            count += len(op.events)
            size += op.size
        if size >= MAX_CHUNK_BYTES or self._wanted:  # long polls: see _cut_for_waiting
            return False
        max_events, max_bytes = self.limits.max_backlog_events, self.limits.max_backlog_bytes
        for reg in tuple(self._regs.values()):
            if reg.active and (
                (max_events and self._head + count - reg.backlog_start > max_events)
                or (max_bytes and self._head_byte + size - reg.start_byte > max_bytes)
            ):
                return False
        return True

    def _append_alone(
        self, ops: list[_Op]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        txn = _Txn(self)
        try:
            results = self._append_run(txn, ops)  # its INSERT commits by itself
        except Exception as exc:
            self._on_failure(exc)
            raise
        assert not txn.changed and not txn.gc, "_appends_alone let a cap through"
        self._failure = None
        self._note_written(txn.head_byte - self._head_byte + self._page_size)
        self._head, self._head_byte = txn.head, txn.head_byte
        return [(op.future, *result) for op, result in zip(ops, results, strict=True)]

    def _note_written(self, nbytes: int) -> None:
        """Wake the checkpointer once about CHECKPOINT_BYTES went into the WAL."""
        self._wal_bytes += nbytes
        if self._wal_bytes >= CHECKPOINT_BYTES:
            self._wal_bytes = 0
            self._checkpoint_due.set()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database file, off the commit path.

        A PASSIVE checkpoint neither waits for nor blocks the writer and the
        readers; the writer rewinds the WAL by itself once it was copied whole.
        A failed checkpoint (disk full) is retried on the next round; one that
        finds the writer's own checkpoint running just skips that round.
        """
        conn = self._connect()
        failing = False
        while not self._closing:
            self._checkpoint_due.wait(CHECKPOINT_EVERY)
            self._checkpoint_due.clear()
            if self._closing:
                break
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                failing = False
            except sqlite3.Error as exc:
                if not failing:
                    log.warning("could not checkpoint the embedded store's WAL: %s", exc)
                failing = True

    def _on_failure(self, exc: Exception) -> None:
        if self._failure is None:
            if isinstance(exc, sqlite3.Error):
                log.error("embedded store write failed: %s", exc)
            else:
                log.exception("embedded store write failed unexpectedly")
        self._failure = str(exc)
        with contextlib.suppress(sqlite3.Error):
            self._load_mirror()

    def _append_run(
        self, txn: _Txn, ops: list[_Op]
    ) -> list[tuple[AppendOutcome | None, RelayError | None]]:
        active = txn.active_regs()
        if not active:
            return [(AppendOutcome(0, len(op.events or ())), None) for op in ops]
        if not self._reserve.acquire():
            self._reclaim = True  # the writer gives drained pages back to the disk next
            full = StorageUnavailable(
                f"the disk under {self.home} is full; ingest resumes by itself once "
                "consumers catch up or space is freed"
            )
            return [(None, full) for _ in ops]
        free = self._free_bytes() if self.limits.min_free_bytes else None
        results: list[tuple[AppendOutcome | None, RelayError | None]] = []
        accepted: list[bytes] = []
        added_bytes = 0
        for op in ops:
            events = op.events or ()
            refusal = self._refusal(
                txn, active, len(accepted) + len(events), added_bytes + op.size, free
            )
            if refusal is not None:
                results.append((None, refusal))
                continue
            accepted.extend(events)
            added_bytes += op.size
            results.append((AppendOutcome(len(events), 0), None))
        now = ops[-1].now
        chunk: list[bytes] = []
        chunk_bytes = 0
        for event in accepted:
            chunk.append(event)
            chunk_bytes += len(event)
            if chunk_bytes >= MAX_CHUNK_BYTES:
                self._insert_chunk(txn, chunk, now)
                chunk, chunk_bytes = [], 0
        if chunk:
            self._insert_chunk(txn, chunk, now)
        if accepted and self.limits.backlog_policy == "drop_oldest":
            self._drop_over_cap(txn)
        return results

    def _free_bytes(self) -> int:
        """Free space for new data: the file system's, plus pages SQLite will reuse.

        statvfs and the freelist count are a good share of a small group commit's
        CPU (single-event ingest), so far above the watermark a measure is reused
        for up to FREE_RECHECK_SEC, less twice what was appended since (WAL and
        database copies); close to it, every group measures afresh.
        """
        now = time.monotonic()
        if self._free_seen is not None:
            free, seen_at, head_byte = self._free_seen
            estimate = free - 2 * (self._head_byte - head_byte)
            fresh = now - seen_at < FREE_RECHECK_SEC
            if fresh and estimate - self.limits.min_free_bytes > FREE_RECHECK_MARGIN:
                return estimate
        stat = os.statvfs(self.home)
        freelist = self._write_conn.execute("PRAGMA freelist_count").fetchone()[0]
        free = stat.f_bavail * stat.f_frsize + int(freelist) * self._page_size
        self._free_seen = (free, now, self._head_byte)
        return free

    def _refusal(
        self, txn: _Txn, active: list[_Reg], events: int, size: int, free: int | None
    ) -> RelayError | None:
        limits = self.limits
        if free is not None and free - size < limits.min_free_bytes:
            return StorageUnavailable(
                f"free disk space under {self.home} ({free} bytes) is below "
                f"storage.min_free_bytes ({limits.min_free_bytes}); ingest resumes by itself "
                "once consumers catch up or space is freed"
            )
        if limits.backlog_policy != "reject":
            return None
        for reg in active:
            if (
                limits.max_backlog_events
                and txn.head - reg.backlog_start + events > limits.max_backlog_events
            ) or (
                limits.max_backlog_bytes
                and txn.head_byte - reg.start_byte + size > limits.max_backlog_bytes
            ):
                return StorageUnavailable(
                    f"the backlog of registration {reg.id} is full (storage.max_backlog_events "
                    "/ storage.max_backlog_bytes, policy reject); retry once it catches up"
                )
        return None

    def _drop_over_cap(self, txn: _Txn) -> None:
        """Policy drop_oldest: move the start of every backlog over a cap forward."""
        max_events, max_bytes = self.limits.max_backlog_events, self.limits.max_backlog_bytes
        for reg in txn.active_regs():
            start = reg.backlog_start
            new_start = start
            if max_events and txn.head - start > max_events:
                new_start = txn.head - max_events
            if max_bytes and txn.head_byte - reg.start_byte > max_bytes:
                new_start = max(new_start, self._seq_at_byte(txn, txn.head_byte - max_bytes))
            if new_start == start:
                continue
            pending_start = reg.pending_start
            if pending_start is not None:
                # Part of the pending batch must go: all of it goes (its ack becomes a no-op).
                pending_start = None
                new_start = max(new_start, reg.cursor)
            txn.put(
                dataclasses.replace(
                    reg,
                    pending_start=pending_start,
                    pending_deliveries=0,
                    cursor=max(reg.cursor, new_start),
                    start_byte=self._byte_position(txn.conn, new_start, txn.head, txn.head_byte),
                    dropped=reg.dropped + new_start - start,
                )
            )
            txn.gc = True
            self._warn_dropped(reg.id, new_start - start)

    def _seq_at_byte(self, txn: _Txn, position: int) -> int:
        """The first event that starts at or after byte `position`."""
        row = txn.conn.execute(
            "SELECT first_seq, first_byte, offsets FROM chunks WHERE first_byte <= ? "
            "ORDER BY first_byte DESC LIMIT 1",
            (position,),
        ).fetchone()
        if row is None:
            return txn.head
        first_seq, first_byte, offsets_blob = row
        offsets = decode_offsets(offsets_blob)
        index = bisect.bisect_left(offsets, position - first_byte)
        return min(int(first_seq) + index, txn.head)

    def _warn_dropped(self, registration_id: str, count: int) -> None:
        total = self._dropped_unreported.get(registration_id, 0) + count
        now = time.monotonic()
        if now - self._dropped_warned_at.get(registration_id, -DROP_WARN_EVERY) < DROP_WARN_EVERY:
            self._dropped_unreported[registration_id] = total
            return
        self._dropped_unreported[registration_id] = 0
        self._dropped_warned_at[registration_id] = now
        log.warning(
            "registration %s is over its backlog cap (storage.max_backlog_events / "
            "storage.max_backlog_bytes): dropped its %d oldest unacknowledged events; "
            "is its consumer still running?",
            registration_id,
            total,
        )

    def _insert_chunk(self, txn: _Txn, events: list[bytes], now: float) -> None:
        # Each event is stored with a comma after it: a batch is then one slice of
        # `data`, already the inside of a JSON array (see _read_range).
        offsets, data = _pack(events, b",")
        txn.conn.execute(
            "INSERT INTO chunks (first_seq, count, first_byte, ingested_at, offsets, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (txn.head, len(events), txn.head_byte, now, offsets, data),
        )
        txn.head += len(events)
        txn.head_byte += len(data) - len(events)  # event bytes: commas are not counted

    def _collect_garbage(self, txn: _Txn) -> None:
        """Delete the chunks every active registration is past."""
        starts = [reg.backlog_start for reg in txn.active_regs()]
        keep_from = min(starts) if starts else txn.head
        row = txn.conn.execute(
            "SELECT first_seq, count FROM chunks WHERE first_seq <= ? "
            "ORDER BY first_seq DESC LIMIT 1",
            (keep_from,),
        ).fetchone()
        if row is None:
            return
        first_seq, count = row
        if first_seq + count <= keep_from:
            txn.conn.execute("DELETE FROM chunks WHERE first_seq <= ?", (first_seq,))
        else:
            txn.conn.execute("DELETE FROM chunks WHERE first_seq < ?", (first_seq,))

    def _maintain(self) -> None:
        """Give space back to the file system once most of the file is free pages.

        Free pages are reused by new events first, so a file that drained stays
        at its size only while it is likely to fill again; past half free, a
        bounded slice is returned per pass (bounded, to keep commits quick).
        """
        self._maintained_at = time.monotonic()
        self._flush_last_seen()
        conn = self._write_conn
        # The disk is full (reserve given up): every free page helps ingest resume.
        reclaim, self._reclaim = self._reclaim, False
        try:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            total = conn.execute("PRAGMA page_count").fetchone()[0]
            if (reclaim and free) or (
                free * 2 > total and free * self._page_size > VACUUM_MIN_BYTES
            ):
                pages = min(free // 2, VACUUM_SLICE_BYTES // self._page_size)
                conn.execute(f"PRAGMA incremental_vacuum({int(pages)})")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("could not give free space back to the file system: %s", exc)

    def _flush_last_seen(self) -> None:
        stale = [
            (seen, rid)
            for rid, seen in list(self._last_seen.items())
            if (reg := self._regs.get(rid)) is not None and seen > reg.last_seen
        ]
        if not stale:
            return
        try:
            with self._write_conn:
                self._write_conn.execute("BEGIN IMMEDIATE")
                self._write_conn.executemany(
                    "UPDATE registrations SET last_seen = ? WHERE id = ?", stale
                )
        except sqlite3.Error as exc:
            log.warning("could not record last-seen times: %s", exc)
            return
        for seen, rid in stale:
            reg = self._regs.get(rid)
            if reg is not None and seen > reg.last_seen:
                self._regs[rid] = dataclasses.replace(reg, last_seen=seen)

    # --- reads (reader pool)

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None or self._loop is None:
            raise StorageUnavailable("the store is not open")

        def run() -> T:
            try:
                return fn(self._read_conn())
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"the store cannot be read now: {exc}") from exc

        return await self._loop.run_in_executor(self._readers, run)

    @staticmethod
    def _read_range(conn: sqlite3.Connection, start: int, end: int) -> JoinedEntries:
        """Events [start, end), on a reader connection."""
        conn.execute("BEGIN")  # the chunk list and the blobs from one snapshot
        try:
            return SqliteStorage._read_chunks(conn, start, end)
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _read_chunks(conn: sqlite3.Connection, start: int, end: int) -> JoinedEntries:
        """Events [start, end), within the caller's transaction: only their bytes are
        read, as one slice per chunk."""
        pieces: list[bytes] = []
        bounds = [0]
        rows = conn.execute(
            "SELECT first_seq, offsets FROM chunks WHERE first_seq >= "
            "coalesce((SELECT max(first_seq) FROM chunks WHERE first_seq <= ?), 0) "
            "AND first_seq < ? ORDER BY first_seq",
            (start, end),
        ).fetchall()
        for first_seq, offsets_blob in rows:
            offsets = decode_offsets(offsets_blob)
            lo = max(start - first_seq, 0)
            hi = min(end - first_seq, len(offsets) - 1)
            if lo >= hi:
                continue
            with conn.blobopen("chunks", "data", first_seq, readonly=True) as blob:
                # Chunks written before the commas (schema 3) are event bytes only.
                commas = len(blob) != offsets[-1]
                step = 1 if commas else 0
                blob.seek(offsets[lo] + lo * step)
                piece = blob.read(offsets[hi] + hi * step - offsets[lo] - lo * step)
            if not commas:
                offsets, piece = _with_commas(piece, offsets, lo, hi)
                lo, hi = 0, len(offsets) - 1
            base = bounds[-1] - offsets[lo] - lo
            bounds.extend(base + offsets[i] + i for i in range(lo + 1, hi + 1))
            pieces.append(piece)
        return JoinedEntries(pieces[0] if len(pieces) == 1 else b"".join(pieces), bounds)

    @staticmethod
    def _byte_position(conn: sqlite3.Connection, seq: int, head: int, head_byte: int) -> int:
        if seq >= head:
            return head_byte
        row = conn.execute(
            "SELECT first_seq, first_byte, offsets FROM chunks WHERE first_seq <= ? "
            "ORDER BY first_seq DESC LIMIT 1",
            (seq,),
        ).fetchone()
        if row is None:
            return head_byte
        first_seq, first_byte, offsets_blob = row
        offsets = decode_offsets(offsets_blob)
        index = min(seq - first_seq, len(offsets) - 1)
        position: int = first_byte + offsets[index]
        return position

    # --- operations

    async def append(self, events: Sequence[bytes], now: float) -> AppendOutcome:
        if not events:
            return AppendOutcome(0, 0)
        if not self._has_active:
            # Nobody to deliver to: counted and dropped without touching the disk.
            return AppendOutcome(0, len(events))
        size = sum(map(len, events))
        return await self._submit(_never_called, events=events, size=size, now=now)

    async def register(
        self, registration_id: str, name: str | None, client_subject: str | None, now: float
    ) -> Registration:
        def run(txn: _Txn) -> _Reg:
            if txn.reg(registration_id) is not None:
                raise Conflict(f"registration id {registration_id} already exists")
            return txn.create(registration_id, name, client_subject, now)

        reg = await self._submit(run)
        return self._public(reg)

    async def adopt(
        self,
        registration_id: str,
        legacy_batches: Sequence[tuple[int, Sequence[bytes]]],
        now: float,
    ) -> bool:
        check_legacy_batches(legacy_batches)

        def run(txn: _Txn) -> bool:
            if txn.reg(registration_id) is not None:
                return False
            next_id = legacy_batches[-1][0] + 1 if legacy_batches else 0
            txn.create(registration_id, None, None, now, next_batch_id=next_id)
            mirror = []
            for batch_id, entries in legacy_batches:
                offsets, data = _pack(entries)
                txn.conn.execute(
                    "INSERT INTO legacy_batches (registration_id, batch_id, ingested_at, "
                    "offsets, data) VALUES (?, ?, ?, ?, ?)",
                    (registration_id, batch_id, now, offsets, data),
                )
                mirror.append(_Legacy(batch_id, len(entries), len(data), now, 0))
            txn.legacy_changed[registration_id] = tuple(mirror)
            return True

        size = sum(len(e) for _, entries in legacy_batches for e in entries)
        adopted: bool = await self._submit(run, size=size)
        return adopted

    async def unregister(self, registration_id: str) -> None:
        def run(txn: _Txn) -> None:
            if txn.reg(registration_id) is None:
                raise RegistrationNotFound(registration_id)
            txn.delete(registration_id)

        await self._submit(run)

    def _lookup(self, registration_id: str) -> _Reg:
        reg = self._regs.get(registration_id)
        if reg is None:
            raise RegistrationNotFound(registration_id)
        if not reg.active:
            raise RegistrationExpired(registration_id)
        return reg

    async def touch(self, registration_id: str, now: float) -> None:
        self._lookup(registration_id)
        self._last_seen[registration_id] = now

    async def fetch(
        self,
        registration_id: str,
        max_entries: int,
        max_bytes: int,
        now: float,
        waiting: bool = False,
    ) -> Batch | None:
        # _ready before the mirror: the writer updates the mirror first, so a batch
        # seen here is checked against a registration at least as recent.
        ready = self._ready.pop(registration_id, None)
        reg = self._lookup(registration_id)
        self._last_seen[registration_id] = now
        if not waiting:  # the long poll, if any, is over: cut nothing more for it
            self._wanted.pop(registration_id, None)
        if self._still_pending(ready, reg):
            self._wanted.pop(registration_id, None)
            return ready
        if (
            reg.pending_start is None
            and reg.cursor >= self._head
            and registration_id not in self._legacy
        ):
            if waiting:
                self._wanted[registration_id] = (max_entries, max_bytes)
            return None

        def run(txn: _Txn) -> tuple[int, int, int, int, bool] | Batch | None:
            reg = txn.active_reg(registration_id)
            ready = self._ready.pop(registration_id, None)
            if self._still_pending(ready, reg):
                self._wanted.pop(registration_id, None)
                return ready
            if txn.legacy(registration_id):
                return self._hand_out_legacy(txn, reg)
            self._wanted.pop(registration_id, None)  # a batch goes out now, or it is re-added
            if (pending_start := reg.pending_start) is not None:
                reg = dataclasses.replace(
                    reg,
                    pending_deliveries=reg.pending_deliveries + 1,
                    redeliveries=reg.redeliveries + 1,
                )
                txn.put(reg)
                head, head_byte = txn.head, txn.head_byte
                size = self._byte_position(txn.conn, reg.cursor, head, head_byte) - (
                    self._byte_position(txn.conn, pending_start, head, head_byte)
                )
            elif reg.cursor < txn.head:
                reg, size = self._cut_new(txn, reg, max_entries, max_bytes)
            else:
                if waiting:
                    self._wanted[registration_id] = (max_entries, max_bytes)
                return None
            assert reg.pending_start is not None
            batch_id, start, end = reg.next_batch_id - 1, reg.pending_start, reg.cursor
            if size <= READY_MAX_BYTES:
                # Read here, in the transaction: no trip to a reader and back.
                entries = self._read_chunks(txn.conn, start, end)
                return Batch(registration_id, batch_id, entries, reg.pending_deliveries)
            return batch_id, start, end, reg.pending_deliveries, False

        for _attempt in range(3):
            cut = await self._submit(run)
            if cut is None or isinstance(cut, Batch):
                return cut
            batch_id, start, end, deliveries, legacy = cut
            read = (
                partial(self._read_legacy, registration_id=registration_id, batch_id=batch_id)
                if legacy
                else partial(self._read_range, start=start, end=end)
            )
            entries = await self._read(read)
            if len(entries) == end - start:
                return Batch(registration_id, batch_id, entries, deliveries)
            # The batch was acknowledged (and collected) between the cut and the read.
        raise StorageUnavailable("the pending batch changed while it was read; retry")

    def _cut_new(self, txn: _Txn, reg: _Reg, max_entries: int, max_bytes: int) -> tuple[_Reg, int]:
        """A new pending batch from the registration's cursor (it has events past it),
        and its size in event bytes."""
        end = min(reg.cursor + max_entries, txn.head)
        end, size = self._limit_bytes(txn, reg.cursor, end, max_bytes)
        reg = dataclasses.replace(
            reg,
            pending_start=reg.cursor,
            cursor=end,
            next_batch_id=reg.next_batch_id + 1,
            pending_deliveries=1,
        )
        txn.put(reg)
        return reg, size

    @staticmethod
    def _still_pending(batch: Batch | None, reg: _Reg) -> bool:
        """Whether a batch cut ahead for a waiting consumer is still the pending one
        (`reg` as of now): not acknowledged or dropped by a cap meanwhile."""
        return batch is not None and reg.pending_start is not None and reg.pending_id == batch.id

    def _cut_for_waiting(self, txn: _Txn) -> dict[str, Batch]:
        """Cut, in the transaction that appended events, a batch for each consumer
        waiting in a long poll (see `fetch(waiting=True)`), entries read right here.

        Its request then finds the batch ready when the append's wake-up reaches it:
        no second commit, no trip through the writer and a reader. The batch is
        committed as handed out once (deliveries 1) like any fetched batch; if the
        consumer went away it is simply the pending batch it gets next time.
        """
        ready: dict[str, Batch] = {}
        for registration_id, (max_entries, max_bytes) in tuple(self._wanted.items()):
            reg = txn.reg(registration_id)
            if reg is None or not reg.active or txn.legacy(registration_id):
                self._wanted.pop(registration_id, None)
                continue
            if reg.pending_start is not None:  # it has its batch: not waiting any more
                self._wanted.pop(registration_id, None)
                continue
            if reg.cursor >= txn.head:
                continue
            reg, _ = self._cut_new(txn, reg, max_entries, min(max_bytes, READY_MAX_BYTES))
            assert reg.pending_start is not None
            entries = self._read_chunks(txn.conn, reg.pending_start, reg.cursor)
            ready[registration_id] = Batch(registration_id, reg.next_batch_id - 1, entries, 1)
        return ready

    @staticmethod
    def _hand_out_legacy(txn: _Txn, reg: _Reg) -> tuple[int, int, int, int, bool]:
        """Adopted batches go first, each whole, under its own id."""
        first, *rest = txn.legacy(reg.id)
        first = dataclasses.replace(first, deliveries=first.deliveries + 1)
        txn.conn.execute(
            "UPDATE legacy_batches SET deliveries = ? WHERE registration_id = ? AND batch_id = ?",
            (first.deliveries, reg.id, first.batch_id),
        )
        txn.legacy_changed[reg.id] = (first, *rest)
        if first.deliveries > 1:
            txn.put(dataclasses.replace(reg, redeliveries=reg.redeliveries + 1))
        return first.batch_id, 0, first.count, first.deliveries, True

    @staticmethod
    def _read_legacy(conn: sqlite3.Connection, registration_id: str, batch_id: int) -> list[bytes]:
        row = conn.execute(
            "SELECT offsets, data FROM legacy_batches WHERE registration_id = ? AND batch_id = ?",
            (registration_id, batch_id),
        ).fetchone()
        if row is None:  # acknowledged meanwhile
            return []
        offsets, view = decode_offsets(row[0]), memoryview(row[1])
        return [bytes(view[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1)]

    def _limit_bytes(self, txn: _Txn, start: int, end: int, max_bytes: int) -> tuple[int, int]:
        """Where a batch from `start` ends: at `end` at the latest, within `max_bytes` of
        events but never empty; and how many event bytes it holds."""
        conn = txn.conn
        base = self._byte_position(conn, start, txn.head, txn.head_byte)
        span = self._byte_position(conn, end, txn.head, txn.head_byte) - base
        if span <= max_bytes:
            return end, span
        rows = conn.execute(
            "SELECT first_seq, first_byte, offsets FROM chunks "
            "WHERE first_seq >= (SELECT max(first_seq) FROM chunks WHERE first_seq <= ?) "
            "AND first_seq < ? ORDER BY first_seq",
            (start, end),
        )
        for first_seq, first_byte, offsets_blob in rows:
            offsets = decode_offsets(offsets_blob)
            for i in range(max(start - first_seq, 0), len(offsets) - 1):
                seq: int = first_seq + i
                if seq >= end:
                    return end, span
                size = first_byte + offsets[i + 1] - base
                if size > max_bytes:
                    if seq == start:  # one event larger than max_bytes: alone
                        return start + 1, size
                    return seq, first_byte + offsets[i] - base
        return end, span

    async def ack(self, registration_id: str, batch_id: int, now: float) -> AckResult:
        self._lookup(registration_id)
        self._last_seen[registration_id] = now

        def run(txn: _Txn) -> AckResult:
            reg = txn.active_reg(registration_id)
            if txn.legacy(registration_id):
                return self._ack_legacy(txn, registration_id, batch_id)
            if reg.pending_start is not None and batch_id == reg.pending_id:
                start_byte = self._byte_position(txn.conn, reg.cursor, txn.head, txn.head_byte)
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

        return await self._submit(run)

    @staticmethod
    def _ack_legacy(txn: _Txn, registration_id: str, batch_id: int) -> AckResult:
        # The first adopted batch may have been handed out by the Java server just
        # before the migration: its ack is accepted even before we deliver it.
        first, *rest = txn.legacy(registration_id)
        if batch_id == first.batch_id:
            txn.conn.execute(
                "DELETE FROM legacy_batches WHERE registration_id = ? AND batch_id = ?",
                (registration_id, batch_id),
            )
            txn.legacy_changed[registration_id] = tuple(rest)
            return AckResult(True, first.count)
        if 0 <= batch_id < first.batch_id:
            return AckResult(False)
        raise BatchNotDelivered(registration_id, batch_id, first.batch_id)

    async def expire(self, idle_since: float) -> list[str]:
        def run(txn: _Txn) -> list[str]:
            expired = []
            for reg in txn.active_regs():
                seen = max(self._last_seen.get(reg.id, 0.0), reg.last_seen)
                if seen < idle_since:
                    txn.put(txn.emptied(reg, active=False, last_seen=seen))
                    txn.drop_legacy(reg.id)
                    expired.append(reg.id)
            txn.gc = txn.gc or bool(expired)
            return expired

        return await self._submit(run)

    async def revive(self, registration_id: str, now: float) -> bool:
        def run(txn: _Txn) -> bool:
            reg = txn.reg(registration_id)
            if reg is None or reg.active:
                return False
            txn.put(txn.emptied(reg, active=True, last_seen=now))
            return True

        revived: bool = await self._submit(run)
        if revived:
            self._last_seen[registration_id] = now
        return revived

    # --- views

    def _public(self, reg: _Reg, **backlog: Any) -> Registration:
        last_seen = max(reg.last_seen, self._last_seen.get(reg.id, 0.0))
        public = reg.public(last_seen, **backlog)
        legacy = self._legacy.get(reg.id)
        if not legacy:
            return public
        # Adopted batches come before the rest: the first of them is the pending one.
        return dataclasses.replace(
            public,
            backlog_events=public.backlog_events + sum(b.count for b in legacy),
            backlog_bytes=public.backlog_bytes + sum(b.size for b in legacy),
            oldest_unacked_at=legacy[0].ingested_at,
            pending_batch_id=legacy[0].batch_id,
            pending_deliveries=legacy[0].deliveries,
        )

    async def registrations(self) -> list[Registration]:
        regs = sorted(
            (r for r in tuple(self._regs.values()) if r.active), key=lambda r: r.created_at
        )
        head, head_byte = self._head, self._head_byte

        def backlog(conn: sqlite3.Connection) -> list[Registration]:
            out = []
            for reg in regs:
                start = min(reg.backlog_start, head)
                oldest = None
                if start < head:
                    row = conn.execute(
                        "SELECT ingested_at FROM chunks WHERE first_seq <= ? "
                        "ORDER BY first_seq DESC LIMIT 1",
                        (start,),
                    ).fetchone()
                    oldest = row[0] if row else None
                out.append(
                    self._public(
                        reg,
                        backlog_events=head - start,
                        backlog_bytes=head_byte - self._byte_position(conn, start, head, head_byte),
                        oldest_unacked_at=oldest,
                    )
                )
            return out

        return await self._read(backlog)

    async def status(self) -> StoreStatus:
        head, head_byte = self._head, self._head_byte

        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute("SELECT min(first_seq) FROM chunks").fetchone()
            tail = head if row is None or row[0] is None else int(row[0])
            return head - tail, head_byte - self._byte_position(conn, tail, head, head_byte)

        ok, detail = self._failure is None, self._failure or "ok"
        if not self._writer_running:
            ok, detail = False, "the store's writer has stopped"
        try:
            events, nbytes = await self._read(read)
        except StorageUnavailable as exc:
            ok, detail, events, nbytes = False, exc.message, 0, 0
        legacy = [batch for batches in tuple(self._legacy.values()) for batch in batches]
        events += sum(batch.count for batch in legacy)
        nbytes += sum(batch.size for batch in legacy)
        disk, free = await asyncio.to_thread(self._disk_usage)
        return StoreStatus(self.name, ok, detail, events, nbytes, disk, free, head)

    # --- dead letters

    async def append_dead_letters(
        self, letters: Sequence[tuple[bytes, str]], now: float, max_kept: int
    ) -> int:
        if not letters:
            return 0
        size = sum(len(event) for event, _ in letters)

        def run(txn: _Txn) -> int:
            free = self._free_bytes() if self.limits.min_free_bytes else None
            refusal = self._refusal(txn, [], len(letters), size, free)
            if refusal is not None:
                raise refusal
            txn.conn.executemany(
                "INSERT INTO dead_letters (received_at, reason, event) VALUES (?, ?, ?)",
                [(now, reason, event) for event, reason in letters],
            )
            if max_kept <= 0:
                return 0
            over = txn.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] - max_kept
            if over <= 0:
                return 0
            txn.conn.execute(
                "DELETE FROM dead_letters WHERE id IN "
                "(SELECT id FROM dead_letters ORDER BY id LIMIT ?)",
                (over,),
            )
            return int(over)

        return await self._submit(run)

    async def list_dead_letters(self, after_id: int, limit: int) -> list[DeadLetter]:
        def read(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT id, event, reason, received_at FROM dead_letters WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            return [DeadLetter(int(i), bytes(e), str(r), float(t)) for i, e, r, t in rows]

        return await self._read(read)

    async def count_dead_letters(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

        return await self._read(read)

    async def replay_dead_letters(self, ids: Sequence[int], now: float) -> AppendOutcome:
        wanted = sorted(set(ids))
        if not wanted:
            return AppendOutcome(0, 0)
        marks = ", ".join("?" * len(wanted))

        def run(txn: _Txn) -> AppendOutcome:
            rows = txn.conn.execute(
                f"SELECT id, event FROM dead_letters WHERE id IN ({marks}) ORDER BY id", wanted
            ).fetchall()
            events = [bytes(event) for _, event in rows]
            if not events:
                return AppendOutcome(0, 0)
            # The append path itself, so replayed events meet the same limits as ingest.
            probe = _Op(_never_called, _NO_FUTURE, events, sum(map(len, events)), now)
            [(outcome, refusal)] = self._append_run(txn, [probe])
            if refusal is not None:
                raise refusal
            assert outcome is not None
            if outcome.stored:
                txn.conn.execute(f"DELETE FROM dead_letters WHERE id IN ({marks})", wanted)
            return outcome

        return await self._submit(run)

    async def purge_dead_letters(self, ids: Sequence[int] | None) -> int:
        def run(txn: _Txn) -> int:
            if ids is None:
                return int(txn.conn.execute("DELETE FROM dead_letters").rowcount)
            wanted = sorted(set(ids))
            marks = ", ".join("?" * len(wanted))
            deleted = txn.conn.execute(f"DELETE FROM dead_letters WHERE id IN ({marks})", wanted)
            return int(deleted.rowcount)

        return await self._submit(run)

    def _disk_usage(self) -> tuple[int, int | None]:
        disk = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                disk += os.path.getsize(f"{self.path}{suffix}")
        try:
            return disk, shutil.disk_usage(self.home).free
        except OSError:
            return disk, None


def _pack(events: Sequence[bytes], separator: bytes = b"") -> tuple[bytes, bytes]:
    """Events back to back, each followed by `separator` (one byte, or none), with their
    count + 1 boundaries in event bytes: event i starts at offsets[i] + i * len(separator)."""
    bounds = [0]
    total = 0
    for event in events:
        total += len(event)
        bounds.append(total)
    data = separator.join(events) + separator if separator else b"".join(events)
    return encode_offsets(bounds), data


def _with_commas(
    piece: bytes, offsets: Sequence[int], lo: int, hi: int
) -> tuple[array[int], bytes]:
    """Events [lo, hi) of a chunk stored without separators, as the current format has them."""
    base = offsets[lo]
    events = [piece[offsets[i] - base : offsets[i + 1] - base] for i in range(lo, hi)]
    packed_offsets, data = _pack(events, b",")
    return decode_offsets(packed_offsets), data


def _check_not_truncated(path: Path) -> None:
    """Refuse a database file shorter than its own header says (cut by a copy or a disk).

    SQLite would open it and fail only when a missing page is read, maybe
    much later; the header's page count is exact whenever its "valid for"
    counter matches the change counter (every write since SQLite 3.7.0).
    """
    if _live_wal(path):
        # Pages may still be in the WAL only (a checkpoint cut short by a full disk
        # writes the header first): SQLite reads them from there.
        return
    try:
        with path.open("rb") as file:
            header = file.read(100)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return  # sqlite3 itself says "file is not a database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages * page_size > size:
        raise sqlite3.DatabaseError(
            f"the file is truncated: {size} bytes where its header says {pages * page_size}"
        )


def _live_wal(path: Path) -> bool:
    """Whether the WAL beside `path` holds frames of its current generation (the first
    frame carries the salts of the WAL header; a rewound WAL's old frames do not)."""
    try:
        with path.with_name(path.name + "-wal").open("rb") as wal:
            header, frame = wal.read(32), wal.read(24)
    except FileNotFoundError:
        return False
    return len(frame) == 24 and frame[8:16] == header[16:24]


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    code = getattr(exc, "sqlite_errorcode", None)  # an extended code: the primary is its low byte
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


#: The writer answers through the op that carries the transaction; a replay's inner
#: append is answered with it, so its own future is never used.
_NO_FUTURE: Any = None


def _never_called(txn: _Txn) -> AppendOutcome:  # appends run on the writer's coalescing path
    raise AssertionError("append operations are coalesced, never run one by one")


def _resolve_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller went away (request cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
