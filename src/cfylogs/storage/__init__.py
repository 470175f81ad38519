"""Storage backends behind one contract (`Storage`), chosen by `storage.backend`."""

from __future__ import annotations

from cfylogs.config import Settings
from cfylogs.errors import ConfigError
from cfylogs.storage.base import Storage


def create_storage(settings: Settings) -> Storage:
    """The backend the settings ask for (not opened yet)."""
    if settings.storage_backend == "sqlite":
        from cfylogs.storage.sqlite import SqliteStorage

        return SqliteStorage(settings.home_directory, sync=settings.storage_sync)
    raise ConfigError(
        f"{settings.source}: storage.backend {settings.storage_backend!r} is not available"
    )


__all__ = ["Storage", "create_storage"]
