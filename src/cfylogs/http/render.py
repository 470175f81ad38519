"""JSON bodies of the API: the one error renderer, batches, registrations."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from cfylogs.errors import MethodNotAllowed, RelayError
from cfylogs.http.wire import Response
from cfylogs.models import Batch, JoinedEntries, Registration

_encode = msgspec.json.Encoder().encode
EMPTY_BATCH = b"{}"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_encode(data), status)


def error_response(error: RelayError) -> Response:
    """Every error answer of the relay, protocol errors included: the spec's body
    `{"data": null, "error": {"code": ..., "message": ...}}`, with `Retry-After` on a
    503 and `Allow` on a 405."""
    body = _encode({"data": None, "error": {"code": error.error_code, "message": error.message}})
    headers = []
    if error.retry_after is not None:
        headers.append((b"retry-after", str(error.retry_after).encode()))
    if isinstance(error, MethodNotAllowed) and error.allow:
        headers.append((b"allow", ", ".join(error.allow).encode()))
    return Response(body, error.status, headers)


class BatchBodies:
    """One rendered body per pending batch, shared by every answer that carries it.

    A batch id names the same bytes for as long as it is pending, on every
    relay: a thousand long polls of one registration woken by one append get
    one body between them (the event loop's transports keep a reference to
    what they are given, not a copy), so memory stays flat however many
    wait. A body is kept while its batch is the one last handed out for its
    registration, until it is acknowledged through this relay or another
    body is rendered more than `keep_sec` after it was last handed out: at
    most one body per registration, and none for long after the traffic.
    Owned by the event loop thread.
    """

    def __init__(self, keep_sec: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep_sec = keep_sec
        self._clock = clock
        #: registration id -> (batch id, body, when last handed out)
        self._bodies: dict[str, tuple[int, bytes, float]] = {}

    def render(self, batch: Batch | None) -> bytes:
        if batch is None:
            return EMPTY_BATCH
        now = self._clock()
        kept = self._bodies.get(batch.registration_id)
        if kept is not None and kept[0] == batch.id:
            body = kept[1]
        else:
            self._sweep(now)
            body = render_batch(batch)
        self._bodies[batch.registration_id] = (batch.id, body, now)
        return body

    def forget(self, registration_id: str) -> None:
        self._bodies.pop(registration_id, None)

    def __len__(self) -> int:
        return len(self._bodies)

    def _sweep(self, now: float) -> None:
        stale = [rid for rid, (_, _, used) in self._bodies.items() if now - used > self.keep_sec]
        for registration_id in stale:
            del self._bodies[registration_id]


def render_batch(batch: Batch | None) -> bytes:
    """`{"id": N, "entries": [...]}` from the stored bytes, the same every time."""
    if batch is None:
        return EMPTY_BATCH
    entries = batch.entries
    items = entries.json_items() if isinstance(entries, JoinedEntries) else b",".join(entries)
    return b"".join((b'{"id":%d,"entries":[' % batch.id, items, b"]}"))


def registration_json(reg: Registration) -> dict[str, Any]:
    return {
        "id": reg.id,
        "name": reg.name,
        "created": reg.created_at,
        "last_seen": reg.last_seen,
        "client_subject": reg.client_subject,
        "backlog_events": reg.backlog_events,
        "backlog_bytes": reg.backlog_bytes,
        "oldest_unacked_at": reg.oldest_unacked_at,
        "pending_batch_id": reg.pending_batch_id,
        "pending_deliveries": reg.pending_deliveries,
        "redeliveries": reg.redeliveries,
        "dropped_events": reg.dropped_events,
    }
