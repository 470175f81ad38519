"""The embedded store's writer thread (group commit) and its checkpointer thread.

One thread owns the write connection (the datasette way). Every write is an
`Op` queued to it; the writer takes everything queued (up to
`policy.MAX_GROUP_BYTES` of events), runs it in one transaction, commits once
(one fsync for every request that was waiting), publishes the commit to the
mirror, and only then answers each caller. Consecutive appends become one
chunk. A group of appends only, with nothing else to write, is a single
autocommitted INSERT (`Steps.appends_alone`).

What a transaction does is the store's (`Steps`); how groups are formed,
committed, rolled back and answered is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cfylogs.errors import RelayError, StorageUnavailable
from cfylogs.models import AppendOutcome, DeadLetters
from cfylogs.storage.policy import AppendRequest, group_takes
from cfylogs.storage.sqlite.chunks import Head
from cfylogs.storage.sqlite.files import Connections
from cfylogs.storage.sqlite.mirror import Mirror
from cfylogs.storage.sqlite.schema import write_head
from cfylogs.storage.sqlite.space import is_disk_full
from cfylogs.storage.sqlite.txn import Txn

log = logging.getLogger("cfylogs.storage.sqlite")

T = TypeVar("T")

#: How often lazily kept state (last seen) is written when idle, in seconds.
FLUSH_INTERVAL = 5.0
#: The checkpointer copies the WAL into the database once about this much was written.
CHECKPOINT_BYTES = 1024**2
#: ...and at least this often (s) while anything was written since.
CHECKPOINT_EVERY = 1.0

#: An append's answer: its outcome, or the refusal it gets (it then wrote nothing).
AppendResult = tuple[AppendOutcome | None, RelayError | None]
_Answer = tuple["asyncio.Future[Any]", Any, BaseException | None]


#: Stands for "given by the constructor": every Op gets its future, but fields that follow
#: those of `AppendRequest` (one with a default) need a default too.
_GIVEN: Any = None


@dataclass(slots=True)
class Op(AppendRequest):
    """One operation queued to the writer: an append (the request itself: one object per
    append, built with positional arguments, the quickest), or any other write when `run`
    is given (then it appends nothing)."""

    future: asyncio.Future[Any] = _GIVEN
    run: Callable[[Txn], Any] | None = None
    #: Bytes it writes (events, dead letters, entries): bounds the group.
    weight: int = 0

    @property
    def is_append(self) -> bool:
        return self.run is None


class Steps(Protocol):
    """What the store does inside the writer's transactions (on the writer thread)."""

    def appends_alone(self, ops: Sequence[Op]) -> bool:
        """Whether `ops` are appends that one INSERT stores whole, with nothing else to
        write."""

    def append_in(self, txn: Txn, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Store each request whole, or refuse it."""

    def before_commit(self, txn: Txn) -> None:
        """What every transaction ends with (batches cut for long polls, collection)."""

    def housekeeping(self, conn: sqlite3.Connection) -> None:
        """Between groups: give space back, write lazy state, when due."""

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write lazily kept state (when idle, and before stopping)."""

    def disk_full(self) -> None:
        """A transaction failed for lack of space."""


class WriterHooks:
    """Seams for tests, called on the writer thread; these do nothing."""

    def group_taken(self, ops: int) -> None:
        """A group of `ops` operations is about to run (raise: it fails outside its
        transaction)."""

    def appending_alone(self) -> None:
        """A group of appends alone is about to be committed by its INSERT."""

    def committing(self) -> None:
        """A transaction is about to commit (raise: it rolls back, as on a full disk)."""


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        mirror: Mirror,
        steps: Steps,
        checkpointer: Checkpointer,
        meta_head: Head,
        page_size: int,
        hooks: WriterHooks | None = None,
    ) -> None:
        self.conn = conn
        self.mirror = mirror
        self.steps = steps
        self.checkpointer = checkpointer
        #: The head as meta has it (appends committed alone leave it behind).
        self.meta_head = meta_head
        self.page_size = page_size
        self.hooks = hooks or WriterHooks()
        #: The last failure, until a transaction commits again (for /health).
        self.failure: str | None = None
        #: While the thread runs (cheaper to read than Thread.is_alive()).
        self.running = False
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        #: The operation that did not fit in the last group: the first of the next.
        self._carry: Op | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._main, name="cfylogs-write", daemon=True)
        self.running = True  # before start: a request right after open() may come
        self._thread.start()

    async def stop(self) -> None:
        """Answer what is queued, write what is lazy, and stop."""
        if self._thread is None:
            return
        self._closing = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def submit(self, run: Callable[[Txn], T], weight: int = 0) -> T:
        """Run `run` in the writer's next transaction; its result once committed."""
        future: asyncio.Future[T] = self._future()
        self._queue.put(Op((), 0, 0.0, None, future, run, weight))
        return await future

    async def append(
        self, events: Sequence[bytes], size: int, now: float, dead_letters: DeadLetters | None
    ) -> AppendOutcome:
        """Store the events of `size` bytes and the dead letters in the writer's next
        transaction, coalesced with the appends queued beside them; the outcome once
        committed."""
        future: asyncio.Future[AppendOutcome] = self._future()
        weight = size if dead_letters is None else size + dead_letters.size
        self._queue.put(Op(events, size, now, dead_letters, future, None, weight))
        return await future

    def _future(self) -> asyncio.Future[Any]:
        if self._closing or self._loop is None:
            raise StorageUnavailable("the relay is shutting down; retry shortly")
        if not self.running:
            raise StorageUnavailable("the store's writer has stopped; see the relay's log")
        return self._loop.create_future()

    # --- the thread

    def _main(self) -> None:
        try:
            self._write_until_closed()
        finally:
            self.running = False

    def _write_until_closed(self) -> None:
        stopping = False
        while not stopping or self._carry is not None:
            self.steps.housekeeping(self.conn)
            first, self._carry = self._carry, None
            if first is None:
                try:
                    first = self._queue.get(timeout=FLUSH_INTERVAL)
                except queue.Empty:
                    self.steps.flush(self.conn)
                    continue
            ops, stop = self._take_group(first)
            stopping = stopping or stop
            if ops:
                try:
                    self.hooks.group_taken(len(ops))
                    self._run_group(ops)
                except Exception as exc:  # outside the transaction: answer them, go on
                    log.exception("the store's writer failed %d operation(s)", len(ops))
                    error = StorageUnavailable(f"the store cannot take this now: {exc}")
                    self._answer([(op.future, None, error) for op in ops])
            # Nothing of this group may stay alive while the writer waits for the next (up
            # to MAX_GROUP_BYTES of events, and through a failure's frames its entries).
            del ops
        self.steps.flush(self.conn)

    def _take_group(self, first: Op | None) -> tuple[list[Op], bool]:
        """Everything queued, up to MAX_GROUP_BYTES; and whether closing was asked."""
        ops: list[Op] = []
        size = 0
        stopping = False
        item = first
        while True:
            if item is None:
                stopping = True
            elif group_takes(size, item.weight):
                ops.append(item)
                size += item.weight
            else:
                self._carry = item
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return ops, stopping

    def _run_group(self, ops: list[Op]) -> None:
        """Run `ops` in one transaction and answer their callers after the commit."""
        try:
            answers = self._transaction(ops)
        except Exception as exc:
            error = StorageUnavailable(f"the store cannot take this now: {exc}")
            # The cause without its traceback: its frames hold the failed transaction.
            error.__cause__ = exc.with_traceback(None)
            if is_disk_full(exc):
                self.steps.disk_full()  # room for the acks and fetches below
            answers = [(op.future, None, error) for op in ops if op.is_append]
            others = [op for op in ops if not op.is_append]
            # A full disk refuses the appends; acks and fetches, which let consumers
            # drain and space come back, get a transaction of their own.
            if others and answers:
                try:
                    answers += self._transaction(others)
                except Exception:
                    answers += [(op.future, None, error) for op in others]
            else:
                answers += [(op.future, None, error) for op in others]
        self._answer(answers)

    def _transaction(self, ops: list[Op]) -> list[_Answer]:
        if self.steps.appends_alone(ops):
            return self._append_alone(ops)
        txn = Txn(self.conn, self.mirror)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            answers = self._run_ops(txn, ops)
            self.steps.before_commit(txn)
            self.hooks.committing()
            if txn.head != self.meta_head:
                write_head(self.conn, txn.head)
            self.conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self._failed(exc)
            raise
        self.meta_head = txn.head
        self._committed(txn, len(ops))
        return answers

    def _run_ops(self, txn: Txn, ops: list[Op]) -> list[_Answer]:
        answers: list[_Answer] = []
        for appending, run in itertools.groupby(ops, key=lambda op: op.run is None):
            same = list(run)
            if appending:  # consecutive appends: one chunk
                results = self.steps.append_in(txn, same)
                answers += [(op.future, *result) for op, result in zip(same, results, strict=True)]
                continue
            for op in same:
                assert op.run is not None
                try:
                    answers.append((op.future, op.run(txn), None))
                except RelayError as exc:  # a refusal: the operation wrote nothing
                    answers.append((op.future, None, exc))
        return answers

    def _append_alone(self, ops: list[Op]) -> list[_Answer]:
        txn = Txn(self.conn, self.mirror)
        self.hooks.appending_alone()
        try:
            results = self.steps.append_in(txn, ops)  # its INSERT commits by itself
        except Exception as exc:
            self._failed(exc)
            raise
        assert not txn.changed and not txn.gc, "appends_alone let a cap through"
        self._committed(txn, 1)
        return [(op.future, *result) for op, result in zip(ops, results, strict=True)]

    def _committed(self, txn: Txn, pages: int) -> None:
        self.failure = None
        self.checkpointer.note(txn.head.byte - self.mirror.head.byte + self.page_size * pages)
        txn.publish()

    def _failed(self, exc: Exception) -> None:
        if self.failure is None:
            if isinstance(exc, sqlite3.Error):
                log.error("embedded store write failed: %s", exc)
            else:
                log.exception("embedded store write failed unexpectedly")
        self.failure = str(exc)
        with contextlib.suppress(sqlite3.Error):
            self.mirror.load(self.conn)

    def _answer(self, answers: list[_Answer]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve_all, answers)


