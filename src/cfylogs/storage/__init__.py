"""Storage backends behind one contract (`Storage`), chosen by `storage.backend`."""

from __future__ import annotations

from pathlib import Path

from cfylogs.config import Settings
from cfylogs.errors import ConfigError
from cfylogs.storage.base import Storage
from cfylogs.storage.policy import StorageLimits, storage_limits


def create_storage(settings: Settings) -> Storage:
    """The backend the settings ask for (not opened yet)."""
    if settings.storage_backend == "sqlite":
        from cfylogs.storage.sqlite import SqliteStorage

        return SqliteStorage(
            settings.home_directory,
            storage_limits(settings),
            sync=settings.storage_sync,
            reserve_bytes=settings.storage_disk_reserve_bytes,
        )
    if settings.storage_backend == "postgres" and settings.storage_postgres_dsn:
        from cfylogs.storage.postgres import PostgresStorage

        return PostgresStorage(
            settings.storage_postgres_dsn,
            storage_limits(settings),
            sync=settings.storage_sync,
            pool_size=settings.storage_postgres_pool_size,
            timeout=settings.storage_postgres_timeout_sec,
        )
    raise ConfigError(
        f"{settings.source}: storage.backend {settings.storage_backend!r} is not available"
    )


def store_path(settings: Settings) -> Path | None:
    """The embedded store's database file, or None when the store is PostgreSQL."""
    if settings.storage_backend != "sqlite":
        return None
    from cfylogs.storage.sqlite.files import DB_FILE

    return settings.home_directory / DB_FILE


def schema_versions() -> dict[str, int]:
    """The newest store schema this code knows, per backend (older ones are upgraded at
    open; a newer one is refused): what an install's rollback checks a store against."""
    from cfylogs.storage.postgres.schema import MIGRATIONS
    from cfylogs.storage.sqlite.schema import SCHEMA_VERSION

    return {"sqlite": SCHEMA_VERSION, "postgres": len(MIGRATIONS)}


def embedded_store_exists(home: Path) -> bool:
    """Whether `home` (a home_directory) holds an embedded store already."""
    from cfylogs.storage.sqlite.files import DB_FILE

    return (home / DB_FILE).exists()


__all__ = [
    "Storage",
    "StorageLimits",
    "create_storage",
    "embedded_store_exists",
    "schema_versions",
    "storage_limits",
    "store_path",
]
