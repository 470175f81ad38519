"""Batches adopted from the Java server (`Storage.adopt`, `cfylogs import-legacy`), on PostgreSQL.

A registration's adopted batches (`cfylogs_legacy_batches`) come before its
events: each is handed out whole under its own id until acknowledged, then
the next; once none is left the registration reads the shared events. Every
function runs inside the caller's transaction, after the registration's row
was locked, so adopted batches follow the same rules across instances as
the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

from cfylogs.errors import BatchNotDelivered, StorageCorrupt
from cfylogs.models import AckResult, Batch
from cfylogs.storage.postgres.connection import AConn

#: Per registration: adopted events, bytes, oldest ingest time, first batch id and deliveries
#: (joined laterally on `r`, the registration).
BACKLOG_SQL = (
    "LEFT JOIN LATERAL (SELECT coalesce(sum(cardinality(l.entries)), 0) AS events,"
    " coalesce(sum(l.size), 0) AS bytes, min(l.ingested_at) AS oldest,"
    " (array_agg(l.batch_id ORDER BY l.batch_id))[1] AS first_id,"
    " (array_agg(l.deliveries ORDER BY l.batch_id))[1] AS first_deliveries"
    " FROM cfylogs_legacy_batches l WHERE l.registration_id = r.id) legacy ON true"
)
BACKLOG_COLUMNS = (
    "legacy.events, legacy.bytes, legacy.oldest, legacy.first_id, legacy.first_deliveries"
)
#: Whether registration `r` has adopted batches left.
EXISTS_SQL = "EXISTS (SELECT FROM cfylogs_legacy_batches l WHERE l.registration_id = r.id)"
TOTALS_SQL = (
    "SELECT coalesce(sum(cardinality(entries)), 0), coalesce(sum(size), 0)"
    " FROM cfylogs_legacy_batches"
)


async def insert(
    conn: AConn, registration_id: str, batches: Sequence[tuple[int, Sequence[bytes]]], now: float
) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO cfylogs_legacy_batches"
            " (registration_id, batch_id, ingested_at, size, entries) VALUES (%s, %s, %s, %s, %s)",
            [
                (registration_id, batch_id, now, sum(map(len, entries)), list(entries))
                for batch_id, entries in batches
            ],
        )


async def hand_out(conn: AConn, registration_id: str) -> Batch:
    """The first adopted batch, whole, counting one more delivery (the registration has one)."""
    cur = await conn.execute(
        "UPDATE cfylogs_legacy_batches SET deliveries = deliveries + 1"
        " WHERE registration_id = %(id)s AND batch_id = (SELECT min(batch_id)"
        "  FROM cfylogs_legacy_batches WHERE registration_id = %(id)s)"
        " RETURNING batch_id, deliveries, entries",
        {"id": registration_id},
    )
    row = await cur.fetchone()
    if row is None:
        raise StorageCorrupt(f"the adopted batches of registration {registration_id} vanished")
    batch_id, deliveries, entries = row
    if deliveries > 1:
        await conn.execute(
            "UPDATE cfylogs_registrations SET redeliveries = redeliveries + 1 WHERE id = %s",
            (registration_id,),
        )
    return Batch(registration_id, batch_id, [bytes(e) for e in entries], deliveries)


async def ack(conn: AConn, registration_id: str, batch_id: int) -> AckResult:
    """Acknowledge an adopted batch (the registration has one).

    The first one may have been handed out by the Java server just before the
    migration: its ack is accepted even before we deliver it.
    """
    cur = await conn.execute(
        "SELECT batch_id, cardinality(entries) FROM cfylogs_legacy_batches"
        " WHERE registration_id = %s ORDER BY batch_id LIMIT 1",
        (registration_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise StorageCorrupt(f"the adopted batches of registration {registration_id} vanished")
    first, count = row
    if batch_id == first:
        await conn.execute(
            "DELETE FROM cfylogs_legacy_batches WHERE registration_id = %s AND batch_id = %s",
            (registration_id, batch_id),
        )
        return AckResult(True, count)
    if 0 <= batch_id < first:
        return AckResult(False)
    raise BatchNotDelivered(registration_id, batch_id, first)


async def drop(conn: AConn, registration_ids: Sequence[str]) -> None:
    await conn.execute(
        "DELETE FROM cfylogs_legacy_batches WHERE registration_id = ANY(%s)",
        (list(registration_ids),),
    )
