"""What every backend decides the same way: backlog caps, refusals, and group commit sizes.

The backends differ in how they find the figures (SQLite reads its mirror and
chunk offsets, PostgreSQL asks in SQL), not in what they do with them: the
decision, the message an operator reads, and how often it is repeated live
here once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cfylogs.config import Settings
from cfylogs.errors import StorageUnavailable
from cfylogs.models import DeadLetters

log = logging.getLogger("cfylogs.storage")

#: One group commit takes at most this much event data (a larger single request alone).
MAX_GROUP_BYTES = 64 * 1024**2
#: A registration losing events to its backlog cap is reported at most this often (s).
DROP_WARN_EVERY = 60.0


@dataclass(frozen=True)
class StorageLimits:
    """Bounds every backend keeps by itself; built from the settings (`storage_limits`).

    0 means no limit, for each of them.
    """

    #: Per registration: most unacknowledged events / bytes kept.
    max_backlog_events: int
    max_backlog_bytes: int
    #: `drop_oldest`: over a cap, that registration's oldest events are dropped
    #: (counted in `Registration.dropped_events`) and ingest goes on;
    #: `reject`: the append is refused with `StorageUnavailable`.
    backlog_policy: str
    #: Appends are refused with `StorageUnavailable` while less is free (local disks).
    min_free_bytes: int
    #: An expired registration is forgotten this long after its lease ran out (s).
    expired_retention_sec: float

    @property
    def drops(self) -> bool:
        """Whether appends move backlogs over a cap forward (policy drop_oldest)."""
        capped = self.max_backlog_events or self.max_backlog_bytes
        return bool(capped) and self.backlog_policy == "drop_oldest"

    @property
    def rejects(self) -> bool:
        """Whether appends that would overflow a backlog are refused (policy reject)."""
        capped = self.max_backlog_events or self.max_backlog_bytes
        return bool(capped) and self.backlog_policy == "reject"

    def over(self, events: int, nbytes: int) -> bool:
        """Whether a backlog of `events` events and `nbytes` bytes is over a cap."""
        return bool(
            (self.max_backlog_events and events > self.max_backlog_events)
            or (self.max_backlog_bytes and nbytes > self.max_backlog_bytes)
        )

    def byte_cap_position(self, head_byte: int, start_byte: int) -> int | None:
        """The byte position a backlog from `start_byte` must start at for the byte cap
        (`max_backlog_bytes` before the head), or None while it is within it."""
        if self.max_backlog_bytes and head_byte - start_byte > self.max_backlog_bytes:
            return head_byte - self.max_backlog_bytes
        return None

    def forget_before(self, idle_since: float) -> float | None:
        """Expired registrations last seen before this are forgotten (None: kept for ever)."""
        if not self.expired_retention_sec:
            return None
        return idle_since - self.expired_retention_sec


def storage_limits(settings: Settings) -> StorageLimits:
    return StorageLimits(
        max_backlog_events=settings.storage_max_backlog_events,
        max_backlog_bytes=settings.storage_max_backlog_bytes,
        backlog_policy=settings.storage_backlog_policy,
        min_free_bytes=settings.storage_min_free_bytes,
        expired_retention_sec=settings.lease_expired_retention_sec,
    )


# --- drop_oldest: where a backlog over a cap starts again


@dataclass(frozen=True, slots=True)
class Drop:
    """A backlog moved forward by a cap: its new start and cursor, and the events lost."""

    start: int
    cursor: int
    dropped: int


def drop_over_cap(
    limits: StorageLimits,
    head: int,
    start: int,
    cursor: int,
    pending: bool,
    byte_cap_start: int | None,
) -> Drop | None:
    """Where the backlog `[start, head)` must start for the caps to hold, or None if it may stay.

    `byte_cap_start` is the first event within `max_backlog_bytes` of the head
    (the backend finds it when the byte cap is exceeded), else None. When part
    of the pending batch must go, all of it goes: its ack becomes a no-op.
    """
    new_start = start
    if limits.max_backlog_events and head - start > limits.max_backlog_events:
        new_start = head - limits.max_backlog_events
    if byte_cap_start is not None:
        new_start = max(new_start, byte_cap_start)
    if new_start <= start:
        return None
    if pending:
        new_start = max(new_start, cursor)
    return Drop(new_start, max(cursor, new_start), new_start - start)


class DropReports:
    """The warning for events lost to a cap, at most once a minute per registration.

    A consumer that is gone loses events on every append; one line a minute
    with the count since the last one says the same without flooding the log.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._unreported: dict[str, int] = {}
        self._warned_at: dict[str, float] = {}

    def dropped(self, registration_id: str, count: int) -> None:
        total = self._unreported.get(registration_id, 0) + count
        now = self._clock()
        if now - self._warned_at.get(registration_id, -DROP_WARN_EVERY) < DROP_WARN_EVERY:
            self._unreported[registration_id] = total
            return
        self._unreported[registration_id] = 0
        self._warned_at[registration_id] = now
        log.warning(
            "registration %s is over its backlog cap (storage.max_backlog_events / "
            "storage.max_backlog_bytes): dropped its %d oldest unacknowledged events; "
            "is its consumer still running?",
            registration_id,
            total,
        )

    def forget(self, registration_id: str) -> None:
        self._unreported.pop(registration_id, None)
        self._warned_at.pop(registration_id, None)


# --- refusals: what a producer's 503 says


def backlog_full(registration_id: str) -> StorageUnavailable:
    return StorageUnavailable(
        f"the backlog of registration {registration_id} is full (storage.max_backlog_events "
        "/ storage.max_backlog_bytes, policy reject); retry once it catches up"
    )


def below_watermark(home: Path, free: int, min_free: int) -> StorageUnavailable:
    return StorageUnavailable(
        f"free disk space under {home} ({free} bytes) is below storage.min_free_bytes "
        f"({min_free}); ingest resumes by itself once consumers catch up or space is freed"
    )


def disk_full(home: Path) -> StorageUnavailable:
    return StorageUnavailable(
        f"the disk under {home} is full; ingest resumes by itself once consumers catch up "
        "or space is freed"
    )


# --- group commit


@dataclass(slots=True)  # not frozen: one is made per append, and frozen ones build slower
class AppendRequest:
    """One `Storage.append` call as a group commit takes it (never changed)."""

    events: Sequence[bytes]
    #: Bytes of `events`.
    size: int
    now: float
    dead_letters: DeadLetters | None = None

    @classmethod
    def of(
        cls, events: Sequence[bytes], now: float, dead_letters: DeadLetters | None
    ) -> AppendRequest:
        return cls(events, sum(map(len, events)), now, dead_letters)

    @property
    def letters_size(self) -> int:
        return 0 if self.dead_letters is None else self.dead_letters.size


def group_takes(group_size: int, next_size: int) -> bool:
    """Whether a group commit of `group_size` bytes also takes a request of `next_size`:
    up to MAX_GROUP_BYTES in all, and always a first one, however large."""
    return group_size == 0 or group_size + next_size <= MAX_GROUP_BYTES
