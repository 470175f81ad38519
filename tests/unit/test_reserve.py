"""The disk reserve of the embedded store (the disk-full behaviour is in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

from cfylogs.storage.reserve import DiskReserve


def test_the_reserve_books_real_space_and_gives_it_back(tmp_path: Path) -> None:
    reserve = DiskReserve(tmp_path / "reserve", 1024 * 1024)
    assert reserve.acquire() and reserve.acquire()  # the second is a no-op
    assert (tmp_path / "reserve").stat().st_blocks * 512 >= 1024 * 1024  # not sparse
    assert reserve.release()
    assert not (tmp_path / "reserve").exists()
    assert not reserve.release()  # nothing left to give


def test_a_file_system_error_other_than_space_means_no_reserve_not_no_ingest(
    tmp_path: Path,
) -> None:
    reserve = DiskReserve(tmp_path / "missing-dir" / "reserve", 1024)
    assert reserve.acquire()  # cannot create the file: going on without a reserve
    assert reserve.size == 0 and not reserve.release()


def test_a_zero_size_is_no_reserve(tmp_path: Path) -> None:
    reserve = DiskReserve(tmp_path / "reserve", 0)
    assert reserve.acquire()
    assert not (tmp_path / "reserve").exists()
