"""Damaged or foreign state at start-up: a clear message and exit 2, never a silent wipe."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess

NOBODY = 65534
DB = "cfylogs.sqlite3"


def _fingerprint(home: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in home.iterdir()}


def _unchanged(home: Path, before: dict[str, str]) -> bool:
    """Every file that was there is still there, byte for byte (SQLite may add a lock or
    an empty WAL beside a database it only read)."""
    after = _fingerprint(home)
    return {name: after.get(name) for name in before} == before


def _fails_with(server: ServerProcess, *phrases: str) -> str:
    server.start(expect_ready=False)
    assert server.wait_exit() == 2
    log = server.run_log()
    for phrase in phrases:
        assert phrase in log, log
    return log


@pytest.fixture
def used_home(server_factory: ServerFactory) -> ServerProcess:
    """A server whose home holds a real store with events, stopped cleanly."""
    server = server_factory().start()
    with server.client() as client:
        api = Api(client)
        api.register()
        for i in range(40):
            assert api.push({"i": i, "pad": "x" * 3000}).status_code == 200
    assert server.stop() == 0
    return server


def _truncate(db: Path) -> None:
    with db.open("r+b") as file:
        file.truncate(db.stat().st_size // 2)


def _scribble(db: Path) -> None:
    with db.open("r+b") as file:
        file.write(os.urandom(4096))  # the header and the first page


def _newer_schema(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.close()


DAMAGE: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "truncated": (_truncate, ("truncated", "Nothing was changed", "move the file aside")),
    "scribbled over": (_scribble, ("cannot be used", "Nothing was changed")),
    "newer schema": (_newer_schema, ("newer cfylogs (schema 99",)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_database_stops_start_up_and_is_left_as_it_was(
    used_home: ServerProcess, damage: str
) -> None:
    harm, phrases = DAMAGE[damage]
    harm(used_home.home / DB)
    before = _fingerprint(used_home.home)
    _fails_with(used_home, str(used_home.home / DB), *phrases)
    assert _unchanged(used_home.home, before)  # not wiped, not "repaired"


def test_a_foreign_sqlite_database_is_not_taken_over(server_factory: ServerFactory) -> None:
    server = server_factory()
    server.home.mkdir()
    with sqlite3.connect(server.home / DB) as conn:
        conn.execute("CREATE TABLE theirs (x)")
    conn.close()
    before = _fingerprint(server.home)
    _fails_with(server, "not made by cfylogs")
    assert _unchanged(server.home, before)


def test_a_home_that_is_a_file_stops_start_up(server_factory: ServerFactory) -> None:
    server = server_factory()
    server.home.write_text("someone's notes")
    _fails_with(server, "is a file, not a directory")
    assert server.home.read_text() == "someone's notes"


def test_a_home_this_user_may_not_write_stops_start_up(server_factory: ServerFactory) -> None:
    """Root bypasses file permissions through its capabilities: the server runs without
    them (setpriv), on a home owned by another user, which root is then refused like anyone."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and util-linux setpriv to drop the permission-bypass capabilities")
    server = server_factory(prefix=[setpriv, "--bounding-set=-dac_override,-dac_read_search"])
    server.home.mkdir(mode=0o700)
    os.chown(server.home, NOBODY, NOBODY)
    _fails_with(server, str(server.home), "cannot use it", "may write to it")
    assert list(server.home.iterdir()) == []
