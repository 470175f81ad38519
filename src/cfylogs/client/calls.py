"""Each API call as data (method, path, body, how to read the answer), without I/O.

`Client` and `AsyncClient` only send a `Call` and hand the answer back to
it, so the two stay one-liners per operation and cannot drift apart.
"""

from __future__ import annotations

import email.utils
import gzip as gzip_module
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import msgspec

from cfylogs.client import models
from cfylogs.client.errors import ClientError, ProtocolError, error_for_status

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_error_body = msgspec.json.Decoder(dict[str, Any])
#: Longest a client honours a `Retry-After` (a bad header must not stall it for a day).
MAX_RETRY_AFTER_SEC = 600.0


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[bytes], T]
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds the server may hold the request on purpose (long polling).
    held_for: float = 0.0
    #: Statuses besides 200 whose body `parse` understands (503 of /health).
    also_parses: frozenset[int] = frozenset()

    def read(self, status: int, headers: Mapping[str, str], body: bytes) -> T:
        """The result of an answer, or the `ClientError` it stands for, raised."""
        if status == 200 or status in self.also_parses:
            try:
                return self.parse(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if status == 200:
                    raise ProtocolError(
                        f"unexpected answer to {self.method} {self.path}: {exc}", status
                    ) from None
        raise error_from_answer(status, headers, body)


def error_from_answer(status: int, headers: Mapping[str, str], body: bytes) -> ClientError:
    message, code = _error_message(status, body)
    return error_for_status(status, message, code, retry_after(headers.get("retry-after")))


def _error_message(status: int, body: bytes) -> tuple[str, int | None]:
    try:
        error = _error_body.decode(body).get("error")
    except msgspec.DecodeError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return error["message"], code if isinstance(code, int) else None
    text = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}" + (f": {text}" if text else ""), None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        seconds = when - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SEC)


def _registration_path(registration_id: str) -> str:
    return quote(registration_id, safe="")


def register(name: str | None = None) -> Call[str]:
    body = {} if name is None else {"name": name}
    return Call(
        "POST",
        "/api/v1/registration",
        models.decode_register,
        content=_encode(body),
        headers={"content-type": "application/json"},
    )


def unregister(registration_id: str) -> Call[None]:
    path = f"/api/v1/registration/{_registration_path(registration_id)}"
    return Call("DELETE", path, lambda _: None)


def fetch(
    registration_id: str, wait: float = 0.0, max_entries: int | None = None
) -> Call[models.Batch | None]:
    params = {}
    if wait > 0:
        params["wait"] = f"{wait:g}"
    if max_entries is not None:
        params["max"] = str(max_entries)
    return Call(
        "GET",
        f"/api/v1/logs/{_registration_path(registration_id)}",
        lambda body: models.decode_batch(registration_id, body),
        params=params,
        held_for=wait,
    )


def ack(registration_id: str, batch_id: int) -> Call[models.AckResult]:
    path = f"/api/v1/logs/{_registration_path(registration_id)}/ack/{batch_id}"
    return Call("DELETE", path, models.decode_ack)


def push(events: Iterable[bytes | Mapping[str, Any]], gzip: bool = False) -> Call[int]:
    """One request carrying `events` (raw JSON objects or mappings) as a JSON array."""
    raws = [event if isinstance(event, bytes) else _encode(event) for event in events]
    body = b"[" + b",".join(raws) + b"]"
    headers = {"content-type": "application/json"}
    if gzip:
        body = gzip_module.compress(body, compresslevel=5)
        headers["content-encoding"] = "gzip"
    return Call("POST", "/api/v1/logs", models.decode_accepted, content=body, headers=headers)


def registrations() -> Call[list[models.Registration]]:
    return Call("GET", "/api/v1/registration", models.decode_registrations)


def health() -> Call[models.Health]:
    return Call("GET", "/health", models.decode_health, also_parses=frozenset({503}))


# --- dead letters (ingest.accept)


def dead_letters(after: int = 0, limit: int = 100) -> Call[models.DeadLetterPage]:
    params = {"after": str(after), "limit": str(limit)}
    return Call("GET", "/api/v1/dead-letters", models.decode_dead_letters, params=params)


def replay_dead_letters(ids: Iterable[int] | None) -> Call[models.ReplayResult]:
    """`ids`, or (None) every dead letter, into the stream."""
    body = {"all": True} if ids is None else {"ids": list(ids)}
    headers = {"content-type": "application/json"}
    path = "/api/v1/dead-letters/replay"
    return Call("POST", path, models.decode_replay, content=_encode(body), headers=headers)


def purge_dead_letters(ids: Iterable[int] | None) -> Call[int]:
    """Delete `ids`, or (None) every dead letter; the answer is how many were deleted."""
    params = {"all": "true"} if ids is None else {"ids": ",".join(map(str, ids))}
    return Call("DELETE", "/api/v1/dead-letters", models.decode_purged, params=params)
