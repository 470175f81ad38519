"""The storage seam: one small, operation-level contract that every backend meets.

Each method is one operation of the relay, atomic and durable when it
returns (as durable as `storage.sync` asks), so that SQLite and PostgreSQL
can each do it with their own SQL. `tests/contract/` is the executable
definition of this contract and runs unchanged against every backend.

Vocabulary: events get consecutive sequence numbers (`seq`) in ingest order,
shared by all registrations; an event is stored once. A registration has a
cursor (the first seq not yet handed out) and at most one pending batch
(`[start, end)` with an id), which is handed out again, byte for byte, until
it is acknowledged. Events are deleted once every active registration is
past them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class RegistrationRow:
    """A registration as both backends keep it; replaced whole, never mutated.

    The pending batch is `[pending_start, cursor)`, with id `next_batch_id - 1`.
    """

    id: str
    name: str | None
    client_subject: str | None
    created_at: float
    last_seen: float
    active: bool
    cursor: int
    next_batch_id: int
    pending_start: int | None
    pending_deliveries: int
    redeliveries: int
    dropped: int

    @property
    def pending_id(self) -> int | None:
        return None if self.pending_start is None else self.next_batch_id - 1

    def public(self, last_seen: float | None = None, **backlog: Any) -> Registration:
        """The API's view; `backlog` holds the figures the backend computes."""
        return Registration(
            id=self.id,
            name=self.name,
            created_at=self.created_at,
            last_seen=self.last_seen if last_seen is None else last_seen,
            client_subject=self.client_subject,
            pending_batch_id=self.pending_id,
            pending_deliveries=self.pending_deliveries,
            redeliveries=self.redeliveries,
            dropped_events=self.dropped,
            **backlog,
        )


