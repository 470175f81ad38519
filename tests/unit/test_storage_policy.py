"""The policy every backend shares: caps, drops and their reports, group sizes, sharing."""

from __future__ import annotations

import gc
import logging

import pytest

from cfylogs.config import Settings
from cfylogs.models import JoinedEntries
from cfylogs.storage import storage_limits
from cfylogs.storage.policy import (
    DROP_WARN_EVERY,
    MAX_GROUP_BYTES,
    Drop,
    DropReports,
    drop_over_cap,
    group_takes,
)
from cfylogs.storage.shared_entries import SharedEntries
from tests.contract.conftest import limits


def test_the_limits_are_the_settings_table_defaults() -> None:
    defaults = Settings()
    built = storage_limits(defaults)
    assert built.min_free_bytes == defaults.storage_min_free_bytes == 256 * 1024**2
    assert built.max_backlog_bytes == defaults.storage_max_backlog_bytes
    assert built.expired_retention_sec == defaults.lease_expired_retention_sec == 7 * 24 * 3600
    assert built.drops and not built.rejects  # 1 GiB per registration, drop_oldest


def test_a_backlog_is_over_a_cap_past_either_of_them() -> None:
    capped = limits(max_backlog_events=10, max_backlog_bytes=100)
    assert not capped.over(10, 100)
    assert capped.over(11, 0) and capped.over(0, 101)
    assert not limits(max_backlog_events=0, max_backlog_bytes=0).over(10**9, 10**12)
    assert not limits(max_backlog_events=0, max_backlog_bytes=0).drops


def test_drop_oldest_keeps_the_newest_events_within_the_caps() -> None:
    by_events = limits(max_backlog_events=5, max_backlog_bytes=0)
    assert drop_over_cap(by_events, 20, 10, 12, False, None) == Drop(15, 15, 5)
    assert drop_over_cap(by_events, 14, 10, 12, False, None) is None  # within the cap
    by_bytes = limits(max_backlog_events=0, max_backlog_bytes=100)
    assert drop_over_cap(by_bytes, 20, 10, 10, False, 17) == Drop(17, 17, 7)
    assert by_bytes.byte_cap_position(1000, 850) == 900
    assert by_bytes.byte_cap_position(1000, 900) is None


def test_when_part_of_the_pending_batch_must_go_all_of_it_goes() -> None:
    capped = limits(max_backlog_events=5, max_backlog_bytes=0)
    # Backlog [10, 20), pending batch [10, 18): events 10 to 14 must go, so 15 to 17 too.
    assert drop_over_cap(capped, 20, 10, 18, True, None) == Drop(18, 18, 8)


def test_drops_are_reported_once_a_minute_per_registration_with_their_sum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    reports = DropReports(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="cfylogs.storage"):
        reports.dropped("a", 3)
        reports.dropped("a", 4)  # within the minute: counted, not logged
        reports.dropped("b", 1)  # another registration: its own minute
        now[0] += DROP_WARN_EVERY
        reports.dropped("a", 5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "registration a" in lines[0] and "its 3 oldest" in lines[0]
    assert "registration b" in lines[1]
    assert "registration a" in lines[2] and "its 9 oldest" in lines[2]  # 4 + 5


def test_a_group_takes_up_to_its_byte_limit_and_always_a_first_request() -> None:
    assert group_takes(0, MAX_GROUP_BYTES * 2)
    assert group_takes(MAX_GROUP_BYTES - 10, 10)
    assert not group_takes(MAX_GROUP_BYTES - 10, 11)


def test_expired_registrations_are_forgotten_after_the_retention_or_never() -> None:
    assert limits(expired_retention_sec=100).forget_before(1000.0) == 900.0
    assert limits(expired_retention_sec=0).forget_before(1000.0) is None


def test_entries_are_shared_while_a_delivery_holds_them_and_not_kept_after() -> None:
    shared = SharedEntries()
    key = ("r", 0, 0, 2)
    first = shared.share(key, JoinedEntries.of([b"{}", b"{}"]))
    assert shared.share(key, JoinedEntries.of([b"{}", b"{}"])) is first
    assert shared.get(key) is first and shared.get(("r", 1, 2, 3)) is None
    del first
    gc.collect()
    assert shared.get(key) is None  # nobody holds them: no memory kept
    listed = [b"{}"]
    assert shared.share(key, listed) is listed  # adopted batches (lists) are not shared
