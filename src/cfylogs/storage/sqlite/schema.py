"""The embedded store's tables, their upgrades, and the head kept in `meta`.

- `chunks`: events in ingest order, stored once whatever the number of
  registrations (format: `chunkformat`).
- `registrations`: per consumer, a cursor (first seq not yet handed out) and
  the pending batch `[pending_start, cursor)` whose id is `next_batch_id - 1`.
- `meta`: schema version and the head (next seq, event bytes ever stored).
  A group of appends alone does not update the head there: at open the head
  is the end of the last chunk when that is further, and every other
  transaction brings meta up to date, so the one that deletes the last
  chunks records where the head is.
- `legacy_batches`: batches adopted from the Java server (`import-legacy`).
- `dead_letters`: events `ingest.accept` kept from consumers.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from cfylogs.errors import StorageCorrupt
from cfylogs.storage.sqlite import chunks
from cfylogs.storage.sqlite.chunks import Head

log = logging.getLogger("cfylogs.storage.sqlite")

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE chunks (
    first_seq   INTEGER PRIMARY KEY,  -- seq of its first event
    count       INTEGER NOT NULL,
    first_byte  INTEGER NOT NULL,     -- event bytes stored before it, for backlog sizes
    ingested_at REAL NOT NULL,
    offsets     BLOB NOT NULL,        -- count + 1 uint32 boundaries in data
    data        BLOB NOT NULL         -- the events, exactly as posted, back to back
);
CREATE INDEX chunks_by_byte ON chunks (first_byte);
CREATE TABLE registrations (
    id                 TEXT PRIMARY KEY,
    name               TEXT,
    client_subject     TEXT,
    created_at         REAL NOT NULL,
    last_seen          REAL NOT NULL,
    active             INTEGER NOT NULL,
    cursor             INTEGER NOT NULL,
    next_batch_id      INTEGER NOT NULL,
    pending_start      INTEGER,           -- NULL when no batch is pending
    pending_deliveries INTEGER NOT NULL DEFAULT 0,
    redeliveries       INTEGER NOT NULL DEFAULT 0,
    dropped            INTEGER NOT NULL DEFAULT 0,
    start_byte         INTEGER NOT NULL DEFAULT 0  -- byte position of the backlog's start
);
"""
LEGACY_SCHEMA = """
CREATE TABLE legacy_batches (
    registration_id TEXT NOT NULL,
    batch_id        INTEGER NOT NULL,
    ingested_at     REAL NOT NULL,
    deliveries      INTEGER NOT NULL DEFAULT 0,
    offsets         BLOB NOT NULL,      -- count + 1 uint32 boundaries in data
    data            BLOB NOT NULL,      -- the entries, exactly as the Java server kept them
    PRIMARY KEY (registration_id, batch_id)
);
"""
DEAD_LETTERS_SCHEMA = """
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    reason      TEXT NOT NULL,
    event       BLOB NOT NULL
);
"""
#: What turns a store of schema version N into N + 1 (run at open, in one transaction).
#: 3 -> 4 changes no table: chunks written from 4 on hold a comma after each event and
#: meta's head may lag the last chunk, which releases before 4 would misread.
MIGRATIONS = {1: LEGACY_SCHEMA, 2: DEAD_LETTERS_SCHEMA, 3: ""}


def check_ours(path: Path) -> None:
    """Read-only look at an existing file: a foreign or newer one is refused untouched
    (opening it for writing would already switch its journal mode)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables:
            if tables:
                raise StorageCorrupt(f"{path} is an SQLite database not made by cfylogs")
            return
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    version = row[0] if row else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StorageCorrupt(
            f"{path} was written by a newer cfylogs (schema {version}, this one "
            f"knows {SCHEMA_VERSION}); run that version, or a later one, on it"
        )


def prepare(conn: sqlite3.Connection, path: Path) -> tuple[Head, Head]:
    """Create or upgrade the tables (`check_ours` refused any file we cannot);
    return the head as meta has it and the real head."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:  # a new file
        conn.executescript(
            f"BEGIN IMMEDIATE; {SCHEMA}; {LEGACY_SCHEMA}; {DEAD_LETTERS_SCHEMA}; "
            "INSERT INTO meta (key, value) VALUES "
            f"('schema_version', {SCHEMA_VERSION}), ('head_seq', 0), ('head_byte', 0); COMMIT;"
        )
        log.info("created the embedded store %s", path)
    else:
        _give_back_free_pages_from_now_on(conn, path)
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    version = int(meta["schema_version"])
    while version < SCHEMA_VERSION:
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[version]}; UPDATE meta SET value = "
            f"{version + 1} WHERE key = 'schema_version'; COMMIT;"
        )
        log.info("upgraded the embedded store %s to schema %d", path, version + 1)
        version += 1
    meta_head = Head(int(meta["head_seq"]), int(meta["head_byte"]))
    # Appends committed alone do not update meta: the last chunk tells where the head
    # is. Meta has it right whenever no chunk is left.
    last = chunks.end_of_last(conn)
    return meta_head, last if last is not None and last.seq > meta_head.seq else meta_head


def write_head(conn: sqlite3.Connection, head: Head) -> None:
    conn.executemany(
        "UPDATE meta SET value = ? WHERE key = ?",
        [(head.seq, "head_seq"), (head.byte, "head_byte")],
    )


#: A store made before auto_vacuum was set up right is converted at open up to this size
#: (VACUUM rewrites the whole file: seconds for this much); a larger one is left, with
#: the offline command in the log.
CONVERT_MAX_BYTES = 256 * 1024**2


def _give_back_free_pages_from_now_on(conn: sqlite3.Connection, path: Path) -> None:
    """Stores of earlier releases were created without auto_vacuum (it was set after the
    switch to WAL, which SQLite ignores): their file never shrank after a drain."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 0:
        return
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]
    if size > CONVERT_MAX_BYTES:
        log.warning(
            "%s does not give free space back to the file system (made by an earlier "
            "release); with cfylogs stopped, run: sqlite3 %s 'PRAGMA auto_vacuum = "
            "INCREMENTAL; VACUUM;' (it needs as much free space as the file)",
            path,
            path,
        )
        return
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM")
    log.info("%s now gives free space back to the file system", path)
