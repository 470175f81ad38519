"""The typed results of client calls (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec


@dataclass(frozen=True)
class Batch:
    """A batch of events handed to a registration, to be acknowledged by `id`.

    `raw_entries` are the events exactly as they were posted (same bytes);
    `entries` the same events decoded.
    """

    registration_id: str
    id: int
    raw_entries: tuple[bytes, ...]
    entries: list[dict[str, Any]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.raw_entries)


@dataclass(frozen=True)
class AckResult:
    #: False when the batch had already been acknowledged (acks are idempotent).
    acknowledged: bool
    #: Events the acknowledgement released.
    events: int = 0


@dataclass(frozen=True)
class Registration:
    """A consumer as the server lists it; times are Unix seconds."""

    id: str
    name: str | None = None
    created: float | None = None
    last_seen: float | None = None
    client_subject: str | None = None
    backlog_events: int = 0
    backlog_bytes: int = 0
    #: Ingest time of the oldest event not yet acknowledged.
    oldest_unacked_at: float | None = None
    pending_batch_id: int | None = None
    #: Times the pending batch was handed out (more than 1: re-delivered).
    pending_deliveries: int = 0
    redeliveries: int = 0
    dropped_events: int = 0


@dataclass(frozen=True)
class StorageHealth:
    backend: str = ""
    detail: str = ""
    events: int = 0
    bytes: int = 0
    disk_bytes: int = 0
    free_bytes: int | None = None


@dataclass(frozen=True)
class Health:
    """`GET /health`; `ok` is False when the server said its store does not answer."""

    status: str
    version: str = ""
    storage: StorageHealth = field(default_factory=StorageHealth)
    uptime_sec: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class PushResult:
    #: Events the server accepted (stored, or counted and discarded when nobody is registered).
    accepted: int
    #: Requests it took.
    requests: int = 1


@dataclass(frozen=True)
class DeadLetter:
    """An event that `ingest.accept` kept from consumers; `received` is Unix seconds."""

    id: int
    received: float
    reason: str
    event: dict[str, Any]


@dataclass(frozen=True)
class DeadLetterPage:
    """Dead letters in id order, and how many there are in all."""

    total: int
    dead_letters: list[DeadLetter]
    #: Pass as `after` for the next page; None on the last one.
    next_after: int | None = None


@dataclass(frozen=True)
class ReplayResult:
    #: Dead letters moved into the stream, as if ingested now.
    replayed: int
    #: Kept as dead letters: no registration exists to receive them.
    kept_no_registration: int = 0


class _BatchWire(msgspec.Struct):
    id: int | None = None
    entries: list[msgspec.Raw] = msgspec.field(default_factory=list)


class _RegistrationsWire(msgspec.Struct):
    registrations: list[Registration]


class _RegisterWire(msgspec.Struct):
    id: str


class _AcceptedWire(msgspec.Struct):
    accepted: int = 0


class _PurgedWire(msgspec.Struct):
    purged: int


_decode_entry = msgspec.json.Decoder(dict[str, Any]).decode
_decode_batch = msgspec.json.Decoder(_BatchWire).decode
_decode_registrations = msgspec.json.Decoder(_RegistrationsWire).decode
_decode_register = msgspec.json.Decoder(_RegisterWire).decode
_decode_ack = msgspec.json.Decoder(AckResult).decode
_decode_health = msgspec.json.Decoder(Health).decode
_decode_accepted = msgspec.json.Decoder(_AcceptedWire).decode
_decode_dead_letters = msgspec.json.Decoder(DeadLetterPage).decode
_decode_replay = msgspec.json.Decoder(ReplayResult).decode
_decode_purged = msgspec.json.Decoder(_PurgedWire).decode


def decode_batch(registration_id: str, body: bytes) -> Batch | None:
    wire = _decode_batch(body)
    if wire.id is None:
        return None
    raws = tuple(bytes(raw) for raw in wire.entries)
    return Batch(registration_id, wire.id, raws, [_decode_entry(raw) for raw in raws])


def decode_registrations(body: bytes) -> list[Registration]:
    return _decode_registrations(body).registrations


def decode_register(body: bytes) -> str:
    return _decode_register(body).id


def decode_ack(body: bytes) -> AckResult:
    return _decode_ack(body)


def decode_health(body: bytes) -> Health:
    return _decode_health(body)


def decode_accepted(body: bytes) -> int:
    return _decode_accepted(body).accepted


def decode_dead_letters(body: bytes) -> DeadLetterPage:
    return _decode_dead_letters(body)


def decode_replay(body: bytes) -> ReplayResult:
    return _decode_replay(body)


def decode_purged(body: bytes) -> int:
    return _decode_purged(body).purged
