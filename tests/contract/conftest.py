"""The backends the storage contract runs against. A backend is correct when it passes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cfylogs.config import Settings
from cfylogs.storage import Storage, StorageLimits, storage_limits
from cfylogs.storage.memory import MemoryState, MemoryStorage
from cfylogs.storage.postgres import PostgresStorage
from cfylogs.storage.sqlite import SqliteStorage
from tests.pgserver import shared_server


def limits(**changes: Any) -> StorageLimits:
    """The limits of the default settings, with `changes`."""
    return dataclasses.replace(storage_limits(Settings()), **changes)


@dataclass
class Backend:
    """Opens stores that share one state (the same directory or database)."""

    name: str
    make: Callable[[StorageLimits], Storage]
    #: Whether `StorageLimits.min_free_bytes` applies (the store is on a local disk).
    local_disk: bool = True
    #: Whether several stores may be open on one state at once (several relay processes).
    shared: bool = False
    opened: list[Storage] = field(default_factory=list)

    async def open(self, limits: StorageLimits | None = None) -> Storage:
        store = self.make(limits or storage_limits(Settings()))
        await store.open()
        self.opened.append(store)
        return store

    async def reopen(self, store: Storage) -> Storage:
        await store.close()
        return await self.open()

    async def reopen_with(self, store: Storage, limits: StorageLimits) -> Storage:
        await store.close()
        return await self.open(limits)

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


def _sqlite(tmp_path: Path) -> Backend:
    return Backend("sqlite", lambda limits: SqliteStorage(tmp_path / "home", limits, sync="full"))


def _postgres(tmp_path: Path) -> Backend:
    """A fresh schema of the session's server per test: stores opened together share it."""
    dsn = shared_server().create_schema()
    return Backend(
        "postgres",
        lambda limits: PostgresStorage(dsn, limits, sync="full"),
        local_disk=False,
        shared=True,
    )


def _memory(tmp_path: Path) -> Backend:
    """The reference backend; stores opened on one state see one another's changes."""
    state = MemoryState()
    return Backend("memory", lambda limits: MemoryStorage(limits, state), local_disk=False)


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
    "memory": _memory,
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    await made.close_all()


@pytest.fixture
async def store(backend: Backend) -> Storage:
    return await backend.open()
