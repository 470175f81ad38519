"""The backends the storage contract runs against. A backend is correct when it passes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cfylogs.storage.base import Storage
from cfylogs.storage.sqlite import SqliteStorage


@dataclass
class Backend:
    """Opens stores that share one state (the same directory or database)."""

    name: str
    make: Callable[[], Storage]
    opened: list[Storage] = field(default_factory=list)

    async def open(self) -> Storage:
        store = self.make()
        await store.open()
        self.opened.append(store)
        return store

    async def reopen(self, store: Storage) -> Storage:
        await store.close()
        return await self.open()

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


def _sqlite(tmp_path: Path) -> Backend:
    return Backend("sqlite", lambda: SqliteStorage(tmp_path / "home", sync="full"))


BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    await made.close_all()


@pytest.fixture
async def store(backend: Backend) -> Storage:
    return await backend.open()
