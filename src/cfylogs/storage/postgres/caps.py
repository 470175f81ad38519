"""The backlog caps on PostgreSQL: the SQL that finds backlogs over a cap.

The decision (which policy, where a backlog starts again, the messages, how
often a drop is logged) is `storage.policy`'s, as on every backend; what is
here finds, in the database, the registrations `StorageLimits.over` would
name, without reading every registration's figures on each append.
"""

from __future__ import annotations

from typing import Any

from cfylogs.errors import RelayError
from cfylogs.storage import policy
from cfylogs.storage.policy import DropReports, StorageLimits
from cfylogs.storage.postgres import events
from cfylogs.storage.postgres.connection import AConn, fetchone
from cfylogs.storage.postgres.events import BACKLOG_START, JOIN_BACKLOG_START


def _over(
    limits: StorageLimits, head: int, head_byte: int, count: int, size: int
) -> tuple[str, dict[str, Any]]:
    """`StorageLimits.over` in SQL, on registration `r` and its start event `e`, for its
    backlog with `count` events of `size` bytes more."""
    return (
        f"r.active AND ((%(max_events)s > 0 AND %(head)s - {BACKLOG_START} + %(count)s"
        " > %(max_events)s) OR (%(max_bytes)s > 0 AND %(head_byte)s"
        " - coalesce(e.byte, %(head_byte)s) + %(size)s > %(max_bytes)s))",
        {
            "max_events": limits.max_backlog_events,
            "max_bytes": limits.max_backlog_bytes,
            "head": head,
            "head_byte": head_byte,
            "count": count,
            "size": size,
        },
    )


async def refusal(
    conn: AConn, limits: StorageLimits, head: int, head_byte: int, count: int, size: int
) -> RelayError | None:
    """Policy reject: refuse when `count` events of `size` bytes overflow a backlog."""
    if not limits.rejects:
        return None
    where, params = _over(limits, head, head_byte, count, size)
    row = await fetchone(
        conn,
        f"SELECT r.id FROM cfylogs_registrations r {JOIN_BACKLOG_START} WHERE {where} LIMIT 1",
        params,
    )
    return None if row is None else policy.backlog_full(row[0])


async def drop_over_cap(
    conn: AConn, limits: StorageLimits, head: int, head_byte: int, reports: DropReports
) -> int:
    """Policy drop_oldest: move the start of every backlog over a cap forward (the rows
    locked in id order); return how many events the backlogs lost."""
    if not limits.drops:
        return 0
    where, params = _over(limits, head, head_byte, 0, 0)
    cur = await conn.execute(
        f"SELECT r.id, {BACKLOG_START}, r.cursor, r.pending_start, coalesce(e.byte, %(head_byte)s)"
        f" FROM cfylogs_registrations r {JOIN_BACKLOG_START} WHERE {where}"
        " ORDER BY r.id FOR UPDATE OF r",
        params,
    )
    over = await cur.fetchall()
    lost = 0
    for registration_id, start, cursor, pending_start, start_byte in over:
        position = limits.byte_cap_position(head_byte, start_byte)
        byte_start = None
        if position is not None:
            events_start = (
                max(start, head - limits.max_backlog_events) if limits.max_backlog_events else start
            )
            byte_start = await events.seq_at_byte(conn, events_start, position, head)
        drop = policy.drop_over_cap(
            limits, head, start, cursor, pending_start is not None, byte_start
        )
        if drop is None:
            continue
        await conn.execute(
            "UPDATE cfylogs_registrations SET pending_start = NULL, pending_deliveries = 0,"
            " cursor = %s, dropped = dropped + %s WHERE id = %s",
            (drop.cursor, drop.dropped, registration_id),
        )
        reports.dropped(registration_id, drop.dropped)
        lost += drop.dropped
    if over:
        await events.collect(conn)
    return lost
