"""cfylogs on its PostgreSQL backend (P8), when this checkout has that backend.

The server is the tests' throw-away cluster (`tests/pgserver.py`: the
distribution's binaries, a free loopback port, fsync on); every measurement
gets a fresh database, as every embedded-backend measurement gets a fresh
home directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.systems import Cfylogs


def backend_available() -> bool:
    return importlib.util.find_spec("cfylogs.storage.postgres") is not None


class CfylogsPostgres(Cfylogs):
    """Takes part in ingest, drain and end-to-end; restart and fan-out are the embedded's."""

    kinds = ("ingest", "drain", "e2e", "paced")

    def __init__(self, name: str, workdir: Path, server: Any, config: dict[str, Any]) -> None:
        super().__init__(name, workdir, config)
        self.pg = server

    @property
    def cpu_pids(self) -> list[int]:
        """cfylogs and the PostgreSQL server it writes to: both do the work."""
        postmaster = self.pg.data / "postmaster.pid"
        try:
            return [*super().cpu_pids, int(postmaster.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return super().cpu_pids

    async def start(self, fanout: int = 1) -> None:
        self.config["storage.backend"] = "postgres"
        self.config["storage.postgres.dsn"] = self.pg.create_database("bench")
        await super().start(fanout)


@contextlib.contextmanager
def postgres_server(notes: list[str]) -> Iterator[Any]:
    """A running cluster, or None (with a note) when the backend or the binaries are missing."""
    if not backend_available():
        notes.append("PostgreSQL backend (P8) not measured: not in this checkout yet")
        yield None
        return
    try:
        from tests.pgserver import running_server  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        notes.append(f"PostgreSQL backend (P8) not measured: {exc}")
        yield None
        return
    try:
        with running_server() as server:
            yield server
    except RuntimeError as exc:
        notes.append(f"PostgreSQL backend (P8) not measured: {str(exc)[:200]}")
        yield None
