"""A PostgreSQL that does not answer: every storage operation ends within its bound.

The database is stopped with SIGSTOP (`PgServer.frozen`): connections stay
open, the kernel acknowledges what is sent, nothing answers. A private
cluster, so that stopping it stops no other test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

from cfylogs.errors import StorageUnavailable
from cfylogs.storage.postgres import PostgresStorage, connection
from cfylogs.storage.postgres.connection import POOL_CLOSE_WAIT
from cfylogs.storage.postgres.timeouts import session_options
from tests.pgserver import PgServer, running_server

T = TypeVar("T")

NOW = 1_800_000_000.0
#: storage.postgres.timeout_sec of these stores.
BOUND = 1.0
#: What a shared 2-core machine may add to a bound (scheduling, nothing else).
SLACK = 0.5
MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def database() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


@pytest.fixture
async def store(database: PgServer) -> AsyncIterator[PostgresStorage]:
    opened = PostgresStorage(database.create_schema(), timeout=BOUND)
    await opened.open()
    yield opened
    await opened.close()


async def timed(operation: Awaitable[T]) -> tuple[float, T | Exception]:
    """How long `operation` took, and what it returned or raised."""
    start = time.monotonic()
    try:
        outcome: T | Exception = await operation
    except Exception as exc:
        outcome = exc
    return time.monotonic() - start, outcome


async def eventually(call: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """`call()`'s first result that is not a StorageUnavailable (the store recovering)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)  # a poll's pace, not synchronisation


async def entries(store: PostgresStorage, registration_id: str) -> list[bytes]:
    """Everything left for the registration, acknowledged as it goes."""
    got: list[bytes] = []
    while batch := await store.fetch(registration_id, 100, MAX_BYTES, NOW):
        got.extend(batch.entries)
        await store.ack(registration_id, batch.id, NOW)
    return got


async def test_every_operation_on_a_silent_database_ends_within_the_bound(
    database: PgServer, store: PostgresStorage
) -> None:
    await store.register("r", None, None, NOW)
    await store.append([b'{"n":0}'], NOW)
    pending = await store.fetch("r", 100, MAX_BYTES, NOW)
    assert pending is not None
    with database.frozen():
        operations: list[Awaitable[Any]] = [
            store.append([b'{"n":1}'], NOW),
            store.append([b'{"n":2}'], NOW),
            store.fetch("r", 100, MAX_BYTES, NOW),
            store.ack("r", pending.id, NOW),
            store.touch("r", NOW),
            store.registrations(),
            store.register("r2", None, None, NOW),
        ]
        results = await asyncio.gather(*map(timed, operations), timed(store.status()))
    *refused, (status_elapsed, status) = results
    print(f"silent database: {[round(e, 2) for e, _ in results]} s (bound {BOUND} s)")
    for elapsed, outcome in refused:
        assert isinstance(outcome, StorageUnavailable), outcome
        assert elapsed < BOUND + SLACK
    assert not isinstance(status, Exception) and not status.ok
    assert status_elapsed < BOUND + SLACK
    # Resumed: the same store works again, without being reopened. What was refused
    # before its commit was sent is not stored (the server rolls it back on resuming).
    await eventually(lambda: store.append([b'{"n":3}'], NOW))
    assert (await store.status()).ok
    assert await entries(store, "r") == [b'{"n":0}', b'{"n":3}']


async def test_appends_queued_behind_a_stuck_group_get_their_own_bound(
    database: PgServer, store: PostgresStorage
) -> None:
    """Not the stuck group's bound plus theirs: one group commit at a time, but each
    append is answered within the bound of its arrival."""
    await store.register("r", None, None, NOW)
    with database.frozen():
        first = asyncio.create_task(timed(store.append([b'{"n":1}'], NOW)))
        await asyncio.sleep(0.1)  # spaces the arrivals: the first group is under way
        later = await asyncio.gather(*(timed(store.append([b"{}"], NOW)) for _ in range(5)))
        stuck = await first
    for elapsed, outcome in [stuck, *later]:
        assert isinstance(outcome, StorageUnavailable)
        assert elapsed < BOUND + SLACK  # in turn they would take twice the bound


