"""The embedded backend (the default): one SQLite database in WAL mode under home_directory.

Where each concept lives: `store` (the storage operations), `writer` (the
writer thread, group commit, the checkpointer), `mirror` (the registrations
in memory, and who may change them), `txn` (a transaction's staged changes),
`appends` (the append step: refusals, chunks, dead letters, caps), `chunks`
and `chunkformat` (how events are stored and read), `schema` (tables,
upgrades, the head), `files` (the home's lock, damage checks, connections,
readers), `space` (free space, giving pages back), `legacy` (adopted
batches), `dead_letters`.
"""

from __future__ import annotations

from cfylogs.storage.sqlite.files import DB_FILE
from cfylogs.storage.sqlite.store import SqliteStorage
from cfylogs.storage.sqlite.writer import WriterHooks

__all__ = ["DB_FILE", "SqliteStorage", "WriterHooks"]
