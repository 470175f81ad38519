"""The PostgreSQL schema as ordered migrations (version n is `MIGRATIONS[n - 1]`), and
the runner that applies them.

Never edit a released migration: add one. The relay applies the missing
ones at start-up under an advisory lock, so instances starting together
migrate once (`migrate`), and records them in `cfylogs_migrations`.
"""

from __future__ import annotations

import logging

from cfylogs.errors import StorageCorrupt
from cfylogs.storage.postgres.connection import AConn, one

log = logging.getLogger("cfylogs.storage.postgres")

#: First key of our advisory locks (second: the schema), "cfyl" in ASCII.
LOCK_SPACE = 0x6366796C
MIGRATE_LOCK = 1
GC_LOCK = 2

MIGRATIONS: list[list[str]] = [
    # 1: head counter, events stored once, registrations.
    [
        """
        CREATE TABLE cfylogs_head (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            seq       bigint NOT NULL,  -- seq of the next event
            byte      bigint NOT NULL   -- event bytes ever stored
        ) WITH (fillfactor = 10)  -- updated by every append: room for in-page (HOT) updates
        """,
        "INSERT INTO cfylogs_head (singleton, seq, byte) VALUES (true, 0, 0)",
        """
        CREATE TABLE cfylogs_events (
            seq         bigint PRIMARY KEY,
            byte        bigint NOT NULL,  -- event bytes stored before this one
            ingested_at double precision NOT NULL,
            data        bytea NOT NULL    -- the event exactly as posted
        ) WITH (
            -- A queue: rows die in bulk at every ack; vacuum them early so that scans
            -- from the head of the table do not walk over dead ones.
            autovacuum_vacuum_scale_factor = 0.01,
            autovacuum_vacuum_threshold = 1000
        )
        """,
        """
        CREATE TABLE cfylogs_registrations (
            id                 text PRIMARY KEY,
            name               text,
            client_subject     text,
            created_at         double precision NOT NULL,
            last_seen          double precision NOT NULL,
            active             boolean NOT NULL,
            cursor             bigint NOT NULL,  -- first seq not yet handed out
            next_batch_id      bigint NOT NULL,
            pending_start      bigint,           -- NULL when no batch is pending
            pending_deliveries integer NOT NULL DEFAULT 0,
            redeliveries       bigint NOT NULL DEFAULT 0,
            dropped            bigint NOT NULL DEFAULT 0
        ) WITH (fillfactor = 50)  -- updated by every fetch and ack: room for HOT updates
        """,
    ],
    # 2: batches adopted from the Java server (Storage.adopt), handed out first.
    [
        """
        CREATE TABLE cfylogs_legacy_batches (
            registration_id text NOT NULL
                REFERENCES cfylogs_registrations (id) ON DELETE CASCADE,
            batch_id        bigint NOT NULL,
            ingested_at     double precision NOT NULL,
            deliveries      integer NOT NULL DEFAULT 0,
            size            bigint NOT NULL,   -- bytes of its entries
            entries         bytea[] NOT NULL,  -- exactly as the Java server kept them
            PRIMARY KEY (registration_id, batch_id)
        )
        """,
    ],
    # 3: dead letters, events the ingest filter kept from consumers (ingest.accept).
    [
        """
        CREATE TABLE cfylogs_dead_letters (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            received_at double precision NOT NULL,
            reason      text NOT NULL,
            event       bytea NOT NULL
        )
        """,
    ],
]


async def migrate(conn: AConn) -> None:
    """Bring the schema to the newest version; one instance at a time does it."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
            (LOCK_SPACE + MIGRATE_LOCK,),
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS cfylogs_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = await one(conn, "SELECT coalesce(max(version), 0) FROM cfylogs_migrations")
        if applied > len(MIGRATIONS):
            raise StorageCorrupt(
                f"the database was migrated by a newer cfylogs (schema {applied}, this one "
                f"knows {len(MIGRATIONS)}); run that version, or a later one, on it"
            )
        for version, statements in enumerate(MIGRATIONS[applied:], start=applied + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO cfylogs_migrations (version) VALUES (%s)", (version,))
            log.info("PostgreSQL schema migrated to version %d", version)
