"""Upgrade in place keeps the data; rollback returns to the version before, unless the
store's schema is newer than that version knows."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.bundle.conftest import Bundle, run_install
from tests.conftest import ServerFactory
from tests.pgserver import PgServer
from tests.support import Api, ServerProcess, cloudify_log

pytestmark = pytest.mark.slow


@contextmanager
def _running(server: ServerProcess, version: str) -> Iterator[Api]:
    """The installed relay started, checked to be `version`, and stopped cleanly after."""
    server.start()
    with server.client() as client:
        assert client.get("/health").json()["version"] == version
        yield Api(client)
    assert server.stop() == 0


def _set_schema(store: Path, version: int) -> None:
    conn = sqlite3.connect(store)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.close()


def test_upgrade_keeps_the_data_and_rollback_goes_back(
    bundle: Bundle, old_bundle: Bundle, tmp_path: Path, server_factory: ServerFactory
) -> None:
    prefix = tmp_path / "cfylogs"
    old, new = old_bundle.version, bundle.version
    done = run_install(old_bundle.install_sh, "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr

    server = server_factory(command=[str(prefix / "bin" / "cfylogs")])
    store = server.home / "cfylogs.sqlite3"
    config = ["--config", str(server.config_path)]  # the store the checks read
    with _running(server, old) as api:
        registration = api.register("upgraded")
        assert api.push(*(cloudify_log(n) for n in (1, 2, 3))).status_code == 200

    # Upgrade: the new version becomes current, the old one is kept as previous.
    done = run_install(bundle.install_sh, "--no-service", "--prefix", str(prefix), *config)
    assert done.returncode == 0, done.stdout + done.stderr
    known = bundle.manifest["SQLITE_SCHEMA"]
    assert f"store {store}: schema {known}; cfylogs {new} knows {known}" in done.stdout
    assert os.readlink(prefix / "current") == f"versions/{new}"
    assert os.readlink(prefix / "previous") == f"versions/{old}"
    with _running(server, new) as api:
        assert [e["seq"] for e in api.drain(registration)] == [1, 2, 3]  # stored by the old
        assert api.push(cloudify_log(4), cloudify_log(5)).status_code == 200

    # A store newer than the old version knows (as a migration of the new one would leave
    # it): rollback is refused with the reason, and so is installing the old bundle again.
    _set_schema(store, int(old_bundle.manifest["SQLITE_SCHEMA"]) + 1)
    rollback = prefix / "current" / "bundle" / "install.sh"  # the kept copy: no bundle needed
    refused = run_install(rollback, "--rollback", *config)
    assert refused.returncode == 1
    newer = int(known) + 1
    assert f"the store {store} is at schema {newer}, newer than cfylogs {old} knows" in (
        refused.stdout
    )
    assert f"not rolling back to cfylogs {old}" in refused.stderr
    downgrade = run_install(old_bundle.install_sh, "--no-service", "--prefix", str(prefix), *config)
    assert downgrade.returncode == 1
    assert f"not switching to cfylogs {old}" in downgrade.stderr
    assert os.readlink(prefix / "current") == f"versions/{new}"  # nothing changed
    assert (prefix / "versions" / old).is_dir()

    # The schema it knows: rollback goes back, and the old version delivers the rest.
    _set_schema(store, int(known))
    done = run_install(rollback, "--rollback", *config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"cfylogs {old} is current in {prefix} again (previous: {new})" in done.stdout
    assert os.readlink(prefix / "current") == f"versions/{old}"
    assert os.readlink(prefix / "previous") == f"versions/{new}"
    with _running(server, old) as api:
        assert [e["seq"] for e in api.drain(registration)] == [4, 5]


def test_rollback_with_nothing_before_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    prefix = tmp_path / "cfylogs"
    assert run_install(bundle.install_sh, "--rollback", "--prefix", str(prefix)).returncode == 1
    done = run_install(bundle.install_sh, "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    refused = run_install(bundle.install_sh, "--rollback", "--prefix", str(prefix))
    assert refused.returncode == 1
    assert f"no previous version in {prefix} to go back to" in refused.stderr

    # --uninstall as a plain program install: the prefix goes, nothing else was there.
    done = run_install(bundle.install_sh, "--uninstall", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removed cfylogs from {prefix}" in done.stdout
    assert not prefix.exists()


def test_the_schema_check_reads_a_postgres_store(
    bundle: Bundle, tmp_path: Path, server_factory: ServerFactory, pg_server: PgServer
) -> None:
    prefix = tmp_path / "cfylogs"
    done = run_install(bundle.install_sh, "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    dsn = pg_server.create_schema()
    server = server_factory({"storage": {"backend": "postgres", "postgres": {"dsn": dsn}}},
                            command=[str(prefix / "bin" / "cfylogs")])  # fmt: skip
    server.write_config()
    current = prefix / "current"

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [current / "bin" / "python", current / "bundle" / "store_schema.py", "check",
             current / "bundle" / "bundle.env", "--config", server.config_path],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert "no store at PostgreSQL database postgres on 127.0.0.1 yet" in check().stdout
    with _running(server, bundle.version):  # its migrations run at start
        pass
    known = int(bundle.manifest["POSTGRES_SCHEMA"])
    done = check()
    assert done.returncode == 0, done.stderr
    assert f"schema {known}; cfylogs {bundle.version} knows {known}" in done.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:  # as a newer version would leave it
        conn.execute("INSERT INTO cfylogs_migrations (version) VALUES (%s)", (known + 1,))
    refused = check()
    assert refused.returncode == 3
    assert f"is at schema {known + 1}, newer than cfylogs {bundle.version} knows" in (
        refused.stderr
    )
