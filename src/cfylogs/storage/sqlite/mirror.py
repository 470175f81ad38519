"""The registrations as committed, kept in memory so that most requests need no disk.

Thread ownership (the writer thread and the event loop share this object):

- The writer alone changes the committed state (`regs`, `legacy`, `head`,
  `has_active`), only in `publish`, `load` and `flushed`, once its
  transaction committed. Records are immutable and replaced whole, the head
  is one tuple: a reader without the lock sees one committed state of each.
- The event loop notes when registrations were last seen and what long
  polls wait for (`wish`), and takes the batches the writer cut for them.
- Everything both sides change, and every read that must see a batch cut
  ahead together with the registration it must still be pending in, holds
  `_lock`. The writer publishes a commit's registrations and the batches it
  cut in one locked step, so a batch taken is checked against a registration
  at least as recent as the commit that cut it.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cfylogs.errors import RegistrationExpired, RegistrationNotFound
from cfylogs.models import Batch
from cfylogs.storage.base import RegistrationRow
from cfylogs.storage.shared_entries import SharedEntries
from cfylogs.storage.sqlite.chunkformat import decode_offsets
from cfylogs.storage.sqlite.chunks import Head


@dataclass(frozen=True, slots=True)
class Reg(RegistrationRow):
    """A registration row, with where its backlog starts in the byte stream."""

    start_byte: int

    @property
    def backlog_start(self) -> int:
        return self.cursor if self.pending_start is None else self.pending_start


REG_COLUMNS = [f.name for f in dataclasses.fields(Reg)]


def reg_row(reg: Reg) -> tuple[Any, ...]:
    return tuple(getattr(reg, name) for name in REG_COLUMNS)


@dataclass(frozen=True, slots=True)
class Legacy:
    """An adopted batch (`sqlite.legacy`), without its entries, which stay on disk."""

    batch_id: int
    count: int
    size: int
    ingested_at: float
    deliveries: int


#: A long poll waiting for events: the batch it would take (max entries, max bytes). A
#: plain tuple: one is made on every empty long-poll fetch.
Wish = tuple[int, int]


class Mirror:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.regs: dict[str, Reg] = {}
        #: Adopted batches per registration, in delivery order (none for most).
        self.legacy: dict[str, tuple[Legacy, ...]] = {}
        self.head = Head(0, 0)
        #: Whether any registration is active (read on every append).
        self.has_active = False
        #: Last-seen times not yet written (the writer flushes them lazily).
        self._seen: dict[str, float] = {}
        self._wishes: dict[str, Wish] = {}
        #: Wishes a transaction is cutting batches for (not committed yet): the poll's
        #: last fetch then asks the writer, which answers after that commit.
        self._taken: set[str] = set()
        #: Batches cut for waiting long polls by the append that brought their events.
        self._ready: dict[str, Batch] = {}
        #: One entries object per pending batch (committed batches only: see Txn.share).
        self.shared = SharedEntries()

    # --- the event loop's side

    def lookup(self, registration_id: str) -> Reg:
        """The active registration, or the error naming it."""
        reg = self.regs.get(registration_id)
        if reg is None:
            raise RegistrationNotFound(registration_id)
        if not reg.active:
            raise RegistrationExpired(registration_id)
        return reg

    def saw(self, registration_id: str, now: float) -> None:
        """Renew a registration's lease (written lazily by the writer's `flush`); nothing
        for one removed meanwhile."""
        with self._lock:
            if registration_id in self.regs:
                self._seen[registration_id] = now

    def seen(self, reg: Reg) -> float:
        """When `reg` was last seen, its lazily written renewals included."""
        with self._lock:
            return max(self._seen.get(reg.id, 0.0), reg.last_seen)

    def active(self) -> list[Reg]:
        with self._lock:
            return [reg for reg in self.regs.values() if reg.active]

    def all_adopted(self) -> list[Legacy]:
        with self._lock:
            return [batch for batches in self.legacy.values() for batch in batches]

    def arrive(
        self, registration_id: str, now: float, waiting: bool, max_entries: int, max_bytes: int
    ) -> tuple[bool, Batch | None]:
        """A fetch as the event loop can answer it: (answered, batch).

        Answered with the batch cut ahead for this long poll, if it is still the
        pending one; or with nothing when there is nothing to hand out (`waiting`:
        the next append cuts a batch of at most `max_entries` and `max_bytes` for
        it). Otherwise the writer must look (answered False). Not `waiting`: the
        long poll, if any, is over.
        """
        with self._lock:
            reg = self.regs.get(registration_id)
            if reg is None or not reg.active:
                self.lookup(registration_id)  # raises the error naming it
            assert reg is not None
            self._seen[registration_id] = now
            if not waiting and self._wishes:
                self._wishes.pop(registration_id, None)
                if registration_id in self._taken:
                    return False, None  # a batch is being cut for it: the writer knows
            if self._ready and (ready := self._take_ready(reg)) is not None:
                return True, ready
            idle = (
                reg.pending_start is None
                and reg.cursor >= self.head.seq
                and registration_id not in self.legacy
            )
            if idle and waiting:
                self._wishes[registration_id] = (max_entries, max_bytes)
            return idle, None

    # --- the writer's side, during a transaction

    def take_ready(self, reg: Reg) -> Batch | None:
        """The batch cut ahead for `reg` (as the transaction has it), if still pending."""
        with self._lock:
            return self._take_ready(reg)

    def _take_ready(self, reg: Reg) -> Batch | None:
        """(Holding the lock.) The batch cut ahead for `reg`, taken once: handed out only
        if it is still the pending one (not acknowledged or dropped by a cap meanwhile),
        and then its long poll wishes for nothing more."""
        ready = self._ready.pop(reg.id, None)
        if ready is None or not still_pending(ready, reg):
            return None
        self._wishes.pop(reg.id, None)
        return ready

    def wish(self, registration_id: str, wish: Wish) -> None:
        with self._lock:
            self._wishes[registration_id] = wish

    def withdraw(self, registration_id: str) -> None:
        """A batch goes out to this registration now: cut nothing ahead for it."""
        with self._lock:
            self._wishes.pop(registration_id, None)

    def abandon(self, registration_id: str) -> None:
        """Its long poll was given up (the client left): cut nothing ahead for it, and
        drop a batch already cut (it stays the pending batch, read again from disk)."""
        with self._lock:
            self._wishes.pop(registration_id, None)
            self._ready.pop(registration_id, None)

    def wishes(self) -> list[tuple[str, Wish]]:
        """The wishes to cut batches for in this transaction (marked taken until it ends)."""
        with self._lock:
            self._taken.update(self._wishes)
            return list(self._wishes.items())

    @property
    def waiting(self) -> bool:
        """Whether any long poll waits for a batch to be cut ahead."""
        with self._lock:
            return bool(self._wishes)

    # --- the writer's side, after a commit

    def publish(
        self,
        changed: dict[str, Reg | None],
        legacy_changed: dict[str, tuple[Legacy, ...]],
        head: Head,
        ready: dict[str, Batch],
    ) -> None:
        """Make a commit visible: its registrations, adopted batches, head, and the
        batches it cut for waiting long polls."""
        with self._lock:
            self._taken.clear()
            for registration_id, reg in changed.items():
                if reg is None or not reg.active:
                    self._wishes.pop(registration_id, None)
                    self._ready.pop(registration_id, None)
                if reg is None:
                    self.regs.pop(registration_id, None)
                    self._seen.pop(registration_id, None)
                else:
                    self.regs[registration_id] = reg
            for registration_id, batch in ready.items():
                self._wishes.pop(registration_id, None)
                self._ready[registration_id] = batch
            for registration_id, batches in legacy_changed.items():
                if batches:
                    self.legacy[registration_id] = batches
                else:
                    self.legacy.pop(registration_id, None)
            if changed:
                self.has_active = any(reg.active for reg in self.regs.values())
            self.head = head

    def unflushed(self) -> list[tuple[float, str]]:
        """(last seen, id) of the registrations seen since their row was written."""
        with self._lock:
            seen = list(self._seen.items())
        return [
            (at, rid)
            for rid, at in seen
            if (reg := self.regs.get(rid)) is not None and at > reg.last_seen
        ]

    def flushed(self, written: Iterable[tuple[float, str]]) -> None:
        with self._lock:
            for at, rid in written:
                reg = self.regs.get(rid)
                if reg is not None and at > reg.last_seen:
                    self.regs[rid] = dataclasses.replace(reg, last_seen=at)

    def load(self, conn: sqlite3.Connection) -> None:
        """Read the committed state from the database (at open, and after a failed commit)."""
        regs = {}
        for row in conn.execute(f"SELECT {', '.join(REG_COLUMNS)} FROM registrations"):
            values = dict(zip(REG_COLUMNS, row, strict=True))
            values["active"] = bool(values["active"])
            regs[values["id"]] = Reg(**values)
        legacy: dict[str, list[Legacy]] = {}
        for rid, batch_id, offsets, size, ingested_at, deliveries in conn.execute(
            "SELECT registration_id, batch_id, offsets, length(data), ingested_at, deliveries "
            "FROM legacy_batches ORDER BY registration_id, batch_id"
        ):
            count = len(decode_offsets(offsets)) - 1
            batch = Legacy(batch_id, count, size, ingested_at, deliveries)
            legacy.setdefault(rid, []).append(batch)
        with self._lock:
            self._taken.clear()
            self.regs = regs
            self.legacy = {rid: tuple(batches) for rid, batches in legacy.items()}
            self.has_active = any(reg.active for reg in regs.values())


def still_pending(batch: Batch, reg: Reg) -> bool:
    """Whether a batch cut ahead for a waiting consumer is still the pending one
    (`reg` as of now): not acknowledged or dropped by a cap meanwhile."""
    return reg.pending_start is not None and reg.pending_id == batch.id
