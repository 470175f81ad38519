"""The `dead_letters` table: events the ingest filter kept from consumers (`ingest.accept`).

Each function runs in the caller's transaction: the writer's to store, trim,
replay or purge (dead letters are stored by the append of their request), a
reader's to list and count.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cfylogs.models import DeadLetter, DeadLetters


def insert(conn: sqlite3.Connection, dead_letters: DeadLetters, now: float) -> None:
    conn.executemany(
        "INSERT INTO dead_letters (received_at, reason, event) VALUES (?, ?, ?)",
        [(now, reason, event) for event, reason in dead_letters.letters],
    )


def trim(conn: sqlite3.Connection, max_kept: int) -> int:
    """Delete the oldest beyond `max_kept` (0: no cap); return how many were."""
    if max_kept <= 0:
        return 0
    over = int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]) - max_kept
    if over <= 0:
        return 0
    conn.execute(
        "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)",
        (over,),
    )
    return over


def page(conn: sqlite3.Connection, after_id: int, limit: int) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT id, event, reason, received_at FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    return [DeadLetter(int(i), bytes(e), str(r), float(t)) for i, e, r, t in rows]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


def events(conn: sqlite3.Connection, ids: Sequence[int]) -> list[bytes]:
    """The events of the dead letters `ids` that exist, in id order."""
    marks = ", ".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT event FROM dead_letters WHERE id IN ({marks}) ORDER BY id", list(ids)
    ).fetchall()
    return [bytes(event) for (event,) in rows]


def delete(conn: sqlite3.Connection, ids: Sequence[int] | None) -> int:
    """Delete the dead letters `ids` (None: all of them); return how many were."""
    if ids is None:
        return int(conn.execute("DELETE FROM dead_letters").rowcount)
    marks = ", ".join("?" * len(ids))
    return int(conn.execute(f"DELETE FROM dead_letters WHERE id IN ({marks})", list(ids)).rowcount)
