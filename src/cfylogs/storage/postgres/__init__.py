"""The shared backend: one PostgreSQL database for several relay processes (docs/HA.md).

Where each concept lives: `store` (the storage operations and how instances
share rows), `connection` (the pool and its renewal, the LISTEN listener,
transactions), `schema` (the migrations and their runner), `appender` (group
commit), `events` (how events are laid out: rows, the head, reads,
collection), `copy` (the binary COPY encoder), `caps` (the SQL of the
backlog caps), `legacy` (adopted batches), `dead_letters`.
"""

from __future__ import annotations

from cfylogs.storage.postgres.store import PostgresStorage

__all__ = ["PostgresStorage"]
