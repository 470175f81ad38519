"""A file of preallocated disk space that the embedded store gives up when the disk fills.

SQLite needs a little room even to delete: an acknowledgement writes WAL
frames. On a disk that is really full (watermark 0, or someone else filled
it), consumers could then no longer acknowledge, so nothing could ever be
freed. The store keeps this much space booked in a file of its own; a write
that fails for lack of space releases it, so acks and fetches go on, and
ingest stays refused until the file can be booked again (space came back).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskReserve:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._held = False

    def acquire(self) -> bool:
        """Book the space (a no-op while held); False while the disk has not that much."""
        if self._held or self.size <= 0:
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            if exc.errno in _NO_SPACE:
                return False
            # Any other failure is this file system's, not a lack of space: a relay that
            # refused ingest for ever over it would be worse than one without a reserve.
            log.warning("cannot book the disk reserve %s (%s); going on without it", self.path, exc)
            self.size = 0
            return True
        self._held = True
        return True

    def release(self) -> bool:
        """Give the space to the store's own writes; True if there was any to give."""
        if not self._held:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._held = False
        log.warning(
            "disk full: released the %d-byte reserve so that consumers can keep fetching and "
            "acknowledging; ingest answers 503 until that much space is free again",
            self.size,
        )
        return True
