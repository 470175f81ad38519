"""The store's schema against what a cfylogs version knows: may that version run on it?

Shipped in the offline bundle and run by install.sh with the Python of an
installed version (its cfylogs and psycopg importable), never imported by
the package itself.

  store_schema.py known
      The schema versions the importable cfylogs knows, as KEY=VALUE lines
      (SQLITE_SCHEMA, POSTGRES_SCHEMA): the bundle's build writes them into
      bundle.env.
  store_schema.py check MANIFEST [--config FILE] [--home DIR]
      Reads the schema of the store those settings name (the config file
      and the CFYLOGS_* environment, as `cfylogs serve` would; --home as
      CFYLOGS_HOME_DIRECTORY) and compares it with what the version of
      MANIFEST (a bundle.env) knows. Exit 0: it may run there (or there is
      no store yet); 3: it may not, with the reason; 1: the store could not
      be read.

A version that meets a newer schema refuses to start (exit 2), so going
back past a migration means restoring the backup taken before it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

EXIT_OK, EXIT_UNREADABLE, EXIT_REFUSED = 0, 1, 3


@dataclass(frozen=True)
class StoreSchema:
    where: str  # a file, or the PostgreSQL database (the DSN without its password)
    backend: str  # the manifest key of that backend's schema version
    version: int | None  # None: no store there yet


def known_schemas() -> dict[str, int]:
    from cfylogs.storage import schema_versions

    known = schema_versions()
    return {"SQLITE_SCHEMA": known["sqlite"], "POSTGRES_SCHEMA": known["postgres"]}


def read_manifest(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def store_schema(config: Path | None, home: Path | None) -> StoreSchema:
    from cfylogs.config import ENV_PREFIX, load_settings

    environ = dict(os.environ)
    if home is not None:
        environ[f"{ENV_PREFIX}HOME_DIRECTORY"] = str(home)
    settings = load_settings(config, environ)
    if settings.storage_backend == "postgres":
        return _postgres_schema(settings.storage_postgres_dsn or "")
    from cfylogs.storage import store_path

    path = store_path(settings)
    if path is None:
        raise LookupError(f"storage.backend {settings.storage_backend!r} has no store file")
    return _sqlite_schema(path)


def _sqlite_schema(path: Path) -> StoreSchema:
    if not path.exists() or path.stat().st_size == 0:
        return StoreSchema(str(path), "SQLITE_SCHEMA", None)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    return StoreSchema(str(path), "SQLITE_SCHEMA", int(row[0]) if row else None)


def _postgres_schema(dsn: str) -> StoreSchema:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    where = f"PostgreSQL database {params.get('dbname', '?')} on {params.get('host', 'localhost')}"
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        found = conn.execute("SELECT to_regclass('cfylogs_migrations') IS NOT NULL").fetchone()
        if not (found and found[0]):
            return StoreSchema(where, "POSTGRES_SCHEMA", None)
        row = conn.execute("SELECT coalesce(max(version), 0) FROM cfylogs_migrations").fetchone()
    return StoreSchema(where, "POSTGRES_SCHEMA", int(row[0]) if row else None)


def check(manifest: dict[str, str], store: StoreSchema) -> tuple[int, str]:
    version = manifest.get("CFYLOGS_VERSION", "?")
    if store.version is None:
        return EXIT_OK, f"no store at {store.where} yet: nothing to check"
    known = int(manifest[store.backend])
    if store.version > known:
        return EXIT_REFUSED, (
            f"the store {store.where} is at schema {store.version}, newer than cfylogs "
            f"{version} knows (schema {known}): it would refuse to start on it. Going back "
            "to it means restoring the backup of the store taken before the upgrade "
            "(docs/OPERATIONS.md, Upgrade)"
        )
    return EXIT_OK, f"store {store.where}: schema {store.version}; cfylogs {version} knows {known}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="store_schema.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("known")
    checking = commands.add_parser("check")
    checking.add_argument("manifest", type=Path)
    checking.add_argument("--config", type=Path)
    checking.add_argument("--home", type=Path)
    args = parser.parse_args(argv)
    if args.command == "known":
        print("\n".join(f"{key}={value}" for key, value in known_schemas().items()))
        return EXIT_OK
    try:
        store = store_schema(args.config, args.home)
    except Exception as exc:  # the reason is all an operator can act on
        print(f"cannot read the store's schema: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    status, message = check(read_manifest(args.manifest), store)
    print(message, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