async def test_a_task_cancelled_mid_query_on_a_silent_database_ends_at_once(
    database: PgServer, store: PostgresStorage
) -> None:
    """psycopg would send a cancel request, on a new connection that a silent server
    does not answer either, and wait 5 s for it: the connection is dropped instead."""
    await store.register("r", None, None, NOW)
    with database.frozen():
        task = asyncio.create_task(store.fetch("r", 100, MAX_BYTES, NOW, waiting=True))
        await asyncio.sleep(0.2)  # mid-query (the bound is far)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - cancelled_at
    assert took < SLACK
    await eventually(lambda: store.append([b"{}"], NOW))  # the connection was replaced


async def test_closing_on_a_silent_database_answers_what_waits_and_ends_quickly(
    database: PgServer, store: PostgresStorage
) -> None:
    await store.register("r", None, None, NOW)
    with database.frozen():
        waiting = [
            asyncio.create_task(timed(store.append([b"{}"], NOW))),
            asyncio.create_task(timed(store.fetch("r", 100, MAX_BYTES, NOW))),
            asyncio.create_task(timed(store.append([b"{}"], NOW))),
        ]
        await asyncio.sleep(0.2)  # all of them waiting on the database (or for a connection)
        took, closed = await timed(store.close())
        answered = await asyncio.gather(*waiting)
    assert closed is None and took < POOL_CLOSE_WAIT + SLACK
    for elapsed, outcome in answered:
        assert isinstance(outcome, StorageUnavailable)
        assert elapsed < 0.2 + POOL_CLOSE_WAIT + SLACK


async def test_a_lock_held_elsewhere_is_given_up_by_the_server_in_half_the_bound(
    database: PgServer, store: PostgresStorage
) -> None:
    """A slow database (here a row locked by a transaction that does not end): the
    server's lock_timeout answers before the relay's own bound, and the connection stays
    usable (nothing is cut, nothing is in doubt)."""
    await store.register("r", None, None, NOW)
    with psycopg.connect(store.dsn) as other:
        other.execute("SELECT 1 FROM cfylogs_registrations WHERE id = 'r' FOR UPDATE")
        elapsed, outcome = await timed(store.fetch("r", 100, MAX_BYTES, NOW))
    assert isinstance(outcome, StorageUnavailable) and "lock timeout" in outcome.message
    assert BOUND / 2 <= elapsed < BOUND
    assert await store.fetch("r", 100, MAX_BYTES, NOW) is None


async def test_a_relay_stopped_mid_transaction_holds_its_locks_for_the_bound_at_most(
    store: PostgresStorage,
) -> None:
    """A session set up as a relay's pool sets its own, idle in a transaction with a row
    locked (its relay stopped, or cut off): the server ends it after the bound, and the
    others, refused meanwhile by their lock_timeout, go on."""
    await store.register("r", None, None, NOW)
    options = session_options(store.dsn, BOUND, "full")
    stopped = psycopg.connect(store.dsn, options=options)
    try:
        stopped.execute("SELECT 1 FROM cfylogs_registrations WHERE id = 'r' FOR UPDATE")
        held_since = time.monotonic()
        with pytest.raises(StorageUnavailable, match="lock timeout"):
            await store.fetch("r", 100, MAX_BYTES, NOW)
        assert await eventually(lambda: store.fetch("r", 100, MAX_BYTES, NOW)) is None
        assert time.monotonic() - held_since < BOUND + SLACK
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            stopped.execute("SELECT 1")
    finally:
        stopped.close()


async def test_the_listener_notices_a_silent_database_and_listens_again_after_it(
    database: PgServer,
    store: PostgresStorage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(connection, "LISTEN_PING_EVERY", 0.2)  # it pings an idle connection
    caplog.set_level(logging.INFO, logger="cfylogs.storage.postgres")
    other = PostgresStorage(store.dsn, timeout=BOUND)
    await other.open()
    try:
        await store.register("r", None, None, NOW)
        woken = asyncio.Event()
        store.on_new_events(woken.set)
        with database.frozen():
            lost = f"PostgreSQL connection lost (no answer within {BOUND:g} s)"
            await until(lambda: lost in caplog.text, 0.2 + BOUND + SLACK)
        await until(lambda: "PostgreSQL reachable again" in caplog.text, 15)
        # Listening again: another instance's append wakes this one's long polls.
        woken.clear()
        await eventually(lambda: other.append([b"{}"], NOW))
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await other.close()


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.02)  # a poll's pace
