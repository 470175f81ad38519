"""The embedded store's writer thread, driven through its test seam (`WriterHooks`)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from cfylogs.errors import BatchNotDelivered, StorageUnavailable
from cfylogs.relay import Relay
from cfylogs.storage.sqlite import DB_FILE, SqliteStorage, WriterHooks


class FailOnce(WriterHooks):
    """Fails the next group outside its transaction, as a bug or an OS error while
    handling a full disk would (nothing that can be provoked from outside)."""

    def __init__(self) -> None:
        self.armed = False

    def group_taken(self, ops: int) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("injected: an OS error outside the transaction")


class HoldAppendsAlone(WriterHooks):
    """Holds a group of appends alone before its INSERT, while `hold` is set."""

    def __init__(self) -> None:
        self.hold = False
        self.entered, self.go = threading.Event(), threading.Event()

    def appending_alone(self) -> None:
        if self.hold:
            self.entered.set()
            self.go.wait(10)


async def test_a_group_failing_outside_its_transaction_is_answered_503_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    hooks = FailOnce()
    store = SqliteStorage(tmp_path / "home", hooks=hooks)
    await store.open()
    try:
        await store.register("r", None, None, 1.0)
        hooks.armed = True
        with pytest.raises(StorageUnavailable):
            await store.append([b'{"n":1}'], 2.0)  # answered, not left hanging
        assert (await store.append([b'{"n":2}'], 3.0)).stored == 1
        batch = await store.fetch("r", 10, 1 << 20, 4.0)
        assert batch is not None and list(batch.entries) == [b'{"n":2}']
        assert (await store.status()).ok
    finally:
        await store.close()


def _meta_head(home: Path) -> int:
    conn = sqlite3.connect(home / DB_FILE)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'head_seq'").fetchone()[0])
    finally:
        conn.close()


async def test_appends_committed_alone_leave_a_head_that_reopening_and_collection_keep_right(
    tmp_path: Path,
) -> None:
    """Groups of appends only commit as a lone INSERT, without updating meta's head: the
    store reads the head back from its last chunk, and the transaction that deletes
    every chunk (an ack) writes it to meta, so sequence numbers are never reused."""
    home = tmp_path / "home"
    store = SqliteStorage(home)
    await store.open()
    await store.register("r", None, None, 1.0)
    await store.append([b'{"n":0}', b'{"n":1}', b'{"n":2}'], 2.0)
    await store.close()
    assert _meta_head(home) == 0  # the case under test: meta is behind the chunks

    store = SqliteStorage(home)
    await store.open()
    await store.append([b'{"n":3}'], 3.0)
    batch = await store.fetch("r", 100, 1 << 20, 3.0)
    assert batch is not None and list(batch.entries) == [b'{"n":%d}' % i for i in range(4)]
    assert (await store.ack("r", batch.id, 3.0)).events == 4  # every chunk goes
    assert (await store.status()).events_stored == 0
    await store.close()
    assert _meta_head(home) == 4

    store = SqliteStorage(home)
    await store.open()
    try:
        await store.register("late", None, None, 4.0)
        await store.append([b'{"n":4}'], 4.0)
        for registration_id in ("r", "late"):
            batch = await store.fetch(registration_id, 100, 1 << 20, 4.0)
            assert batch is not None and list(batch.entries) == [b'{"n":4}']
        assert (await store.status()).head_seq == 5
    finally:
        await store.close()


async def test_a_long_poll_answered_without_a_batch_cut_ahead_leaves_nothing_to_cut(
    tmp_path: Path,
) -> None:
    """A poll may register while an append it cannot profit from is committing (appends
    alone cut nothing ahead); its next fetch cuts the batch the usual way. That must end
    its wish too: otherwise the following append cuts a batch nobody asked for, and an
    ack of that id, never handed out, would be taken instead of refused (409)."""
    hooks = HoldAppendsAlone()
    store = SqliteStorage(tmp_path / "home", hooks=hooks)
    await store.open()
    try:
        await store.register("r", None, None, 1.0)
        hooks.hold = True
        appending = asyncio.create_task(store.append([b'{"n":0}'], 2.0))
        assert await asyncio.to_thread(hooks.entered.wait, 10)
        assert await store.fetch("r", 10, 1 << 20, 2.0, waiting=True) is None
        hooks.hold = False
        hooks.go.set()
        await appending
        batch = await store.fetch("r", 10, 1 << 20, 2.0, waiting=True)
        assert batch is not None and list(batch.entries) == [b'{"n":0}']
        assert (await store.ack("r", batch.id, 2.0)).acknowledged
        await store.append([b'{"n":1}'], 3.0)
        with pytest.raises(BatchNotDelivered):
            await store.ack("r", batch.id + 1, 3.0)
        following = await store.fetch("r", 10, 1 << 20, 3.0)
        assert following is not None and (following.id, following.deliveries) == (1, 1)
    finally:
        await store.close()


class FailCommit(WriterHooks):
    """Fails the next transaction just before its COMMIT: it rolls back."""

    def __init__(self) -> None:
        self.armed = False

    def committing(self) -> None:
        if self.armed:
            self.armed = False
            raise sqlite3.OperationalError("injected: database or disk is full")


async def test_a_rolled_back_cut_shares_nothing_with_the_batch_that_reuses_its_id(
    tmp_path: Path,
) -> None:
    """A long poll's batch is cut in the append's transaction; if that rolls back, its
    seqs and batch id are reused by the next append, whose bytes must be the ones handed
    out (a consumer got the 503'd request's event and lost the 200'd one)."""
    hooks = FailCommit()
    store = SqliteStorage(tmp_path / "home", hooks=hooks)
    await store.open()
    try:
        await store.register("r", None, None, 1.0)
        assert await store.fetch("r", 100, 1 << 20, 2.0, waiting=True) is None
        hooks.armed = True
        with pytest.raises(StorageUnavailable):
            await store.append([b'{"producer":"A"}'], 3.0)
        assert (await store.append([b'{"producer":"B"}'], 4.0)).stored == 1
        batch = await store.fetch("r", 100, 1 << 20, 5.0, waiting=True)
        again = await store.fetch("r", 100, 1 << 20, 6.0)
        assert batch is not None and again is not None and batch.id == again.id == 0
        assert list(batch.entries) == list(again.entries) == [b'{"producer":"B"}']
    finally:
        await store.close()


async def test_a_new_store_gives_free_pages_back_and_an_old_one_is_converted(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"

    def auto_vacuum() -> int:
        conn = sqlite3.connect(home / DB_FILE)
        try:
            return int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        finally:
            conn.close()

    store = SqliteStorage(home)
    await store.open()
    await store.close()
    assert auto_vacuum() == 2  # INCREMENTAL: set before the switch to WAL, or ignored
    conn = sqlite3.connect(home / DB_FILE)  # as earlier releases left it
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    conn.close()
    assert auto_vacuum() == 0
    store = SqliteStorage(home)
    await store.open()
    await store.close()
    assert auto_vacuum() == 2


async def test_a_long_poll_whose_client_left_gets_no_batch_cut_for_it(tmp_path: Path) -> None:
    """A poll cancelled mid-wait (its client went away) never makes its last fetch, which
    withdraws its wish: without `abandon_wait` the next append cut a batch for nobody,
    held it in memory and recorded it as delivered."""
    relay = Relay(SqliteStorage(tmp_path / "home"))
    await relay.start()
    try:
        registration_id = await relay.register("gone")
        with pytest.raises(TimeoutError):  # the cancellation the HTTP layer makes
            await asyncio.wait_for(relay.fetch(registration_id, wait=30), 0.2)
        await relay.ingest([b'{"n":1}'])
        [reg] = await relay.registrations()
        assert reg.pending_batch_id is None and reg.backlog_events == 1
    finally:
        await relay.stop()
