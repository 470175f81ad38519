"""What only the PostgreSQL backend has: migrations, its notification listener, its settings."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from cfylogs.config import load_settings
from cfylogs.errors import ConfigError, StorageCorrupt
from cfylogs.storage import create_storage
from cfylogs.storage.postgres import PostgresStorage
from cfylogs.storage.postgres.schema import MIGRATIONS
from tests.pgserver import PgServer

NOW = 1_800_000_000.0


@pytest.fixture
def dsn(pg_server: PgServer) -> str:
    return pg_server.create_schema()


@pytest.fixture
async def opened() -> AsyncIterator[list[PostgresStorage]]:
    stores: list[PostgresStorage] = []
    yield stores
    for store in stores:
        await store.close()


async def open_store(dsn: str, opened: list[PostgresStorage]) -> PostgresStorage:
    store = PostgresStorage(dsn)
    await store.open()
    opened.append(store)
    return store


async def test_instances_starting_together_migrate_once(
    dsn: str, opened: list[PostgresStorage]
) -> None:
    await asyncio.gather(*(open_store(dsn, opened) for _ in range(6)))
    with psycopg.connect(dsn) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM cfylogs_migrations")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_a_database_of_a_newer_cfylogs_stops_start_up(dsn: str) -> None:
    store = PostgresStorage(dsn)
    await store.open()
    await store.close()
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO cfylogs_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StorageCorrupt, match="newer cfylogs"):
        await PostgresStorage(dsn).open()


async def test_wake_ups_survive_a_dropped_listener_connection(
    dsn: str, opened: list[PostgresStorage]
) -> None:
    listening, writer = await open_store(dsn, opened), await open_store(dsn, opened)
    await writer.register(str(uuid.uuid4()), None, None, NOW)
    woken = asyncio.Event()
    listening.on_new_events(woken.set)
    listeners = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'cfylogs'"
        " AND (query LIKE 'LISTEN%%' OR query = 'SELECT 1')"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        await _until(lambda: len(conn.execute(listeners).fetchall()) == 2)
        # Both listening connections are cut, as a database restart or a proxy would.
        cut = conn.execute(f"SELECT pg_terminate_backend(pid) FROM ({listeners}) l").fetchall()
    assert len(cut) == 2 and all(row[0] for row in cut)
    for _ in range(200):  # append until the listener, reconnected, hears of it
        await writer.append([b'{"n":1}'], NOW)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), 0.1)
            break
    assert woken.is_set()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)  # polling interval; the condition is what synchronises


def test_the_dsn_comes_from_the_environment_and_stays_out_of_reprs(
    tmp_path: Path, dsn: str
) -> None:
    secret = f"{dsn} password=hunter2"
    settings = load_settings(
        cwd=tmp_path,
        environ={"CFYLOGS_STORAGE_BACKEND": "postgres", "CFYLOGS_STORAGE_POSTGRES_DSN": secret},
    )
    store = create_storage(settings)
    assert isinstance(store, PostgresStorage) and store.dsn == secret
    assert "hunter2" not in repr(settings) and "hunter2" not in repr(store)


def test_postgres_without_a_dsn_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage\.postgres\.dsn"):
        load_settings(cwd=tmp_path, environ={"CFYLOGS_STORAGE_BACKEND": "postgres"})


async def test_a_database_of_an_older_cfylogs_is_migrated_in_place(
    dsn: str, opened: list[PostgresStorage]
) -> None:
    with psycopg.connect(dsn) as conn:  # what the first release of the backend left
        conn.execute(
            "CREATE TABLE cfylogs_migrations (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO cfylogs_migrations (version) VALUES (1)")
        conn.execute(
            "INSERT INTO cfylogs_registrations (id, created_at, last_seen, active, cursor,"
            " next_batch_id) VALUES ('kept', %s, %s, true, 0, 0)",
            (NOW, NOW),
        )
    store = await open_store(dsn, opened)  # migrates from 1 to the newest
    with psycopg.connect(dsn) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM cfylogs_migrations")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert [r.id for r in await store.registrations()] == ["kept"]
    assert await store.adopt("adopted", [(3, [b'{"n":1}'])], NOW)
    batch = await store.fetch("adopted", 10, 1 << 20, NOW)
    assert batch is not None and (batch.id, list(batch.entries)) == (3, [b'{"n":1}'])
