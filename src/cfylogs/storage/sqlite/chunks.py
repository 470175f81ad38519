"""The `chunks` table: events stored once, one row per commit (format: `chunkformat`).

Every function runs on the connection it is given, inside the caller's
transaction: the writer's while it appends, cuts or collects, a reader's
snapshot when it reads a batch.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from cfylogs.models import JoinedEntries
from cfylogs.storage.sqlite import chunkformat as fmt


class Head(NamedTuple):
    """Where the next event goes: its seq, and the event bytes stored before it."""

    seq: int
    byte: int


def insert(conn: sqlite3.Connection, head: Head, events: list[bytes], now: float) -> Head:
    """Store `events` as one chunk at `head`; return the head after them."""
    # Each event is stored with a comma after it: a batch is then one slice of
    # `data`, already the inside of a JSON array (see `read`).
    offsets, data = fmt.pack(events, fmt.COMMA)
    conn.execute(
        "INSERT INTO chunks (first_seq, count, first_byte, ingested_at, offsets, data) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (head.seq, len(events), head.byte, now, offsets, data),
    )
    # Event bytes: the commas are not counted.
    return Head(head.seq + len(events), head.byte + len(data) - len(events))


def read(conn: sqlite3.Connection, start: int, end: int) -> JoinedEntries:
    """Events [start, end), within the caller's transaction: only their bytes are read,
    as one slice per chunk (SQLite's incremental blob I/O)."""
    pieces: list[bytes] = []
    bounds = [0]
    rows = conn.execute(
        "SELECT first_seq, offsets FROM chunks WHERE first_seq >= "
        "coalesce((SELECT max(first_seq) FROM chunks WHERE first_seq <= ?), 0) "
        "AND first_seq < ? ORDER BY first_seq",
        (start, end),
    ).fetchall()
    for first_seq, offsets_blob in rows:
        offsets = fmt.decode_offsets(offsets_blob)
        lo = max(start - first_seq, 0)
        hi = min(end - first_seq, len(offsets) - 1)
        if lo >= hi:
            continue
        with conn.blobopen("chunks", "data", first_seq, readonly=True) as blob:
            commas = fmt.has_commas(len(blob), offsets)
            begin, length = fmt.span(offsets, lo, hi, commas)
            blob.seek(begin)
            piece = blob.read(length)
        if not commas:
            offsets, piece = fmt.with_commas(piece, offsets, lo, hi)
            lo, hi = 0, len(offsets) - 1
        fmt.extend_bounds(bounds, offsets, lo, hi)
        pieces.append(piece)
    return JoinedEntries(pieces[0] if len(pieces) == 1 else b"".join(pieces), bounds)


def read_snapshot(conn: sqlite3.Connection, start: int, end: int) -> JoinedEntries:
    """Events [start, end), on a reader connection: the chunk list and the blobs from
    one snapshot."""
    conn.execute("BEGIN")
    try:
        return read(conn, start, end)
    finally:
        conn.execute("COMMIT")


def byte_position(conn: sqlite3.Connection, seq: int, head: Head) -> int:
    """Event bytes stored before event `seq`."""
    if seq >= head.seq:
        return head.byte
    row = conn.execute(
        "SELECT first_seq, first_byte, offsets FROM chunks WHERE first_seq <= ? "
        "ORDER BY first_seq DESC LIMIT 1",
        (seq,),
    ).fetchone()
    if row is None:
        return head.byte
    first_seq, first_byte, offsets_blob = row
    return fmt.byte_at(fmt.decode_offsets(offsets_blob), first_seq, first_byte, seq)


def seq_at_byte(conn: sqlite3.Connection, position: int, head: Head) -> int:
    """The first event that starts at or after byte `position`."""
    row = conn.execute(
        "SELECT first_seq, first_byte, offsets FROM chunks WHERE first_byte <= ? "
        "ORDER BY first_byte DESC LIMIT 1",
        (position,),
    ).fetchone()
    if row is None:
        return head.seq
    first_seq, first_byte, offsets_blob = row
    at = fmt.seq_at(fmt.decode_offsets(offsets_blob), first_seq, first_byte, position)
    return min(at, head.seq)


def limit_bytes(
    conn: sqlite3.Connection, start: int, end: int, max_bytes: int, head: Head
) -> tuple[int, int]:
    """Where a batch from `start` ends: at `end` at the latest, within `max_bytes` of
    events but never empty; and how many event bytes it holds."""
    base = byte_position(conn, start, head)
    span = byte_position(conn, end, head) - base
    if span <= max_bytes:
        return end, span
    rows = conn.execute(
        "SELECT first_seq, first_byte, offsets FROM chunks "
        "WHERE first_seq >= (SELECT max(first_seq) FROM chunks WHERE first_seq <= ?) "
        "AND first_seq < ? ORDER BY first_seq",
        (start, end),
    )
    for first_seq, first_byte, offsets_blob in rows:
        offsets = fmt.decode_offsets(offsets_blob)
        cut = fmt.cut_in_chunk(offsets, first_seq, first_byte, start, end, base, max_bytes)
        if cut is not None:
            return cut
    return end, span


def delete_before(conn: sqlite3.Connection, keep_from: int) -> None:
    """Delete the chunks whose events all come before seq `keep_from`."""
    row = conn.execute(
        "SELECT first_seq, count FROM chunks WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
        (keep_from,),
    ).fetchone()
    if row is None:
        return
    first_seq, count = row
    if first_seq + count <= keep_from:
        conn.execute("DELETE FROM chunks WHERE first_seq <= ?", (first_seq,))
    else:
        conn.execute("DELETE FROM chunks WHERE first_seq < ?", (first_seq,))


def ingested_at(conn: sqlite3.Connection, seq: int) -> float | None:
    """When event `seq` was stored (None if it is not)."""
    row = conn.execute(
        "SELECT ingested_at FROM chunks WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
        (seq,),
    ).fetchone()
    return None if row is None else float(row[0])


def first_seq(conn: sqlite3.Connection) -> int | None:
    """The first event still stored."""
    row = conn.execute("SELECT min(first_seq) FROM chunks").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def end_of_last(conn: sqlite3.Connection) -> Head | None:
    """The head right after the last chunk (None without chunks)."""
    last = conn.execute(
        "SELECT first_seq, count, first_byte, offsets FROM chunks ORDER BY first_seq DESC LIMIT 1"
    ).fetchone()
    if last is None:
        return None
    first, count, first_byte, offsets = last
    return Head(int(first + count), int(first_byte + fmt.decode_offsets(offsets)[-1]))
