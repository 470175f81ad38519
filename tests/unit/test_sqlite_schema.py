"""A store written by the previous schema is upgraded in place at open, nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cfylogs.storage.sqlite import _SCHEMA, DB_FILE, SCHEMA_VERSION, SqliteStorage


async def test_a_schema_1_store_is_upgraded_and_keeps_its_registrations(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / DB_FILE)
    conn.executescript(
        f"{_SCHEMA}; INSERT INTO meta (key, value) VALUES "
        "('schema_version', 1), ('head_seq', 0), ('head_byte', 0);"
        "INSERT INTO registrations (id, created_at, last_seen, active, cursor, next_batch_id) "
        "VALUES ('old', 1, 1, 1, 0, 5);"
    )
    conn.commit()
    conn.close()
    store = SqliteStorage(home)
    await store.open()
    try:
        assert [r.id for r in await store.registrations()] == ["old"]
        assert await store.adopt("new", [(2, [b"{}"])], 10.0)
        batch = await store.fetch("new", 10, 1 << 20, 10.0)
        assert batch is not None and (batch.id, list(batch.entries)) == (2, [b"{}"])
        await store.append_dead_letters([(b"{}", "junk")], 10.0, 0)  # schema 3: dead letters
        assert await store.count_dead_letters() == 1
    finally:
        await store.close()
    conn = sqlite3.connect(home / DB_FILE)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    conn.close()
    assert version == SCHEMA_VERSION == 3
