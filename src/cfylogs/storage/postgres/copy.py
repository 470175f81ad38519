"""PostgreSQL's binary COPY format for event rows, encoded in one pass (no I/O).

Several times faster than the driver's row-by-row adaptation: batched ingest
sends the whole request as one `COPY ... FROM STDIN (FORMAT BINARY)`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

#: Signature, flags, header extension length.
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
#: Per row: 4 fields; int8 seq, int8 byte, float8 ingested_at, then the bytea's length.
_ROW = struct.Struct("!hiqiqidi")


def event_rows(first: int, first_byte: int, events: Sequence[bytes], now: float) -> bytes:
    """Rows (seq, byte, ingested_at, data) of `events`, numbered from `first`, the first
    one `first_byte` event bytes into the stream."""
    parts = [HEADER]
    position = first_byte
    for offset, event in enumerate(events):
        parts.append(_ROW.pack(4, 8, first + offset, 8, position, 8, now, len(event)))
        parts.append(event)
        position += len(event)
    parts.append(TRAILER)
    return b"".join(parts)
