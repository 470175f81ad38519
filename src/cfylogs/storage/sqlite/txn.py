"""One transaction of the writer: the changes it stages, published only once it commits."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from typing import Any

from cfylogs.errors import RegistrationExpired, RegistrationNotFound
from cfylogs.models import Batch
from cfylogs.storage.shared_entries import BatchKey
from cfylogs.storage.sqlite.chunks import Head
from cfylogs.storage.sqlite.mirror import REG_COLUMNS, Legacy, Mirror, Reg, reg_row

_REG_UPSERT = (
    f"INSERT OR REPLACE INTO registrations ({', '.join(REG_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(REG_COLUMNS))})"
)


class Txn:
    """The registrations and head as this transaction has them (the mirror plus what it
    changed), and what it writes to their rows."""

    def __init__(self, conn: sqlite3.Connection, mirror: Mirror) -> None:
        self.conn = conn
        self.mirror = mirror
        self.head: Head = mirror.head
        self.changed: dict[str, Reg | None] = {}
        self.legacy_changed: dict[str, tuple[Legacy, ...]] = {}
        #: Batches cut for waiting long polls, handed over after the commit.
        self.ready: dict[str, Batch] = {}
        #: Entries of the batches it hands out, shared once it commits: a batch it cuts
        #: names seqs and an id that a rollback gives back, to be reused by other events.
        self.shares: dict[BatchKey, Sequence[bytes]] = {}
        #: Whether chunks may have become collectable.
        self.gc = False

    def reg(self, registration_id: str) -> Reg | None:
        if registration_id in self.changed:
            return self.changed[registration_id]
        return self.mirror.regs.get(registration_id)

    def active_reg(self, registration_id: str) -> Reg:
        reg = self.reg(registration_id)
        if reg is None:
            raise RegistrationNotFound(registration_id)
        if not reg.active:
            raise RegistrationExpired(registration_id)
        return reg

    def all_regs(self) -> list[Reg]:
        merged: dict[str, Reg | None] = dict(self.mirror.regs)
        merged.update(self.changed)
        return [reg for reg in merged.values() if reg is not None]

    def active_regs(self) -> list[Reg]:
        if not self.changed:  # most groups: appends only
            return [reg for reg in self.mirror.regs.values() if reg.active]
        return [reg for reg in self.all_regs() if reg.active]

    def emptied(self, reg: Reg, **changes: Any) -> Reg:
        """`reg` with an empty backlog: it starts at the head, nothing pending."""
        return dataclasses.replace(
            reg,
            cursor=self.head.seq,
            start_byte=self.head.byte,
            pending_start=None,
            pending_deliveries=0,
            **changes,
        )

    def create(
        self,
        registration_id: str,
        name: str | None,
        client_subject: str | None,
        now: float,
        next_batch_id: int = 0,
    ) -> Reg:
        """A new active registration that sees the events appended from now on."""
        reg = Reg(
            id=registration_id,
            name=name,
            client_subject=client_subject,
            created_at=now,
            last_seen=now,
            active=True,
            cursor=self.head.seq,
            next_batch_id=next_batch_id,
            pending_start=None,
            pending_deliveries=0,
            redeliveries=0,
            dropped=0,
            start_byte=self.head.byte,
        )
        self.put(reg)
        return reg

    def put(self, reg: Reg) -> None:
        self.conn.execute(_REG_UPSERT, reg_row(reg))
        self.changed[reg.id] = reg

    def delete(self, registration_id: str) -> None:
        self.conn.execute("DELETE FROM registrations WHERE id = ?", (registration_id,))
        self.drop_legacy(registration_id)
        self.changed[registration_id] = None
        self.gc = True

    def legacy(self, registration_id: str) -> tuple[Legacy, ...]:
        if registration_id in self.legacy_changed:
            return self.legacy_changed[registration_id]
        return self.mirror.legacy.get(registration_id, ())

    def drop_legacy(self, registration_id: str) -> None:
        if self.legacy(registration_id):
            self.conn.execute(
                "DELETE FROM legacy_batches WHERE registration_id = ?", (registration_id,)
            )
            self.legacy_changed[registration_id] = ()

    def share(self, key: BatchKey, entries: Sequence[bytes]) -> Sequence[bytes]:
        """The entries to hand out for `key`: those already shared (committed or staged
        here), else `entries`, shared once this transaction commits."""
        shared = self.shares.get(key) or self.mirror.shared.get(key)
        if shared is not None:
            return shared
        self.shares[key] = entries
        return entries

    def publish(self) -> None:
        """After the commit: make what it changed visible."""
        for key, entries in self.shares.items():
            self.mirror.shared.share(key, entries)
        self.mirror.publish(self.changed, self.legacy_changed, self.head, self.ready)
