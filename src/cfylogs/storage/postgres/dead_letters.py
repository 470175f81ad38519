"""The `cfylogs_dead_letters` table: events the ingest filter kept from consumers.

Each function runs in the caller's transaction (dead letters are stored by
the append of their request).
"""

from __future__ import annotations

from collections.abc import Sequence

from cfylogs.models import DeadLetter, DeadLetters
from cfylogs.storage.postgres.connection import AConn, one


async def insert(conn: AConn, dead_letters: DeadLetters, now: float) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO cfylogs_dead_letters (received_at, reason, event) VALUES (%s, %s, %s)",
            [(now, reason, event) for event, reason in dead_letters.letters],
        )


async def trim(conn: AConn, max_kept: int) -> int:
    """Delete the oldest beyond `max_kept` (0: no cap); return how many were."""
    if max_kept <= 0:
        return 0
    over = int(await one(conn, "SELECT count(*) FROM cfylogs_dead_letters")) - max_kept
    if over <= 0:
        return 0
    await conn.execute(
        "DELETE FROM cfylogs_dead_letters WHERE id IN"
        " (SELECT id FROM cfylogs_dead_letters ORDER BY id LIMIT %s)",
        (over,),
    )
    return over


async def page(conn: AConn, after_id: int, limit: int) -> list[DeadLetter]:
    cur = await conn.execute(
        "SELECT id, event, reason, received_at FROM cfylogs_dead_letters"
        " WHERE id > %s ORDER BY id LIMIT %s",
        (after_id, limit),
    )
    rows = await cur.fetchall()
    return [DeadLetter(id, bytes(event), reason, at) for id, event, reason, at in rows]


async def count(conn: AConn) -> int:
    return int(await one(conn, "SELECT count(*) FROM cfylogs_dead_letters"))


async def take(conn: AConn, ids: Sequence[int]) -> tuple[list[int], list[bytes]]:
    """The ids and events of the dead letters `ids` that exist, in id order, locked
    (before the head, in the append that replays them): replayed once only."""
    cur = await conn.execute(
        "SELECT id, event FROM cfylogs_dead_letters WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (list(ids),),
    )
    rows = await cur.fetchall()
    return [int(row[0]) for row in rows], [bytes(row[1]) for row in rows]


async def delete(conn: AConn, ids: Sequence[int] | None) -> int:
    """Delete the dead letters `ids` (None: all of them); return how many were."""
    if ids is None:
        cur = await conn.execute("DELETE FROM cfylogs_dead_letters")
    else:
        cur = await conn.execute(
            "DELETE FROM cfylogs_dead_letters WHERE id = ANY(%s)", (list(ids),)
        )
    return cur.rowcount
