"""The chunk format: pure functions over a chunk's `offsets` and `data` (no SQL, no I/O).

A chunk holds the events of one commit. `data` is the events exactly as
posted, each followed by a comma (`e1,e2,...,en,`), so any run of events is
one slice that is already the inside of a JSON array. `offsets` is
`count + 1` uint32 boundaries counted in event bytes (commas not counted):
event i is `data[offsets[i] + i : offsets[i + 1] + i]`. Chunks written before
schema 4 have no commas (event i is `data[offsets[i] : offsets[i + 1]]`) and
are told apart by their length. `first_byte` is the event bytes stored before
the chunk, so a backlog's size is a subtraction.
"""

from __future__ import annotations

import bisect
import sys
from array import array
from collections.abc import Sequence

COMMA = b","


def encode_offsets(values: Sequence[int]) -> bytes:
    arr = array("I", values)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tobytes()


def decode_offsets(blob: bytes) -> array[int]:
    arr = array("I")
    arr.frombytes(blob)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr


def pack(events: Sequence[bytes], separator: bytes = b"") -> tuple[bytes, bytes]:
    """Events back to back, each followed by `separator` (one byte, or none), with their
    count + 1 boundaries in event bytes: event i starts at offsets[i] + i * len(separator)."""
    bounds = [0]
    total = 0
    for event in events:
        total += len(event)
        bounds.append(total)
    data = separator.join(events) + separator if separator else b"".join(events)
    return encode_offsets(bounds), data


def has_commas(data_length: int, offsets: Sequence[int]) -> bool:
    """Whether a chunk's data holds a comma after each event (schema 4 on)."""
    return data_length != offsets[-1]


def span(offsets: Sequence[int], lo: int, hi: int, commas: bool) -> tuple[int, int]:
    """Where events [lo, hi) of a chunk lie in its data: (first byte, length)."""
    step = 1 if commas else 0
    begin = offsets[lo] + lo * step
    return begin, offsets[hi] + hi * step - begin


def with_commas(piece: bytes, offsets: Sequence[int], lo: int, hi: int) -> tuple[array[int], bytes]:
    """Events [lo, hi) of a chunk stored without separators, as the current format has them."""
    base = offsets[lo]
    events = [piece[offsets[i] - base : offsets[i + 1] - base] for i in range(lo, hi)]
    packed_offsets, data = pack(events, COMMA)
    return decode_offsets(packed_offsets), data


def extend_bounds(bounds: list[int], offsets: Sequence[int], lo: int, hi: int) -> None:
    """Append to `bounds` (event starts in a joined buffer, its length last) those of
    events [lo, hi) of a comma chunk whose slice follows in the buffer."""
    base = bounds[-1] - offsets[lo] - lo
    bounds.extend(base + offsets[i] + i for i in range(lo + 1, hi + 1))


def byte_at(offsets: Sequence[int], first_seq: int, first_byte: int, seq: int) -> int:
    """The byte position (event bytes stored before it) of event `seq` of the chunk; its end
    for a seq past the chunk."""
    return first_byte + offsets[min(seq - first_seq, len(offsets) - 1)]


def seq_at(offsets: Sequence[int], first_seq: int, first_byte: int, position: int) -> int:
    """The first event of the chunk that starts at or after byte `position` (the chunk's
    end when none does)."""
    return first_seq + bisect.bisect_left(offsets, position - first_byte)


def cut_in_chunk(
    offsets: Sequence[int],
    first_seq: int,
    first_byte: int,
    start: int,
    end: int,
    base: int,
    max_bytes: int,
) -> tuple[int, int] | None:
    """Where a batch from event `start` (at byte `base`) ends within `max_bytes`, if in this
    chunk (never empty: a first event larger than `max_bytes` goes alone), and its size
    in event bytes; None when every event of the chunk before `end` fits."""
    for i in range(max(start - first_seq, 0), len(offsets) - 1):
        seq = first_seq + i
        if seq >= end:
            return None
        size = first_byte + offsets[i + 1] - base
        if size > max_bytes:
            if seq == start:
                return start + 1, size
            return seq, first_byte + offsets[i] - base
    return None
