"""Batches adopted from the Java server (`Storage.adopt`, `cfylogs import-legacy`), on SQLite.

Per registration, whole batches with their own ids and entries, handed out
before the registration's range of shared events and deleted on ack. They
are copies (the Java server had no shared log to point into) and exist only
until the migrated orchestrators have caught up. The writer's functions run
inside its transaction (`Txn`); `read` runs on a reader.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence

from cfylogs.errors import BatchNotDelivered
from cfylogs.models import AckResult
from cfylogs.storage.sqlite.chunkformat import decode_offsets, pack
from cfylogs.storage.sqlite.mirror import Legacy, Reg
from cfylogs.storage.sqlite.txn import Txn


def insert(
    txn: Txn, registration_id: str, batches: Sequence[tuple[int, Sequence[bytes]]], now: float
) -> None:
    adopted = []
    for batch_id, entries in batches:
        offsets, data = pack(entries)
        txn.conn.execute(
            "INSERT INTO legacy_batches (registration_id, batch_id, ingested_at, "
            "offsets, data) VALUES (?, ?, ?, ?, ?)",
            (registration_id, batch_id, now, offsets, data),
        )
        adopted.append(Legacy(batch_id, len(entries), len(data), now, 0))
    txn.legacy_changed[registration_id] = tuple(adopted)


def hand_out(txn: Txn, reg: Reg) -> Legacy:
    """The first adopted batch goes out whole, under its own id (the registration has one)."""
    first, *rest = txn.legacy(reg.id)
    first = dataclasses.replace(first, deliveries=first.deliveries + 1)
    txn.conn.execute(
        "UPDATE legacy_batches SET deliveries = ? WHERE registration_id = ? AND batch_id = ?",
        (first.deliveries, reg.id, first.batch_id),
    )
    txn.legacy_changed[reg.id] = (first, *rest)
    if first.deliveries > 1:
        txn.put(dataclasses.replace(reg, redeliveries=reg.redeliveries + 1))
    return first


def ack(txn: Txn, registration_id: str, batch_id: int) -> AckResult:
    """Acknowledge an adopted batch (the registration has one).

    The first one may have been handed out by the Java server just before the
    migration: its ack is accepted even before we deliver it.
    """
    first, *rest = txn.legacy(registration_id)
    if batch_id == first.batch_id:
        txn.conn.execute(
            "DELETE FROM legacy_batches WHERE registration_id = ? AND batch_id = ?",
            (registration_id, batch_id),
        )
        txn.legacy_changed[registration_id] = tuple(rest)
        return AckResult(True, first.count)
    if 0 <= batch_id < first.batch_id:
        return AckResult(False)
    raise BatchNotDelivered(registration_id, batch_id, first.batch_id)


def read(conn: sqlite3.Connection, registration_id: str, batch_id: int) -> list[bytes]:
    """The entries of an adopted batch; none if it was acknowledged meanwhile."""
    row = conn.execute(
        "SELECT offsets, data FROM legacy_batches WHERE registration_id = ? AND batch_id = ?",
        (registration_id, batch_id),
    ).fetchone()
    if row is None:
        return []
    offsets, view = decode_offsets(row[0]), memoryview(row[1])
    return [bytes(view[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1)]
