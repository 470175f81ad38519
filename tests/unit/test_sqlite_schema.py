"""A store written by the previous schema is upgraded in place at open, nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cfylogs.http.render import render_batch
from cfylogs.models import DeadLetters, JoinedEntries
from cfylogs.storage.sqlite import DB_FILE, SqliteStorage
from cfylogs.storage.sqlite.chunkformat import pack
from cfylogs.storage.sqlite.schema import SCHEMA, SCHEMA_VERSION


async def test_a_schema_1_store_is_upgraded_and_keeps_its_registrations(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / DB_FILE)
    conn.executescript(
        f"{SCHEMA}; INSERT INTO meta (key, value) VALUES "
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
        await store.append([], 10.0, DeadLetters([(b"{}", "junk")], 0))  # schema 3: dead letters
        assert await store.count_dead_letters() == 1
    finally:
        await store.close()
    conn = sqlite3.connect(home / DB_FILE)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    conn.close()
    assert version == SCHEMA_VERSION == 4


async def test_chunks_stored_without_separators_read_back_beside_new_ones(tmp_path: Path) -> None:
    """Stores of earlier releases hold events back to back; later chunks have a comma
    after each event. A batch spanning both reads and renders the same events."""
    home = tmp_path / "home"
    old_events = [b'{"n":%d}' % i for i in range(5)]
    store = SqliteStorage(home)
    await store.open()
    await store.register("r", None, None, 1.0)
    await store.close()
    offsets, data = pack(old_events)  # the earlier format: no separator
    conn = sqlite3.connect(home / DB_FILE)
    with conn:
        conn.execute(
            "INSERT INTO chunks (first_seq, count, first_byte, ingested_at, offsets, data) "
            "VALUES (0, 5, 0, 1.0, ?, ?)",
            (offsets, data),
        )
        conn.execute("UPDATE meta SET value = 5 WHERE key = 'head_seq'")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_byte'", (len(data),))
    conn.close()
    store = SqliteStorage(home)
    await store.open()
    try:
        new_events = [b'{"n":%d, "x": [1, 2]}' % i for i in range(5, 9)]
        await store.append(new_events, 2.0)
        [reg] = await store.registrations()
        assert reg.backlog_bytes == sum(map(len, old_events + new_events))
        first = await store.fetch("r", 3, 1 << 20, 3.0)
        assert first is not None and list(first.entries) == old_events[:3]
        assert (await store.ack("r", first.id, 3.0)).events == 3
        spanning = await store.fetch("r", 100, 1 << 20, 3.0)
        assert spanning is not None
        assert list(spanning.entries) == old_events[3:] + new_events
        assert render_batch(spanning) == b'{"id":1,"entries":[%b]}' % b",".join(
            old_events[3:] + new_events
        )
    finally:
        await store.close()


def test_joined_entries_behave_as_a_sequence_of_events() -> None:
    events = [b"{}", b'{"a":1}', b'{"b":[1,2]}']
    joined = JoinedEntries.of(events)
    assert len(joined) == 3 and list(joined) == events and joined == events
    assert joined[-1] == events[-1] and joined[1:] == events[1:]
    assert bytes(joined.json_items()) == b",".join(events)
    assert JoinedEntries.of([]) == [] and len(JoinedEntries.of([])) == 0
