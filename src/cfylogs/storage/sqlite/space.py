"""Disk space for the embedded store: what is free, when the disk is full, giving pages back.

All of it runs on the writer thread, on the write connection.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("cfylogs.storage.sqlite")

#: Free space is measured for every commit unless it was measured this recently (s)
#: and found more than this above storage.min_free_bytes (bytes).
FREE_RECHECK_SEC = 0.5
FREE_RECHECK_MARGIN = 1024**3
#: Free pages are given back to the file system in slices of this size, once more than
#: half the file and at least this much is free.
VACUUM_MIN_BYTES = 64 * 1024**2
VACUUM_SLICE_BYTES = 64 * 1024**2


class FreeSpace:
    """Free space for new data: the file system's, plus pages SQLite will reuse."""

    def __init__(self, home: Path, min_free_bytes: int) -> None:
        self.home = home
        self.min_free_bytes = min_free_bytes
        #: Last measure: (bytes, monotonic time, head byte then).
        self._seen: tuple[int, float, int] | None = None

    def measure(self, conn: sqlite3.Connection, page_size: int, head_byte: int) -> int:
        """statvfs and the freelist count are a good share of a small group commit's
        CPU (single-event ingest), so far above the watermark a measure is reused
        for up to FREE_RECHECK_SEC, less twice what was appended since (WAL and
        database copies); close to it, every group measures afresh.
        """
        now = time.monotonic()
        if self._seen is not None:
            free, seen_at, then = self._seen
            estimate = free - 2 * (head_byte - then)
            fresh = now - seen_at < FREE_RECHECK_SEC
            if fresh and estimate - self.min_free_bytes > FREE_RECHECK_MARGIN:
                return estimate
        stat = os.statvfs(self.home)
        freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
        free = stat.f_bavail * stat.f_frsize + int(freelist) * page_size
        self._seen = (free, now, head_byte)
        return free


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    code = getattr(exc, "sqlite_errorcode", None)  # an extended code: the primary is its low byte
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def give_back(conn: sqlite3.Connection, page_size: int, reclaim: bool) -> None:
    """Give space back to the file system once most of the file is free pages.

    Free pages are reused by new events first, so a file that drained stays
    at its size only while it is likely to fill again; past half free, a
    bounded slice is returned per pass (bounded, to keep commits quick).
    `reclaim` (the disk is full, the reserve given up): every free page helps
    ingest resume, so any are given back.
    """
    try:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        total = conn.execute("PRAGMA page_count").fetchone()[0]
        if (reclaim and free) or (free * 2 > total and free * page_size > VACUUM_MIN_BYTES):
            pages = min(free // 2, VACUUM_SLICE_BYTES // page_size)
            conn.execute(f"PRAGMA incremental_vacuum({int(pages)})")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.warning("could not give free space back to the file system: %s", exc)
