"""The embedded store's files under home_directory: the lock, damage checks, connections.

`cfylogs.sqlite3` is the database (WAL mode), `cfylogs.lock` is `flock`ed so
that two relays never share a home, and `cfylogs.reserve` is the disk space
booked for acks (`storage.reserve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from cfylogs.errors import StorageCorrupt, StorageUnavailable, StoreInUse

T = TypeVar("T")

DB_FILE = "cfylogs.sqlite3"
LOCK_FILE = "cfylogs.lock"
RESERVE_FILE = "cfylogs.reserve"

_SYNC_PRAGMA = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}


class HomeLock:
    """The exclusive lock on a home directory, created if missing."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreInUse(
                f"home_directory {self.home} is in use by another cfylogs process; "
                "each relay needs its own home_directory (or share PostgreSQL instead)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Connections:
    """Every connection opened on the database, so that `close_all` closes them all
    (the writer's, the checkpointer's, one per reader thread)."""

    def __init__(self, path: Path, sync: str) -> None:
        self.path = path
        self.sync = _SYNC_PRAGMA[sync]
        self._lock = threading.Lock()
        self._opened: list[sqlite3.Connection] = []

    def open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new file: only now, before its first page (which switching to WAL
            # writes), can it be made to give freed pages back (see space.give_back).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.sync}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -16384")
        # The WAL is rewound after each checkpoint; past this size it is also truncated.
        conn.execute("PRAGMA journal_size_limit = 67108864")
        with self._lock:
            self._opened.append(conn)
        return conn

    def close_all(self) -> None:
        with self._lock:
            for conn in self._opened:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._opened.clear()


def check_not_truncated(path: Path) -> None:
    """Refuse a database file shorter than its own header says (cut by a copy or a disk).

    SQLite would open it and fail only when a missing page is read, maybe
    much later; the header's page count is exact whenever its "valid for"
    counter matches the change counter (every write since SQLite 3.7.0).
    """
    if live_wal(path):
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


def live_wal(path: Path) -> bool:
    """Whether the WAL beside `path` holds frames of its current generation (the first
    frame carries the salts of the WAL header; a rewound WAL's old frames do not)."""
    try:
        with path.with_name(path.name + "-wal").open("rb") as wal:
            header, frame = wal.read(32), wal.read(24)
    except FileNotFoundError:
        return False
    return len(frame) == 24 and frame[8:16] == header[16:24]


def disk_usage(path: Path) -> int:
    """Bytes of the database, its WAL and its shared-memory file."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(f"{path}{suffix}")
    return total


class Readers:
    """A small pool of threads with a read-only connection each, for reads that would
    otherwise block the event loop or the writer (large batches, backlog figures)."""

    def __init__(self, connections: Connections, threads: int) -> None:
        self._connections = connections
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="cfylogs-read")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise StorageUnavailable("the store is not open")

        def run() -> T:
            try:
                return fn(self._connection())
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"the store cannot be read now: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connections.open()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
        return conn
