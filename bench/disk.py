"""Ceiling (b): what the disk allows for durable appends, without any server in the way.

Framed append: each event is written with a 4-byte length prefix, 500 events
per write, one `fdatasync` per write (what a minimal log with group commit
would do). Single append: one framed event per write, one `fsync` each (what
single-event durable ingest would cost without group commit).
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

from bench.pacing import percentile
from bench.workload import BATCH, event

Measure = dict[str, float]


def _framed(first_seq: int, count: int) -> bytes:
    return b"".join(
        struct.pack("<I", len(e)) + e for e in (event(first_seq + i) for i in range(count))
    )


def framed_batches(directory: Path, duration: float, preallocate: bool = False) -> Measure:
    """Events/s appending 500-event framed batches with fdatasync after each."""
    path = directory / "framed.log"
    chunk = _framed(0, BATCH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if preallocate:
            # A preallocated file needs no metadata journal commit for each size change.
            os.posix_fallocate(fd, 0, int(len(chunk) * 400_000 * duration / BATCH) + len(chunk))
            os.fsync(fd)
        return _timed_appends(fd, chunk, duration, os.fdatasync, BATCH)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def single_appends(directory: Path, duration: float) -> Measure:
    """Appends/s writing one framed event and fsync'ing it, one at a time."""
    path = directory / "single.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        return _timed_appends(fd, _framed(0, 1), duration, os.fsync, 1)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _timed_appends(fd: int, chunk: bytes, duration: float, sync: object, per_write: int) -> Measure:
    assert callable(sync)
    latencies: list[float] = []
    writes = 0
    started = time.perf_counter()
    deadline = started + duration
    while True:
        before = time.perf_counter()
        os.write(fd, chunk)
        sync(fd)
        after = time.perf_counter()
        latencies.append((after - before) * 1000)
        writes += 1
        if after >= deadline:
            break
    seconds = time.perf_counter() - started
    return {
        "events_per_sec": round(writes * per_write / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "max_ms": round(max(latencies), 3),
    }
