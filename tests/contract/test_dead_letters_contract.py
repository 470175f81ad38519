"""Dead letters (events the ingest filter kept from consumers), on every backend."""

from __future__ import annotations

import pytest

from cfylogs.errors import StorageUnavailable
from cfylogs.storage.base import Storage, StorageLimits
from tests.contract.conftest import Backend
from tests.contract.test_limits_contract import drain
from tests.contract.test_storage_contract import NOW, ev, reg


async def test_dead_letters_are_kept_with_reason_and_time_and_listed_by_page(
    store: Storage,
) -> None:
    assert await store.append_dead_letters([(ev(i), f"why {i}") for i in range(5)], NOW, 0) == 0
    assert await store.count_dead_letters() == 5
    first = await store.list_dead_letters(0, 2)
    assert [(d.event, d.reason, d.received_at) for d in first] == [
        (ev(0), "why 0", NOW),
        (ev(1), "why 1", NOW),
    ]
    rest = await store.list_dead_letters(first[-1].id, 100)
    assert [d.event for d in rest] == [ev(2), ev(3), ev(4)]
    assert [d.id for d in first + rest] == sorted({d.id for d in first + rest})  # ids grow
    assert await store.list_dead_letters(rest[-1].id, 100) == []


async def test_dead_letters_are_kept_even_when_nobody_is_registered(store: Storage) -> None:
    await store.append_dead_letters([(ev(1), "junk")], NOW, 0)
    assert await store.count_dead_letters() == 1


async def test_dead_letters_survive_a_restart(backend: Backend) -> None:
    store = await backend.open()
    await store.append_dead_letters([(ev(1), "junk")], NOW, 0)
    store = await backend.reopen(store)
    [letter] = await store.list_dead_letters(0, 10)
    assert (letter.event, letter.reason) == (ev(1), "junk")


async def test_max_kept_deletes_the_oldest_and_says_how_many(store: Storage) -> None:
    await store.append_dead_letters([(ev(i), "junk") for i in range(3)], NOW, 5)
    assert await store.append_dead_letters([(ev(i), "junk") for i in range(3, 7)], NOW, 5) == 2
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(i) for i in range(2, 7)]


async def test_replay_moves_dead_letters_into_the_stream_in_id_order(store: Storage) -> None:
    r = await reg(store)
    await store.append([ev(0)], NOW)
    await store.append_dead_letters([(ev(i), "junk") for i in (1, 2, 3)], NOW, 0)
    ids = [d.id for d in await store.list_dead_letters(0, 10)]
    outcome = await store.replay_dead_letters([ids[2], ids[0], 999_999], NOW)
    assert (outcome.stored, outcome.discarded) == (2, 0)
    assert await drain(store, r) == [ev(0), ev(1), ev(3)]
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(2)]


async def test_replay_with_nobody_registered_keeps_the_dead_letters(store: Storage) -> None:
    await store.append_dead_letters([(ev(1), "junk")], NOW, 0)
    [letter] = await store.list_dead_letters(0, 10)
    outcome = await store.replay_dead_letters([letter.id], NOW)
    assert (outcome.stored, outcome.discarded) == (0, 1)
    assert await store.count_dead_letters() == 1


async def test_a_refused_replay_changes_nothing(backend: Backend) -> None:
    store = await backend.open(StorageLimits(max_backlog_events=1, backlog_policy="reject"))
    r = await reg(store)
    await store.append([ev(0)], NOW)
    await store.append_dead_letters([(ev(1), "junk")], NOW, 0)
    [letter] = await store.list_dead_letters(0, 10)
    with pytest.raises(StorageUnavailable):
        await store.replay_dead_letters([letter.id], NOW)
    assert await store.count_dead_letters() == 1
    assert await drain(store, r) == [ev(0)]


async def test_the_watermark_refuses_dead_letters_too(backend: Backend) -> None:
    if not backend.local_disk:
        pytest.skip("the free-space watermark applies to a local disk")
    store = await backend.open(StorageLimits(min_free_bytes=1 << 62))
    with pytest.raises(StorageUnavailable):
        await store.append_dead_letters([(ev(1), "junk")], NOW, 0)
    assert await store.count_dead_letters() == 0


async def test_purge_deletes_the_named_dead_letters_or_all(store: Storage) -> None:
    await store.append_dead_letters([(ev(i), "junk") for i in range(4)], NOW, 0)
    ids = [d.id for d in await store.list_dead_letters(0, 10)]
    assert await store.purge_dead_letters([ids[1], 999_999]) == 1
    assert await store.purge_dead_letters([]) == 0
    assert await store.count_dead_letters() == 3
    assert await store.purge_dead_letters(None) == 3
    assert await store.count_dead_letters() == 0
