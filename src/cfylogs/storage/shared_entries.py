"""One entries object per pending batch, handed to every delivery of it.

A batch is handed out again, byte for byte, until it is acknowledged. A
thousand long polls waiting on one registration are all woken by the same
append and all get its pending batch: read once per delivery, that is a
thousand copies of up to `buffer.max_batch_bytes` held at once.

The entries are kept here under a key naming the batch exactly (registration,
batch id, first and end seq). The bytes a key names never change (events are
immutable and seqs never reused), so nothing needs invalidating: an entry
that no longer matches a pending batch is simply never asked for again. Entries
are held weakly, so this holds no memory of its own: an entry lives as long as
some delivery still holds it, and a batch nobody is being sent is read afresh.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

from cfylogs.models import JoinedEntries

#: (registration id, batch id, first seq, end seq)
BatchKey = tuple[str, int, int, int]


class SharedEntries:
    """Thread-safe: the SQLite writer, its readers and the event loop all use it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: weakref.WeakValueDictionary[BatchKey, JoinedEntries] = (
            weakref.WeakValueDictionary()
        )

    def get(self, key: BatchKey) -> JoinedEntries | None:
        with self._lock:
            return self._entries.get(key)

    def share(self, key: BatchKey, entries: Sequence[bytes]) -> Sequence[bytes]:
        """The entries to hand out for `key`: those already shared, else `entries` (kept)."""
        if not isinstance(entries, JoinedEntries):
            return entries  # adopted batches, read as lists: rare, not shared
        with self._lock:
            shared = self._entries.get(key)
            if shared is None:
                self._entries[key] = shared = entries
            return shared