def _resolve_all(answers: list[_Answer]) -> None:
    for future, result, error in answers:
        if future.done():  # the caller went away (request cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class Checkpointer:
    """Copies the WAL into the database file, off the commit path.

    The writer wakes it after about every CHECKPOINT_BYTES committed, so the
    commit that reaches SQLite's own checkpoint point (4 MB of WAL: kept, it
    bounds the WAL, also on a full disk) finds little left to copy. A PASSIVE
    checkpoint neither waits for nor blocks the writer and the readers; the
    writer rewinds the WAL by itself once it was copied whole. A failed
    checkpoint (disk full) is retried on the next round; one that finds the
    writer's own checkpoint running just skips that round.
    """

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        self._due = threading.Event()
        #: Bytes committed since it was last woken (an estimate), counted by the writer.
        self._written = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="cfylogs-checkpoint", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._closing = True
        self._due.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def note(self, nbytes: int) -> None:
        """About `nbytes` went into the WAL (called by the writer only)."""
        self._written += nbytes
        if self._written >= CHECKPOINT_BYTES:
            self._written = 0
            self._due.set()

    def _main(self) -> None:
        conn = self._connections.open()
        failing = False
        while not self._closing:
            self._due.wait(CHECKPOINT_EVERY)
            self._due.clear()
            if self._closing:
                break
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                failing = False
            except sqlite3.Error as exc:
                if not failing:
                    log.warning("could not checkpoint the embedded store's WAL: %s", exc)
                failing = True
