"""Disk full on a real, small file system (a tmpfs mounted for the test).

The relay fills it: ingest answers 503 with Retry-After, what is stored stays
intact and drains, and ingest resumes by itself once space is freed. With
`storage.min_free_bytes` it refuses while the disk still has that much room.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, wait_until

SIZE_MIB = 24
PAD = "x" * 2000


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of SIZE_MIB MiB; skipped (with the reason) only where mounting is impossible."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small file system")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _batch(start: int, count: int = 50) -> bytes:
    return json.dumps([{"i": i, "pad": PAD} for i in range(start, start + count)]).encode()


def _fill(api: Api, start: int = 0) -> tuple[int, list[int], dict[str, str]]:
    """Push batches until refused; return the next index, the 2xx'd ones, the refusal."""
    acked: list[int] = []
    index = start
    for _ in range(10_000):
        r = api.http.post("/api/v1/logs", content=_batch(index))
        if r.status_code != 200:
            assert r.status_code == 503, r.text
            return index, acked, {**dict(r.headers), "body": r.text}
        acked.extend(range(index, index + 50))
        index += 50
    raise AssertionError("the small file system never filled")


def _retry_until_accepted(api: Api, index: int) -> None:
    """What Logstash does with a 503: send the same request again, until a 200."""
    wait_until(lambda: api.http.post("/api/v1/logs", content=_batch(index)).status_code == 200, 15)


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _start(server_factory: ServerFactory, home: Path, min_free_bytes: int = 0) -> ServerProcess:
    """A relay on `home`; with the watermark off (0), only a really full disk refuses."""
    config: dict[str, Any] = {
        "home_directory": str(home),
        "buffer": {"size": 100},
        "storage": {"min_free_bytes": min_free_bytes},
    }
    return server_factory(config).start()


def test_a_full_disk_refuses_with_503_keeps_what_it_stored_and_resumes(
    small_fs: Path, server_factory: ServerFactory
) -> None:
    server = _start(server_factory, small_fs / "home")
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        ballast = small_fs / "ballast"  # someone else's file, taking part of the disk
        ballast.write_bytes(b"\0" * (4 * 1024**2))
        index, acked, refusal = _fill(api)
        assert refusal["retry-after"].isdigit()
        assert len(acked) > 100, refusal["body"]
        assert client.get("/health").status_code in (200, 503)  # answers, never hangs

        ballast.unlink()  # space comes back: ingest resumes by itself
        _retry_until_accepted(api, index)
        acked.extend(range(index, index + 50))

        got = [e["i"] for e in api.drain(registration_id)]
        assert got == acked  # nothing stored was damaged, all of it drains, in order

    server.stop()
    server.start()  # and the store opens again cleanly after having been full
    with server.client() as client:
        assert client.get("/health").json()["status"] == "ok"


def test_consumers_keep_draining_a_full_disk_and_ingest_then_resumes(
    small_fs: Path, server_factory: ServerFactory
) -> None:
    server = _start(server_factory, small_fs / "home")
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        index, acked, _ = _fill(api)
        got = [e["i"] for e in api.drain(registration_id)]  # fetch and ack work while full
        assert got == acked
        # Drained pages go back to the disk: pushing works again without anyone's help.
        _retry_until_accepted(api, index)


def test_the_watermark_refuses_before_the_disk_is_full(
    small_fs: Path, server_factory: ServerFactory
) -> None:
    # Above what one WAL checkpoint can add to the file (~4 MiB): see docs/RELIABILITY.md.
    watermark = 10 * 1024**2
    server = _start(server_factory, small_fs / "home", min_free_bytes=watermark)
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        _, acked, refusal = _fill(api)
        assert "min_free_bytes" in refusal["body"] and refusal["retry-after"].isdigit()
        assert _free(small_fs) > watermark // 2  # refused with room to spare, not at ENOSPC
        assert [e["i"] for e in api.drain(registration_id)] == acked
