"""JSON bodies of the API: the one error renderer, batches, registrations."""

from __future__ import annotations

import weakref
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


class RenderedBody(bytes):
    """A rendered batch, weakly referenced by `BatchBodies` (plain bytes cannot be)."""


class BatchBodies:
    """One rendered body per pending batch, shared by every answer that carries it.

    A batch id names the same bytes for as long as it is pending, on every
    relay: a thousand long polls of one registration woken by one append get
    one body between them (the event loop's transports keep a reference to
    what they were given, not a copy), so memory stays flat however many
    wait. Weak: a body lives as long as an answer still holds it.
    """

    def __init__(self) -> None:
        self._bodies: weakref.WeakValueDictionary[tuple[str, int], RenderedBody] = (
            weakref.WeakValueDictionary()
        )

    def render(self, batch: Batch | None) -> bytes:
        if batch is None:
            return EMPTY_BATCH
        key = (batch.registration_id, batch.id)
        body = self._bodies.get(key)
        if body is None:
            body = RenderedBody(render_batch(batch))
            self._bodies[key] = body
        return body

    def forget(self, registration_id: str) -> None:
        """A removed registration's ids may one day name other bytes (an import)."""
        for key in [k for k in self._bodies if k[0] == registration_id]:
            self._bodies.pop(key, None)


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
