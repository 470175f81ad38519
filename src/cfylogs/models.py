"""Plain data exchanged between the domain, storage and the HTTP layer (no I/O)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload


@dataclass(frozen=True, slots=True)
class Registration:
    """A consumer and where it stands; backlog figures are as of the call."""

    id: str
    name: str | None
    created_at: float
    last_seen: float
    client_subject: str | None = None
    backlog_events: int = 0
    backlog_bytes: int = 0
    #: Ingest time of the oldest event not yet acknowledged, if any.
    oldest_unacked_at: float | None = None
    pending_batch_id: int | None = None
    #: How many times the pending batch was handed out (1 = not re-delivered).
    pending_deliveries: int = 0
    #: Deliveries beyond the first, over the life of the registration.
    redeliveries: int = 0
    #: Events of this registration dropped by a backlog cap.
    dropped_events: int = 0


class JoinedEntries(Sequence[bytes]):
    """Events held as one buffer, each followed by a comma: `e1,e2,...,en,`.

    That is how the embedded store keeps them on disk, so a batch is read as
    one slice and rendered as a JSON array without splitting its events and
    joining them again; single events are cut out only when asked for.
    """

    #: Weakly referable: storage hands one object to every delivery of a pending batch.
    __slots__ = ("__weakref__", "_bounds", "buffer")

    def __init__(self, buffer: bytes, bounds: Sequence[int]) -> None:
        #: The events with a comma after each (the last one too).
        self.buffer = buffer
        #: Where each event starts, and len(buffer) last.
        self._bounds = bounds

    @classmethod
    def of(cls, events: Sequence[bytes]) -> JoinedEntries:
        bounds = [0]
        for event in events:
            bounds.append(bounds[-1] + len(event) + 1)
        return cls(b",".join([*events, b""]) if events else b"", bounds)

    def json_items(self) -> memoryview:
        """The inside of the JSON array: the events separated by commas."""
        return memoryview(self.buffer)[:-1]

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("entry index out of range")
        return self.buffer[self._bounds[index] : self._bounds[index + 1] - 1]

    def __iter__(self) -> Iterator[bytes]:
        bounds, buffer = self._bounds, self.buffer
        for i in range(len(bounds) - 1):
            yield buffer[bounds[i] : bounds[i + 1] - 1]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JoinedEntries({list(self)!r})"


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch handed to a consumer: the raw events exactly as they were posted."""

    registration_id: str
    id: int
    entries: Sequence[bytes]
    #: 1 on the first delivery, 2 on the first re-delivery, ...
    deliveries: int


@dataclass(frozen=True, slots=True)
class AckResult:
    #: False when the batch had already been acknowledged (acks are idempotent).
    acknowledged: bool
    #: Events the acknowledgement released (0 when already acknowledged).
    events: int = 0


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    #: Events stored for the registrations; 0 when none was active (discarded).
    stored: int
    discarded: int
    #: Events the backlog caps dropped from registrations' backlogs to make room
    #: (policy drop_oldest; an event dropped from two backlogs counts twice).
    dropped: int = 0
    #: Oldest dead letters deleted to keep at most `DeadLetters.max_kept`.
    dead_letters_dropped: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """Events the ingest filter kept from consumers, stored with the append of their request."""

    #: (event, reason)
    letters: Sequence[tuple[bytes, str]]
    #: Beyond this many dead letters, the oldest are deleted (0: no cap).
    max_kept: int

    @property
    def size(self) -> int:
        return sum(len(event) for event, _ in self.letters)


@dataclass(frozen=True, slots=True)
class ExpiryOutcome:
    #: Active registrations whose lease ran out: expired now.
    expired: list[str]
    #: Expired registrations past `alien_registration.expired_retention_sec`: deleted now
    #: (their ids can no longer be revived).
    purged: list[str]


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What `/health` and metrics show of the store."""

    backend: str
    ok: bool
    detail: str
    events_stored: int
    bytes_stored: int
    disk_bytes: int
    free_bytes: int | None
    head_seq: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event the ingest filter (`ingest.accept`) kept away from consumers."""

    id: int
    event: bytes
    reason: str
    received_at: float
