"""The events on PostgreSQL: one row per event in `cfylogs_events`, and the head row.

Everything that knows how events are laid out in the database is here (and
the cap SQL of `caps`), so that another layout changes these modules only.
Each function runs in the caller's transaction.

Seq order is commit order: an append takes the head row's lock and keeps it
until it commits, so a reader that sees seq n has seen every seq below it,
and never cuts a batch past a gap a slower transaction would fill later
(which a plain SEQUENCE would allow, losing events for good).
"""

from __future__ import annotations

from collections.abc import Sequence

from cfylogs.models import JoinedEntries
from cfylogs.storage.postgres import copy
from cfylogs.storage.postgres.connection import AConn, fetchone, one
from cfylogs.storage.postgres.schema import GC_LOCK, LOCK_SPACE

#: The first unacknowledged seq of registration `r` (its pending batch included).
BACKLOG_START = "coalesce(r.pending_start, r.cursor)"
#: Joins `e`, the event the backlog of registration `r` starts with (none when empty).
JOIN_BACKLOG_START = f"LEFT JOIN cfylogs_events e ON e.seq = {BACKLOG_START}"


async def lock_head(conn: AConn) -> tuple[int, int] | None:
    """The head (next seq, event bytes stored), locked until commit; None (nothing
    locked) when no registration is active."""
    row = await fetchone(
        conn,
        "SELECT seq, byte FROM cfylogs_head"
        " WHERE EXISTS (SELECT FROM cfylogs_registrations WHERE active) FOR UPDATE",
    )
    return None if row is None else (int(row[0]), int(row[1]))


async def store(
    conn: AConn, head: int, head_byte: int, events: Sequence[bytes], size: int, now: float
) -> None:
    """Append `events` (`size` bytes) at the locked head."""
    await conn.execute(
        "UPDATE cfylogs_head SET seq = %s, byte = %s", (head + len(events), head_byte + size)
    )
    cur = conn.cursor()
    async with cur.copy(
        "COPY cfylogs_events (seq, byte, ingested_at, data) FROM STDIN (FORMAT BINARY)"
    ) as pipe:
        await pipe.write(copy.event_rows(head, head_byte, events, now))


async def read(conn: AConn, start: int, limit: int, max_bytes: int | None = None) -> JoinedEntries:
    """Events from seq `start` on: at most `limit`, and with `max_bytes` only as many as
    fit (but at least one). Sizes are summed in the database, so events that do not fit
    are never read: memory stays bounded by `max_bytes` whatever the events' sizes."""
    cur = await conn.execute(
        "WITH firsts AS (SELECT seq, octet_length(data) AS size FROM cfylogs_events"
        "  WHERE seq >= %(start)s ORDER BY seq LIMIT %(limit)s),"
        " running AS (SELECT seq, sum(size) OVER (ORDER BY seq) AS total FROM firsts)"
        " SELECT e.seq, e.data FROM running r JOIN cfylogs_events e USING (seq)"
        " WHERE r.seq = %(start)s OR %(max_bytes)s::bigint IS NULL OR r.total <= %(max_bytes)s"
        " ORDER BY e.seq",
        {"start": start, "limit": limit, "max_bytes": max_bytes},
    )
    entries: list[bytes] = []
    for seq, data in await cur.fetchall():
        if seq != start + len(entries):
            break  # a gap: only collected events could make one; the caller checks counts
        entries.append(bytes(data))
    return JoinedEntries.of(entries)


async def seq_at_byte(conn: AConn, start: int, position: int, head: int) -> int:
    """The first event from seq `start` on that starts at or after byte `position`.

    Bytes grow with seq, so this walks the key from `start` over the events to
    drop only (about what was just appended): no index on byte."""
    at = await one(
        conn,
        "SELECT coalesce((SELECT seq FROM cfylogs_events WHERE seq >= %s"
        " AND byte >= %s ORDER BY seq LIMIT 1), %s)",
        (start, position, head),
    )
    return int(at)


async def collect(conn: AConn) -> None:
    """Delete the events every active registration is past.

    One collector at a time (a try-lock): concurrent deletes of the same rows
    could deadlock, and a skipped pass is done by the next one.
    """
    got = await one(
        conn,
        "SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema()))",
        (LOCK_SPACE + GC_LOCK,),
    )
    if got:
        await conn.execute(
            "DELETE FROM cfylogs_events WHERE seq < ("
            f" SELECT coalesce(min({BACKLOG_START}), (SELECT seq FROM cfylogs_head))"
            " FROM cfylogs_registrations r WHERE r.active)"
        )