class Storage(abc.ABC):
    """What the relay needs from a store. Methods may raise `StorageUnavailable`."""

    name: str = "abstract"

    @abc.abstractmethod
    async def open(self) -> None:
        """Open or create the store; raise `StorageCorrupt` for state it cannot use."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish the operations in flight, persist what is lazy, release everything."""

    def abandon_wait(self, registration_id: str) -> None:  # noqa: B027
        """A long poll of `registration_id` was given up before its last fetch (its client
        left): whatever the store prepares for a waiting consumer (`fetch(waiting=True)`)
        it prepares no more for this one. Called on the event loop; never raises."""

    def on_new_events(self, callback: Callable[[], None]) -> None:  # noqa: B027
        """Register a callback run in the event loop when events are stored by
        *another* process sharing this store (the relay already knows of its own)."""

    @abc.abstractmethod
    async def append(
        self, events: Sequence[bytes], now: float, dead_letters: DeadLetters | None = None
    ) -> AppendOutcome:
        """Store `events` (raw JSON objects) in order, and `dead_letters`, all or none, durably.

        Events arriving while no registration is active are discarded, not
        stored (`AppendOutcome.discarded`); dead letters are stored regardless
        (they are for the operator), the oldest beyond `max_kept` deleted.
        Enforces `StorageLimits`: raises `StorageUnavailable`, storing nothing
        (no dead letter either), below the free-space watermark or, with the
        `reject` policy, when a backlog is full; with `drop_oldest`, drops the
        oldest events (pending batch included) of a registration over a cap
        after storing (`AppendOutcome.dropped`).
        """

    @abc.abstractmethod
    async def register(
        self, registration_id: str, name: str | None, client_subject: str | None, now: float
    ) -> Registration:
        """Create a registration that will see only the events appended after it."""

    @abc.abstractmethod
    async def unregister(self, registration_id: str) -> None:
        """Remove a registration (active or expired) and its backlog.

        Raises `RegistrationNotFound` for an unknown id.
        """

    @abc.abstractmethod
    async def fetch(
        self,
        registration_id: str,
        max_entries: int,
        max_bytes: int,
        now: float,
        waiting: bool = False,
    ) -> Batch | None:
        """Return the pending batch (counting one more delivery), else cut a new one
        of at most `max_entries` events (and `max_bytes`, but never empty), else None.

        `waiting`: on None the caller waits for new events (a long poll) and asks
        again; a store may cut the batch for it as those events arrive.

        Renews the registration's lease. Raises `RegistrationNotFound`, or
        `RegistrationExpired` for a registration whose lease ran out.
        """

    @abc.abstractmethod
    async def ack(self, registration_id: str, batch_id: int, now: float) -> AckResult:
        """Acknowledge the pending batch; an older batch id is already acknowledged.

        Raises `BatchNotDelivered` (nothing changes) for an id never handed
        out, and `RegistrationNotFound` / `RegistrationExpired`.
        """

    @abc.abstractmethod
    async def touch(self, registration_id: str, now: float) -> None:
        """Renew the lease. May be persisted lazily: losing it in a crash only
        delays an expiry. Raises like `fetch`."""

    @abc.abstractmethod
    async def expire(self, idle_since: float) -> ExpiryOutcome:
        """Expire the active registrations last seen before `idle_since`. An expired
        registration keeps its id (for `revive`) but no backlog, until it was last seen
        `StorageLimits.expired_retention_sec` before `idle_since`: then it is deleted."""

    @abc.abstractmethod
    async def revive(self, registration_id: str, now: float) -> bool:
        """Make an expired registration active again with an empty backlog (its batch
        ids keep growing). False if it is not expired (active or unknown)."""

    @abc.abstractmethod
    async def registrations(self) -> list[Registration]:
        """The active registrations with their backlog figures, oldest first."""

    @abc.abstractmethod
    async def status(self) -> StoreStatus:
        """State of the store for `/health` and metrics; never raises."""

    # --- migration from the Java alien4cloud-cfy-logs (`cfylogs import-legacy`)

    @abc.abstractmethod
    async def adopt(
        self,
        registration_id: str,
        legacy_batches: Sequence[tuple[int, Sequence[bytes]]],
        now: float,
    ) -> bool:
        """Create registration `registration_id` with the unacknowledged batches it had.

        `legacy_batches` are `(batch_id, entries)` in delivery order, ids strictly
        increasing and >= 0, entries non-empty raw JSON objects. They are handed
        out first, each as its own batch with its own id and exactly its entries
        (deliveries counted as for any batch); then the events appended after the
        adoption, in batches numbered from the last legacy id + 1 (0 without
        legacy batches). The first legacy batch may already have been delivered
        by the old server, so an ack of its id is accepted before any fetch.
        Legacy batches count in the backlog figures, are dropped with the
        registration (unregister, expire), and are not subject to backlog caps.

        Returns False, changing nothing, when the id already exists (active or
        expired): running an import twice adopts nothing twice. Raises
        `ValueError` for ids out of order or negative, or an empty batch.
        """

    # --- dead letters: events the ingest filter kept from consumers (ingest.accept),
    # stored by `append`

    @abc.abstractmethod
    async def list_dead_letters(self, after_id: int, limit: int) -> list[DeadLetter]:
        """Up to `limit` dead letters with an id above `after_id`, by id."""

    @abc.abstractmethod
    async def count_dead_letters(self) -> int:
        """How many dead letters are stored."""

    @abc.abstractmethod
    async def replay_dead_letters(self, ids: Sequence[int], now: float) -> AppendOutcome:
        """Move the dead letters `ids` (unknown ids ignored) into the event stream, in id
        order, atomically: appended as by `append` (same limits, same refusals) and removed
        from the dead letters in one step. When no registration is active nothing is
        stored, and the dead letters are kept (`AppendOutcome.discarded` counts them).
        """

    @abc.abstractmethod
    async def purge_dead_letters(self, ids: Sequence[int] | None) -> int:
        """Delete the dead letters `ids` (None: all of them); return how many were."""


def check_legacy_batches(legacy_batches: Sequence[tuple[int, Sequence[bytes]]]) -> None:
    """The argument checks of `Storage.adopt`, shared by every backend."""
    previous = -1
    for batch_id, entries in legacy_batches:
        if batch_id <= previous:
            raise ValueError(f"legacy batch ids must be increasing and >= 0, got {batch_id}")
        if not entries:
            raise ValueError(f"legacy batch {batch_id} has no entries")
        previous = batch_id
