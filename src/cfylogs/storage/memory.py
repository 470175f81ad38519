"""The reference backend: the storage contract in plain Python, in memory, without threads.

Not durable and not a `storage.backend` choice: it is what the contract
means, short enough to read in one sitting, and a store for unit tests of
the relay and the HTTP layer that need no disk, thread or database. The
contract suite (`tests/contract/`) runs against it like any backend, which
keeps it honest; it applies `storage.policy` as the others do. State lives
in a `MemoryState`, so a store closed and opened again on the same state
finds everything, as after a restart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from cfylogs.config import Settings
from cfylogs.errors import (
    BatchNotDelivered,
    Conflict,
    RegistrationExpired,
    RegistrationNotFound,
    StorageUnavailable,
)
from cfylogs.models import (
    AckResult,
    AppendOutcome,
    Batch,
    DeadLetter,
    DeadLetters,
    ExpiryOutcome,
    JoinedEntries,
    Registration,
    StoreStatus,
)
from cfylogs.storage import policy
from cfylogs.storage.base import RegistrationRow, Storage, check_legacy_batches
from cfylogs.storage.policy import DropReports, StorageLimits, storage_limits
from cfylogs.storage.shared_entries import SharedEntries


@dataclass
class _Adopted:
    batch_id: int
    entries: list[bytes]
    ingested_at: float
    deliveries: int = 0


@dataclass
class MemoryState:
    """Everything a memory store holds; survives the store's close and open."""

    #: Events still kept, from seq `first_seq` on: (event, ingested at, bytes before it).
    events: list[tuple[bytes, float, int]] = field(default_factory=list)
    first_seq: int = 0
    head: int = 0
    head_byte: int = 0
    regs: dict[str, RegistrationRow] = field(default_factory=dict)
    adopted: dict[str, list[_Adopted]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_dead_letter: int = 1


class MemoryStorage(Storage):
    name = "memory"

    def __init__(self, limits: StorageLimits | None = None, state: MemoryState | None = None):
        self.limits = limits or storage_limits(Settings())
        self.state = state or MemoryState()
        self._open = False
        self._drops = DropReports()
        self._shared = SharedEntries()

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    # --- events

    def _byte(self, seq: int) -> int:
        """Event bytes stored before event `seq`."""
        s = self.state
        return s.events[seq - s.first_seq][2] if seq < s.head else s.head_byte

    def _entries(self, start: int, end: int) -> JoinedEntries:
        s = self.state
        return JoinedEntries.of(
            [e for e, _, _ in s.events[start - s.first_seq : end - s.first_seq]]
        )

    def _collect(self) -> None:
        s = self.state
        starts = [_start(reg) for reg in s.regs.values() if reg.active]
        keep_from = min(starts, default=s.head)
        del s.events[: keep_from - s.first_seq]
        s.first_seq = keep_from

    # --- operations

    async def append(
        self, events: Sequence[bytes], now: float, dead_letters: DeadLetters | None = None
    ) -> AppendOutcome:
        self._check_open()
        s = self.state
        active = [reg for reg in s.regs.values() if reg.active]
        size = sum(map(len, events))
        if active and events and self.limits.rejects:
            for reg in active:
                backlog = (
                    s.head + len(events) - _start(reg),
                    s.head_byte + size - self._byte(_start(reg)),
                )
                if self.limits.over(*backlog):
                    raise policy.backlog_full(reg.id)
        trimmed = self._keep_dead_letters(dead_letters, now)
        if not active:
            return AppendOutcome(0, len(events), dead_letters_dropped=trimmed)
        for event in events:
            s.events.append((event, now, s.head_byte))
            s.head, s.head_byte = s.head + 1, s.head_byte + len(event)
        dropped = self._drop_over_cap() if events and self.limits.drops else 0
        return AppendOutcome(len(events), 0, dropped, trimmed)

    def _keep_dead_letters(self, dead_letters: DeadLetters | None, now: float) -> int:
        if dead_letters is None:
            return 0
        s = self.state
        for event, reason in dead_letters.letters:
            s.dead_letters.append(DeadLetter(s.next_dead_letter, event, reason, now))
            s.next_dead_letter += 1
        over = len(s.dead_letters) - dead_letters.max_kept if dead_letters.max_kept else 0
        del s.dead_letters[: max(over, 0)]
        return max(over, 0)

    def _drop_over_cap(self) -> int:
        s = self.state
        lost = 0
        for reg in [r for r in s.regs.values() if r.active]:
            start = _start(reg)
            position = self.limits.byte_cap_position(s.head_byte, self._byte(start))
            byte_start = None
            if position is not None:
                byte_start = next(
                    (s.first_seq + i for i, (_, _, at) in enumerate(s.events) if at >= position),
                    s.head,
                )
            drop = policy.drop_over_cap(
                self.limits, s.head, start, reg.cursor, reg.pending_start is not None, byte_start
            )
            if drop is None:
                continue
            s.regs[reg.id] = dataclasses.replace(
                reg,
                pending_start=None,
                pending_deliveries=0,
                cursor=drop.cursor,
                dropped=reg.dropped + drop.dropped,
            )
            self._drops.dropped(reg.id, drop.dropped)
            lost += drop.dropped
        self._collect()
        return lost

    async def register(
        self, registration_id: str, name: str | None, client_subject: str | None, now: float
    ) -> Registration:
        self._check_open()
        if registration_id in self.state.regs:
            raise Conflict(f"registration id {registration_id} already exists")
        return self._create(registration_id, name, client_subject, now, 0).public()

    def _create(
        self, rid: str, name: str | None, subject: str | None, now: float, next_id: int
    ) -> RegistrationRow:
        reg = RegistrationRow(
            rid, name, subject, now, now, True, self.state.head, next_id, None, 0, 0, 0
        )
        self.state.regs[rid] = reg
        return reg

    async def adopt(
        self,
        registration_id: str,
        legacy_batches: Sequence[tuple[int, Sequence[bytes]]],
        now: float,
    ) -> bool:
        check_legacy_batches(legacy_batches)
        self._check_open()
        if registration_id in self.state.regs:
            return False
        next_id = legacy_batches[-1][0] + 1 if legacy_batches else 0
        self._create(registration_id, None, None, now, next_id)
        if legacy_batches:
            adopted = [_Adopted(i, list(entries), now) for i, entries in legacy_batches]
            self.state.adopted[registration_id] = adopted
        return True

    async def unregister(self, registration_id: str) -> None:
        self._check_open()
        if self.state.regs.pop(registration_id, None) is None:
            raise RegistrationNotFound(registration_id)
        self.state.adopted.pop(registration_id, None)
        self._drops.forget(registration_id)
        self._collect()

    def _named(self, registration_id: str, now: float) -> RegistrationRow:
        """The active registration, its lease renewed; or the error naming it."""
        self._check_open()
        reg = self.state.regs.get(registration_id)
        if reg is None:
            raise RegistrationNotFound(registration_id)
        if not reg.active:
            raise RegistrationExpired(registration_id)
        reg = dataclasses.replace(reg, last_seen=max(reg.last_seen, now))
        self.state.regs[registration_id] = reg
        return reg

    async def touch(self, registration_id: str, now: float) -> None:
        self._named(registration_id, now)

    async def fetch(
        self,
        registration_id: str,
        max_entries: int,
        max_bytes: int,
        now: float,
        waiting: bool = False,
    ) -> Batch | None:
        reg = self._named(registration_id, now)
        if adopted := self.state.adopted.get(registration_id):
            first = adopted[0]
            first.deliveries += 1
            if first.deliveries > 1:
                self.state.regs[registration_id] = dataclasses.replace(
                    reg, redeliveries=reg.redeliveries + 1
                )
            return Batch(registration_id, first.batch_id, list(first.entries), first.deliveries)
        if reg.pending_start is not None:
            reg = dataclasses.replace(
                reg,
                pending_deliveries=reg.pending_deliveries + 1,
                redeliveries=reg.redeliveries + 1,
            )
        elif reg.cursor < self.state.head:
            end = reg.cursor + 1  # never empty
            while (
                end < min(reg.cursor + max_entries, self.state.head)
                and self._byte(end + 1) - self._byte(reg.cursor) <= max_bytes
            ):
                end += 1
            reg = dataclasses.replace(
                reg,
                pending_start=reg.cursor,
                cursor=end,
                next_batch_id=reg.next_batch_id + 1,
                pending_deliveries=1,
            )
        else:
            return None
        self.state.regs[registration_id] = reg
        assert reg.pending_start is not None and reg.pending_id is not None
        key = (registration_id, reg.pending_id, reg.pending_start, reg.cursor)
        entries: Sequence[bytes] | None = self._shared.get(key)
        if entries is None:
            entries = self._shared.share(key, self._entries(reg.pending_start, reg.cursor))
        return Batch(registration_id, reg.pending_id, entries, reg.pending_deliveries)

    async def ack(self, registration_id: str, batch_id: int, now: float) -> AckResult:
        reg = self._named(registration_id, now)
        if adopted := self.state.adopted.get(registration_id):
            first = adopted[0]
            if batch_id == first.batch_id:
                del adopted[0]
                if not adopted:
                    del self.state.adopted[registration_id]
                return AckResult(True, len(first.entries))
            if 0 <= batch_id < first.batch_id:
                return AckResult(False)
            raise BatchNotDelivered(registration_id, batch_id, first.batch_id)
        if reg.pending_start is not None and batch_id == reg.pending_id:
            self.state.regs[registration_id] = dataclasses.replace(
                reg, pending_start=None, pending_deliveries=0
            )
            self._collect()
            return AckResult(True, reg.cursor - reg.pending_start)
        if 0 <= batch_id < reg.next_batch_id:
            return AckResult(False)
        raise BatchNotDelivered(registration_id, batch_id, reg.pending_id)

    async def expire(self, idle_since: float) -> ExpiryOutcome:
        self._check_open()
        s = self.state
        forget_before = self.limits.forget_before(idle_since)
        expired, purged = [], []
        for reg in list(s.regs.values()):
            if reg.active and reg.last_seen < idle_since:
                reg = s.regs[reg.id] = self._emptied(reg, active=False)
                s.adopted.pop(reg.id, None)
                expired.append(reg.id)
            if not reg.active and forget_before is not None and reg.last_seen < forget_before:
                del s.regs[reg.id]
                purged.append(reg.id)
        self._collect()
        return ExpiryOutcome(expired, purged)

    async def revive(self, registration_id: str, now: float) -> bool:
        self._check_open()
        reg = self.state.regs.get(registration_id)
        if reg is None or reg.active:
            return False
        self.state.regs[registration_id] = self._emptied(reg, active=True, last_seen=now)
        return True

    def _emptied(self, reg: RegistrationRow, **changes: object) -> RegistrationRow:
        changes.update(cursor=self.state.head, pending_start=None, pending_deliveries=0)
        return dataclasses.replace(reg, **changes)  # type: ignore[arg-type]

    # --- views

    async def registrations(self) -> list[Registration]:
        self._check_open()
        s = self.state
        listed = []
        for reg in sorted((r for r in s.regs.values() if r.active), key=lambda r: r.created_at):
            start = _start(reg)
            adopted = s.adopted.get(reg.id, [])
            public = reg.public(
                backlog_events=s.head - start + sum(len(a.entries) for a in adopted),
                backlog_bytes=s.head_byte - self._byte(start) + sum(_size(a) for a in adopted),
                oldest_unacked_at=s.events[start - s.first_seq][1] if start < s.head else None,
            )
            if adopted:
                public = dataclasses.replace(
                    public,
                    oldest_unacked_at=adopted[0].ingested_at,
                    pending_batch_id=adopted[0].batch_id,
                    pending_deliveries=adopted[0].deliveries,
                )
            listed.append(public)
        return listed

    async def status(self) -> StoreStatus:
        s = self.state
        adopted = [batch for batches in s.adopted.values() for batch in batches]
        events = len(s.events) + sum(len(a.entries) for a in adopted)
        nbytes = s.head_byte - self._byte(s.first_seq) + sum(_size(a) for a in adopted)
        detail = "ok" if self._open else "the store is not open"
        return StoreStatus(self.name, self._open, detail, events, nbytes, 0, None, s.head)

    # --- dead letters

    async def list_dead_letters(self, after_id: int, limit: int) -> list[DeadLetter]:
        self._check_open()
        return [d for d in self.state.dead_letters if d.id > after_id][:limit]

    async def count_dead_letters(self) -> int:
        self._check_open()
        return len(self.state.dead_letters)

    async def replay_dead_letters(self, ids: Sequence[int], now: float) -> AppendOutcome:
        wanted = set(ids)
        letters = [d for d in self.state.dead_letters if d.id in wanted]
        if not letters:
            return AppendOutcome(0, 0)
        outcome = await self.append([d.event for d in letters], now)  # the same limits
        if outcome.stored:
            await self.purge_dead_letters([d.id for d in letters])
        return outcome

    async def purge_dead_letters(self, ids: Sequence[int] | None) -> int:
        self._check_open()
        s = self.state
        kept = [] if ids is None else [d for d in s.dead_letters if d.id not in set(ids)]
        purged, s.dead_letters = len(s.dead_letters) - len(kept), kept
        return purged

    def _check_open(self) -> None:
        if not self._open:
            raise StorageUnavailable("the store is not open")


def _start(reg: RegistrationRow) -> int:
    """The first unacknowledged seq (the pending batch included)."""
    return reg.cursor if reg.pending_start is None else reg.pending_start


def _size(adopted: _Adopted) -> int:
    return sum(map(len, adopted.entries))
