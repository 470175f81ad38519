"""The append step of the writer's transactions: refusals, chunks, dead letters, caps.

Consecutive appends of a group come here together and become one chunk (or
a few, past MAX_CHUNK_BYTES). Each request is stored whole, with its dead
letters, or refused whole (nothing of it written); the policy of
`storage.policy` decides refusals and drops, as on every backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from cfylogs.errors import RelayError
from cfylogs.models import AppendOutcome
from cfylogs.storage import policy
from cfylogs.storage.policy import AppendRequest, DropReports, StorageLimits
from cfylogs.storage.reserve import DiskReserve
from cfylogs.storage.sqlite import chunks, dead_letters
from cfylogs.storage.sqlite.mirror import Mirror, Reg
from cfylogs.storage.sqlite.space import FreeSpace
from cfylogs.storage.sqlite.txn import Txn
from cfylogs.storage.sqlite.writer import AppendResult, Op

#: Appends coalesced into one chunk stop growing it past this size.
MAX_CHUNK_BYTES = 32 * 1024**2


class Appends:
    def __init__(
        self, home: Path, limits: StorageLimits, reserve: DiskReserve, mirror: Mirror
    ) -> None:
        self.home = home
        self.limits = limits
        self.reserve = reserve
        self.mirror = mirror
        self.free = FreeSpace(home, limits.min_free_bytes)
        self.drops = DropReports()
        self.page_size = 4096
        #: Set when the disk is full: the writer gives drained pages back at once.
        self.reclaim = False

    def alone(self, ops: Sequence[Op]) -> bool:
        """Whether the writer's `ops` are appends that one INSERT stores whole, with
        nothing else to write.

        Such a group (single-event ingest under load is made of them) needs no
        explicit transaction: the INSERT commits itself, in one SQLite call where
        BEGIN, INSERT, meta and COMMIT took four, each giving the GIL away and
        waiting to get it back from the busy event loop. Not with dead letters,
        not when a cap would move a backlog (that writes registrations), not when
        the group needs two chunks (they must commit together), and not while a
        long poll waits for a batch cut ahead (see `SqliteStorage.fetch`).
        """
        count = size = 0
        for op in ops:
            if op.run is not None or op.dead_letters is not None:
                return False
            count += len(op.events)
            size += op.size
        if size >= MAX_CHUNK_BYTES or self.mirror.waiting:
            return False
        head = self.mirror.head
        for reg in tuple(self.mirror.regs.values()):
            if reg.active and self.limits.over(
                head.seq + count - reg.backlog_start, head.byte + size - reg.start_byte
            ):
                return False
        return True

    def append(self, txn: Txn, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        active = txn.active_regs()
        if not active and all(r.dead_letters is None for r in requests):
            # Nobody to deliver to: counted and dropped, nothing touches the disk.
            return [_discarded(request) for request in requests]
        if not self.reserve.acquire():
            self.reclaim = True
            full = policy.disk_full(self.home)
            return [
                (None, full) if (active and r.events) or r.dead_letters else _discarded(r)
                for r in requests
            ]
        free = None
        if self.limits.min_free_bytes:
            free = self.free.measure(txn.conn, self.page_size, self.mirror.head.byte)
        rejects, min_free = self.limits.rejects, self.limits.min_free_bytes
        results: list[AppendResult] = []
        accepted: list[bytes] = []
        accepted_bytes = written = 0  # event bytes accepted; bytes written with dead letters
        with_letters: list[AppendRequest] = []
        for request in requests:
            letters = request.dead_letters
            count = len(request.events)
            events: Sequence[bytes] = request.events
            size = request.size
            if not active:
                if letters is None:
                    results.append((AppendOutcome(0, count), None))
                    continue
                events, size = (), 0
            extra = 0 if letters is None else letters.size
            if free is not None and free - (written + size + extra) < min_free:
                results.append((None, policy.below_watermark(self.home, free, min_free)))
                continue
            if rejects and events:
                group = (len(accepted) + count, accepted_bytes + size)
                if (refusal := self._backlog_full(txn, active, *group)) is not None:
                    results.append((None, refusal))
                    continue
            accepted.extend(events)
            accepted_bytes += size
            written += size + extra
            if letters is not None:
                with_letters.append(request)
            results.append((AppendOutcome(count, 0) if active else AppendOutcome(0, count), None))
        self._store_events(txn, accepted, requests[-1].now)
        return self._finish(txn, with_letters, results, bool(accepted))

    def _backlog_full(
        self, txn: Txn, active: list[Reg], count: int, size: int
    ) -> RelayError | None:
        """Policy reject: the refusal when `count` events of `size` bytes more (the group's
        so far and this request's) would overflow a backlog."""
        for reg in active:
            backlog = (
                txn.head.seq - reg.backlog_start + count,
                txn.head.byte - reg.start_byte + size,
            )
            if self.limits.over(*backlog):
                return policy.backlog_full(reg.id)
        return None

    def _store_events(self, txn: Txn, events: list[bytes], now: float) -> None:
        chunk: list[bytes] = []
        chunk_bytes = 0
        for event in events:
            chunk.append(event)
            chunk_bytes += len(event)
            if chunk_bytes >= MAX_CHUNK_BYTES:
                txn.head = chunks.insert(txn.conn, txn.head, chunk, now)
                chunk, chunk_bytes = [], 0
        if chunk:
            txn.head = chunks.insert(txn.conn, txn.head, chunk, now)

    def _finish(
        self,
        txn: Txn,
        with_letters: list[AppendRequest],
        results: list[AppendResult],
        any_events: bool,
    ) -> list[AppendResult]:
        """The dead letters of the requests stored, then the caps; what they deleted is
        told in the last outcome (the sums are what counts)."""
        trimmed = dropped = 0
        for request in with_letters:
            assert request.dead_letters is not None
            dead_letters.insert(txn.conn, request.dead_letters, request.now)
        if with_letters:
            last_letters = with_letters[-1].dead_letters
            assert last_letters is not None
            trimmed = dead_letters.trim(txn.conn, last_letters.max_kept)  # the same for all
        if any_events and self.limits.drops:
            dropped = self._drop_over_cap(txn)
        if not (trimmed or dropped):
            return results
        last = max(i for i, (outcome, _) in enumerate(results) if outcome is not None)
        outcome = results[last][0]
        assert outcome is not None
        results[last] = (
            dataclasses.replace(outcome, dropped=dropped, dead_letters_dropped=trimmed),
            None,
        )
        return results

    def _drop_over_cap(self, txn: Txn) -> int:
        """Policy drop_oldest: move the start of every backlog over a cap forward; return
        how many events the backlogs lost."""
        lost = 0
        for reg in txn.active_regs():
            position = self.limits.byte_cap_position(txn.head.byte, reg.start_byte)
            byte_start = (
                None if position is None else chunks.seq_at_byte(txn.conn, position, txn.head)
            )
            drop = policy.drop_over_cap(
                self.limits,
                txn.head.seq,
                reg.backlog_start,
                reg.cursor,
                reg.pending_start is not None,
                byte_start,
            )
            if drop is None:
                continue
            txn.put(
                dataclasses.replace(
                    reg,
                    pending_start=None,
                    pending_deliveries=0,
                    cursor=drop.cursor,
                    start_byte=chunks.byte_position(txn.conn, drop.start, txn.head),
                    dropped=reg.dropped + drop.dropped,
                )
            )
            txn.gc = True
            self.drops.dropped(reg.id, drop.dropped)
            lost += drop.dropped
        return lost


def _discarded(request: AppendRequest) -> AppendResult:
    return AppendOutcome(0, len(request.events)), None
