"""`Storage.adopt`: registrations taken over from the Java server, batches and all."""

from __future__ import annotations

import pytest

from cfylogs.errors import BatchNotDelivered, RegistrationNotFound
from cfylogs.storage.base import Storage
from tests.contract.conftest import Backend
from tests.contract.test_storage_contract import BIG, NOW, ev

RID = "5b8e7a7e-1c1d-4f57-9d55-0b5a4f1f2a10"
LEGACY = [(3, [ev(1), ev(2)]), (4, [ev(3)]), (7, [ev(4), ev(5), ev(6)])]


async def drain(store: Storage, rid: str) -> list[tuple[int, list[bytes]]]:
    got = []
    while (batch := await store.fetch(rid, 100, BIG, NOW)) is not None:
        got.append((batch.id, list(batch.entries)))
        assert (await store.ack(rid, batch.id, NOW)).acknowledged
    return got


async def test_legacy_batches_go_first_whole_then_new_events_from_the_next_id(
    store: Storage,
) -> None:
    assert await store.adopt(RID, LEGACY, NOW)
    await store.append([ev(10), ev(11)], NOW)
    # max_entries does not split a legacy batch: it is handed out as it was
    first = await store.fetch(RID, 1, BIG, NOW)
    assert first is not None and (first.id, list(first.entries)) == LEGACY[0]
    assert (first.deliveries, (await store.fetch(RID, 1, BIG, NOW) or first).deliveries) == (1, 2)
    assert (await store.ack(RID, 3, NOW)).acknowledged
    assert await drain(store, RID) == [*LEGACY[1:], (8, [ev(10), ev(11)])]


async def test_an_adopted_registration_sees_only_later_events(store: Storage) -> None:
    await store.register("other", None, None, NOW)
    await store.append([ev(0)], NOW)
    assert await store.adopt(RID, [], NOW)
    await store.append([ev(1)], NOW)
    assert await drain(store, RID) == [(0, [ev(1)])]


async def test_adopting_an_existing_id_changes_nothing(store: Storage) -> None:
    assert await store.adopt(RID, LEGACY, NOW)
    assert not await store.adopt(RID, [(9, [ev(9)])], NOW)
    assert [b for b, _ in await drain(store, RID)] == [3, 4, 7]
    await store.register("taken", None, None, NOW)
    assert not await store.adopt("taken", LEGACY, NOW)
    assert await store.fetch("taken", 10, BIG, NOW) is None


async def test_acks_of_legacy_batches(store: Storage) -> None:
    assert await store.adopt(RID, LEGACY, NOW)
    # the Java server may have handed out the first one: its ack is taken before a fetch
    assert (await store.ack(RID, 3, NOW)).events == 2
    assert not (await store.ack(RID, 3, NOW)).acknowledged  # already acknowledged
    assert not (await store.ack(RID, 1, NOW)).acknowledged
    with pytest.raises(BatchNotDelivered):
        await store.ack(RID, 7, NOW)
    assert [b for b, _ in await drain(store, RID)] == [4, 7]


async def test_legacy_backlog_is_counted_and_survives_a_restart(backend: Backend) -> None:
    store = await backend.open()
    assert await store.adopt(RID, LEGACY, NOW)
    await store.append([ev(10)], NOW)
    assert (await store.fetch(RID, 10, BIG, NOW) or None) is not None
    store = await backend.reopen(store)
    (reg,) = await store.registrations()
    size = sum(len(e) for _, entries in LEGACY for e in entries) + len(ev(10))
    assert (reg.id, reg.backlog_events, reg.backlog_bytes) == (RID, 7, size)
    assert (reg.pending_batch_id, reg.pending_deliveries, reg.oldest_unacked_at) == (3, 1, NOW)
    status = await store.status()
    assert status.events_stored == 7
    again = await store.fetch(RID, 10, BIG, NOW)
    assert again is not None and (again.id, again.deliveries) == (3, 2)
    assert await drain(store, RID) == [*LEGACY, (8, [ev(10)])]


async def test_legacy_batches_leave_with_their_registration(store: Storage) -> None:
    assert await store.adopt(RID, LEGACY, NOW)
    await store.unregister(RID)
    with pytest.raises(RegistrationNotFound):
        await store.fetch(RID, 10, BIG, NOW)
    assert (await store.status()).events_stored == 0
    assert await store.adopt(RID, [(1, [ev(1)])], NOW)  # the id is free again
    assert (await store.expire(NOW + 1)).expired == [RID]
    assert await store.revive(RID, NOW + 2)
    await store.append([ev(2)], NOW + 2)
    assert await drain(store, RID) == [(2, [ev(2)])]


BAD: list[list[tuple[int, list[bytes]]]] = [
    [(2, [ev(1)]), (2, [ev(2)])],
    [(3, [ev(1)]), (1, [ev(2)])],
    [(-1, [ev(1)])],
    [(0, [])],
]


@pytest.mark.parametrize("batches", BAD)
async def test_bad_legacy_batches_are_refused(
    store: Storage, batches: list[tuple[int, list[bytes]]]
) -> None:
    with pytest.raises(ValueError):
        await store.adopt(RID, batches, NOW)
    assert await store.registrations() == []
