"""Reading events to push: JSON objects, arrays of objects, or NDJSON, from a stream.

Input is read line by line, so a pipe that never ends (`tail -f ... |`) is
sent as it comes. A line that is a whole JSON value on its own (NDJSON, the
common case) costs one parse; a value spread over several lines (a
pretty-printed object or array) is gathered until it parses. Events are
passed on as the bytes that were read, never re-serialised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import msgspec

_ONE = msgspec.json.Decoder(msgspec.Raw)
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_CLOSERS = (b"}", b"]")
_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
#: A value still unfinished after this many bytes is a mistake, not a big event.
MAX_VALUE_BYTES = 64 * 1024**2


class InputError(ValueError):
    """The input is not JSON objects, arrays of objects, or NDJSON; says where."""


def iter_events(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Every JSON object of the input (a binary file, or any lines), as raw bytes, in order."""
    pending: list[bytes] = []
    pending_size = 0
    start_line = 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not pending:
            if not stripped:
                continue
            if stripped[:1] not in (b"{", b"["):
                raise InputError(f"line {number}: expected a JSON object or an array of objects")
            start_line = number
        pending.append(line)
        pending_size += len(line)
        # Only a line that ends like a value can complete one: skips hopeless parses.
        if not stripped.endswith(_CLOSERS):
            if pending_size > MAX_VALUE_BYTES:
                raise InputError(
                    f"line {start_line}: no complete JSON value in {pending_size} bytes"
                )
            continue
        text = stripped if len(pending) == 1 else b"".join(pending).strip()
        values = _values(text)
        if values is None:
            if len(pending) == 1 and text.startswith(b"{") and _looks_whole(text):
                raise InputError(f"line {start_line}: invalid JSON")
            continue
        for value in values:
            yield from _objects(value, start_line)
        pending.clear()
        pending_size = 0
    if pending:
        raise InputError(f"line {start_line}: invalid or incomplete JSON at the end of the input")


def _values(text: bytes) -> list[bytes] | None:
    """The JSON values of `text` (one, or several back to back), or None if it is not whole."""
    values: list[bytes] = []
    while True:
        try:
            values.append(bytes(_ONE.decode(text)))
            return values
        except msgspec.DecodeError as exc:
            # msgspec names where a complete value is followed by more: split there.
            match = _TRAILING.search(str(exc))
            if match is None:
                return None
            end = int(match.group(1)) - 1  # msgspec counts from 1
            values.append(bytes(_ONE.decode(text[:end])))
            text = text[end:]


def _looks_whole(line: bytes) -> bool:
    """A one-line `{...}` that does not parse is broken NDJSON, not the start of a value."""
    return line.count(b"{") == line.count(b"}")


def _objects(value: bytes, line: int) -> Iterator[bytes]:
    if value.startswith(b"{"):
        yield value
        return
    if value.startswith(b"["):
        for index, element in enumerate(_ARRAY.decode(value)):
            raw = bytes(element)
            if not raw.startswith(b"{"):
                raise InputError(f"line {line}: element {index} of the array is not a JSON object")
            yield raw
        return
    raise InputError(f"line {line}: expected a JSON object or an array of objects")


def batched(
    events: Iterable[bytes], size: int, max_bytes: int = 8 * 1024**2
) -> Iterator[list[bytes]]:
    """Groups of at most `size` events and (unless one event alone is larger) `max_bytes`."""
    batch: list[bytes] = []
    batch_bytes = 0
    for event in events:
        if batch and (len(batch) >= size or batch_bytes + len(event) > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(event)
        batch_bytes += len(event) + 1
    if batch:
        yield batch
