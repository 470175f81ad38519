"""Backlog caps and the free-space watermark (StorageLimits), on every backend."""

from __future__ import annotations

import uuid

import pytest

from cfylogs.errors import StorageUnavailable
from cfylogs.storage.base import Storage
from tests.contract.conftest import Backend, limits
from tests.contract.test_storage_contract import BIG, NOW, ev


async def reg(store: Storage) -> str:
    registration_id = str(uuid.uuid4())
    await store.register(registration_id, None, None, NOW)
    return registration_id


async def drain(store: Storage, registration_id: str) -> list[bytes]:
    out: list[bytes] = []
    while (batch := await store.fetch(registration_id, 1000, BIG, NOW)) is not None:
        out.extend(batch.entries)
        await store.ack(registration_id, batch.id, NOW)
    return out


async def dropped(store: Storage, registration_id: str) -> int:
    [listed] = [r for r in await store.registrations() if r.id == registration_id]
    return listed.dropped_events


async def test_drop_oldest_keeps_the_newest_events_of_the_lagging_registration(
    backend: Backend,
) -> None:
    store = await backend.open(limits(max_backlog_events=5))
    lagging, keeping_up = await reg(store), await reg(store)
    lost = 0
    for i in range(8):
        outcome = await store.append([ev(i)], NOW)
        assert outcome.stored == 1  # ingest keeps working for everyone
        lost += outcome.dropped
        batch = await store.fetch(keeping_up, 10, BIG, NOW)
        assert batch is not None
        await store.ack(keeping_up, batch.id, NOW)
    assert await drain(store, lagging) == [ev(i) for i in range(3, 8)]
    assert await dropped(store, lagging) == 3
    assert await dropped(store, keeping_up) == 0
    assert lost == 3  # the appends say what they dropped (the relay's counter)


async def test_drop_oldest_can_take_the_pending_batch(backend: Backend) -> None:
    store = await backend.open(limits(max_backlog_events=4))
    r = await reg(store)
    await store.append([ev(0), ev(1), ev(2)], NOW)
    pending = await store.fetch(r, 2, BIG, NOW)
    assert pending is not None and list(pending.entries) == [ev(0), ev(1)]
    await store.append([ev(3), ev(4), ev(5)], NOW)  # 6 > 4: events 0 and 1 (the batch) go
    assert not (await store.ack(r, pending.id, NOW)).acknowledged  # a harmless, idempotent 200
    batch = await store.fetch(r, 10, BIG, NOW)
    assert batch is not None and batch.id == pending.id + 1
    assert list(batch.entries) == [ev(2), ev(3), ev(4), ev(5)]


async def test_drop_oldest_by_bytes(backend: Backend) -> None:
    size = len(ev(0, pad=50))
    store = await backend.open(limits(max_backlog_bytes=3 * size))
    r = await reg(store)
    for i in range(6):
        await store.append([ev(i, pad=50)], NOW)
    assert await drain(store, r) == [ev(i, pad=50) for i in range(3, 6)]
    [listed] = await store.registrations()
    assert listed.dropped_events == 3 and listed.backlog_bytes == 0


async def test_reject_refuses_producers_instead(backend: Backend) -> None:
    store = await backend.open(limits(max_backlog_events=3, backlog_policy="reject"))
    r = await reg(store)
    await store.append([ev(0), ev(1), ev(2)], NOW)
    with pytest.raises(StorageUnavailable, match="backlog"):
        await store.append([ev(3)], NOW)
    batch = await store.fetch(r, 10, BIG, NOW)
    assert batch is not None
    await store.ack(r, batch.id, NOW)
    await store.append([ev(4)], NOW)
    assert await drain(store, r) == [ev(4)]
    assert await dropped(store, r) == 0


async def test_below_the_watermark_ingest_is_refused_but_consumers_drain(
    backend: Backend,
) -> None:
    if not backend.local_disk:
        pytest.skip(f"{backend.name}: the watermark applies to local disks only")
    store = await backend.open()
    r = await reg(store)
    await store.append([ev(0)], NOW)
    await store.close()
    store = await backend.open(limits(min_free_bytes=1 << 62))
    with pytest.raises(StorageUnavailable, match="min_free_bytes") as info:
        await store.append([ev(1)], NOW)
    assert info.value.retry_after
    assert await drain(store, r) == [ev(0)]
