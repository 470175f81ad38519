"""`cfylogs import-legacy`: a Java server's home, imported, then served without a loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.pgserver import PgServer
from tests.support import Api, ServerProcess, cloudify_log

A = "0f8e5c5e-7d7e-4b4a-9c55-6a1d2b3c4d5e"  # three batches and a damaged file
B = "1a2b3c4d-0000-4000-8000-000000000001"  # one batch
C = "2b3c4d5e-0000-4000-8000-000000000002"  # everything acknowledged: no directory
ORPHAN = "3c4d5e6f-0000-4000-8000-000000000003"  # not in registrations.json


def event(n: int) -> dict[str, Any]:
    return {**json.loads(cloudify_log(n)), "legacy": True}


def build_legacy_home(root: Path) -> dict[str, list[tuple[int, list[dict[str, Any]]]]]:
    """A Java server's home as it leaves it: registrations.json and flushed batches."""
    batches = {
        A: [(7, [event(1), event(2)]), (8, [event(3)]), (10, [event(4), event(5), event(6)])],
        B: [(0, [event(7)])],
        C: [],
    }
    (root / "registrations.json").write_text(json.dumps([A, B, C]))
    for rid, items in batches.items():
        for batch_id, entries in items:
            (root / rid).mkdir(exist_ok=True)
            # Jackson pretty-prints; entries are kept as written
            text = json.dumps({"id": batch_id, "entries": entries}, indent=2)
            (root / rid / f"{batch_id}.json").write_text(text)
    (root / A / "11.json").write_text('{"id": 11, "entries": [{"message": "trunc')
    (root / ORPHAN).mkdir()
    (root / ORPHAN / "0.json").write_text(json.dumps({"id": 0, "entries": [event(9)]}))
    return batches


def home_of_b(root: Path, files: dict[str, Any]) -> Path:
    """A Java home whose one registration, B, holds `files` (name: JSON content)."""
    (root / "registrations.json").write_text(json.dumps([B]))
    (root / B).mkdir()
    for name, content in files.items():
        (root / B / name).write_text(json.dumps(content))
    return root / B


def run_import(server: ServerProcess, legacy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    server.write_config()
    config = ["--config", str(server.config_path)]
    return subprocess.run(
        [sys.executable, "-m", "cfylogs", "import-legacy", str(legacy), *config, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_import_then_serve_delivers_the_legacy_batches_then_new_ones(
    server_factory: ServerFactory, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    legacy = tmp_path / "a4ccfylogs"
    legacy.mkdir()
    batches = build_legacy_home(legacy)
    config: dict[str, Any] = {}
    if backend == "postgres":
        pg: PgServer = request.getfixturevalue("pg_server")
        dsn = pg.dsn(pg.create_database("legacy"))
        config = {"storage": {"backend": "postgres", "postgres": {"dsn": dsn}}}
    server = server_factory(config=config)

    plan = run_import(server, legacy, "--dry-run")
    assert plan.returncode == 1, plan.stderr  # the damaged file and the orphan are problems
    assert f"would adopt {A}: 3 batches (ids 7, 8, 10), 6 events" in plan.stdout
    assert not server.home.exists(), "a dry run creates no embedded store"

    done = run_import(server, legacy)
    assert done.returncode == 1
    assert f"adopted {A}" in done.stdout and f"adopted {C}: no pending batch" in done.stdout
    assert "NOT IMPORTED" in done.stderr and "11.json: damaged" in done.stderr
    assert f"NOT IMPORTED {legacy / ORPHAN}" in done.stderr
    assert "adopted 3 registrations (4 batches, 7 events)" in done.stdout

    again = run_import(server, legacy)
    assert "adopted 0 registrations" in again.stdout and "3 already present" in again.stdout
    replan = run_import(server, legacy, "--dry-run")
    assert f"skipped {A}: already in the store" in replan.stdout

    server.start()
    with server.client() as client:
        api = Api(client)
        for rid in (A, B):
            for batch_id, entries in batches[rid]:
                batch = api.fetch(rid)
                assert (batch["id"], batch["entries"]) == (batch_id, entries)
                assert api.ack(rid, batch_id).status_code == 200
            assert api.fetch(rid) == {}
        assert client.get(f"/api/v1/logs/{ORPHAN}").status_code == 404
        assert api.push({"n": "new"}).status_code == 200
        assert api.fetch(A) == {"id": 11, "entries": [{"n": "new"}]}
        assert api.fetch(B)["id"] == 1
        assert api.fetch(C)["id"] == 0

        if backend == "sqlite":  # the embedded store is locked by the running server
            refused = run_import(server, legacy)
            assert refused.returncode == 1
            assert "stop the cfylogs server" in refused.stderr


def test_an_unreadable_registrations_file_imports_nothing(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    (tmp_path / "registrations.json").write_text("[not json")
    server = server_factory()
    result = run_import(server, tmp_path)
    assert result.returncode == 1 and "nothing imported" in result.stderr
    assert not server.home.exists()


def test_serving_on_an_unimported_java_home_says_so(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    legacy = tmp_path / "a4ccfylogs"
    legacy.mkdir()
    build_legacy_home(legacy)
    server = server_factory(config={"home_directory": str(legacy)}).start()
    server.stop()
    assert f"cfylogs import-legacy {legacy}" in server.run_log()


def test_a_batch_id_out_of_range_is_reported_not_fatal(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    huge = "9" * 200  # far past a 64-bit id
    batches = {"1.json": {"id": 1, "entries": [{"n": 1}]}, f"{huge}.json": {"id": 0, "entries": []}}
    home_of_b(tmp_path, batches)
    server = server_factory()
    result = run_import(server, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "the batch id is out of range" in result.stderr
    assert f"adopted {B}: 1 batches (ids 1)" in result.stdout


def test_a_stray_file_in_a_registration_directory_is_not_imported_and_listed(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The Java server keeps only `<batchId>.json` there: anything else is for the operator."""
    batches = {"3.json": {"id": 3, "entries": [{"n": 1}]}, "3.json.bak": {"id": 2, "entries": []}}
    stray = home_of_b(tmp_path, batches) / "3.json.bak"
    server = server_factory()

    for args in (["--dry-run"], []):
        result = run_import(server, tmp_path, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"NOT IMPORTED {stray}: not a batch file (named <batchId>.json)" in result.stderr
        assert "NOT IMPORTED" not in result.stdout and "1 problems" in result.stdout
    assert f"adopted {B}: 1 batches (ids 3), 1 events" in result.stdout

    server.start()
    with server.client() as client:
        assert Api(client).fetch(B) == {"id": 3, "entries": [{"n": 1}]}


def test_a_batch_file_without_entries_is_only_noted(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """Nothing is lost with it: a note on stdout, and exit 0."""
    empty = home_of_b(tmp_path, {"4.json": {"id": 4, "entries": []}}) / "4.json"
    result = run_import(server_factory(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"note {empty}: no entries" in result.stdout
    assert result.stderr == ""
