"""Storage backends behind one contract (`Storage`), chosen by `storage.backend`."""

from __future__ import annotations

from cfylogs.config import Settings
from cfylogs.errors import ConfigError
from cfylogs.storage.base import Storage, StorageLimits


def storage_limits(settings: Settings) -> StorageLimits:
    return StorageLimits(
        max_backlog_events=settings.storage_max_backlog_events,
        max_backlog_bytes=settings.storage_max_backlog_bytes,
        backlog_policy=settings.storage_backlog_policy,
        min_free_bytes=settings.storage_min_free_bytes,
    )


def create_storage(settings: Settings) -> Storage:
    """The backend the settings ask for (not opened yet)."""
    if settings.storage_backend == "sqlite":
        from cfylogs.storage.sqlite import SqliteStorage

        return SqliteStorage(
            settings.home_directory,
            sync=settings.storage_sync,
            limits=storage_limits(settings),
            reserve_bytes=settings.storage_disk_reserve_bytes,
        )
    if settings.storage_backend == "postgres" and settings.storage_postgres_dsn:
        from cfylogs.storage.postgres import PostgresStorage

        return PostgresStorage(
            settings.storage_postgres_dsn,
            sync=settings.storage_sync,
            limits=storage_limits(settings),
            pool_size=settings.storage_postgres_pool_size,
        )
    raise ConfigError(
        f"{settings.source}: storage.backend {settings.storage_backend!r} is not available"
    )


__all__ = ["Storage", "StorageLimits", "create_storage", "storage_limits"]
