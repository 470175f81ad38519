"""Plain data exchanged between the domain, storage and the HTTP layer (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
