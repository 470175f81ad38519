"""Several stores open on one state at once (several relay processes on one database).

Runs on every backend that says it can be shared (`Backend.shared`); the
embedded backend refuses a second process by design, so it is skipped there.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from cfylogs.models import DeadLetters
from cfylogs.storage.base import Storage
from tests.contract.conftest import Backend
from tests.contract.test_storage_contract import BIG, NOW, ev


@pytest.fixture
async def stores(backend: Backend) -> list[Storage]:
    """Three stores on one fresh state, opened at the same time (they migrate it together)."""
    if not backend.shared:
        pytest.skip(f"{backend.name}: one process per state")
    return list(await asyncio.gather(*(backend.open() for _ in range(3))))


async def test_concurrent_fetches_hand_out_one_batch(stores: list[Storage]) -> None:
    a, b, c = stores
    registration_id = str(uuid.uuid4())
    await a.register(registration_id, None, None, NOW)
    await b.append([ev(i) for i in range(5)], NOW)
    batches = await asyncio.gather(*(s.fetch(registration_id, 3, BIG, NOW) for s in stores))
    assert all(batch is not None for batch in batches)
    assert {(batch.id, tuple(batch.entries)) for batch in batches if batch} == {
        (0, tuple(ev(i) for i in range(3)))
    }
    assert sorted(batch.deliveries for batch in batches if batch) == [1, 2, 3]
    assert (await c.ack(registration_id, 0, NOW)).acknowledged
    rest = await a.fetch(registration_id, 10, BIG, NOW)
    assert rest is not None and (rest.id, list(rest.entries)) == (1, [ev(3), ev(4)])


async def test_leases_expire_once_not_once_per_instance(stores: list[Storage]) -> None:
    idle = str(uuid.uuid4())
    await stores[0].register(idle, None, None, NOW)
    outcomes = await asyncio.gather(*(s.expire(NOW + 10) for s in stores))
    expired = [outcome.expired for outcome in outcomes]
    assert sorted(map(len, expired)) == [0, 0, 1] and [idle] in expired


async def test_appends_elsewhere_wake_this_store_not_its_own(stores: list[Storage]) -> None:
    a, b, _ = stores
    await a.register(str(uuid.uuid4()), None, None, NOW)
    woken, own = asyncio.Event(), asyncio.Event()
    a.on_new_events(woken.set)
    b.on_new_events(own.set)
    # Append until `a` hears of it: no assumption on when its listener is ready.
    for _ in range(100):
        await b.append([ev(1)], NOW)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), 0.1)
            break
    assert woken.is_set() and not own.is_set()


async def test_concurrent_appends_and_fetches_across_stores_skip_nothing(
    stores: list[Storage],
) -> None:
    """A reader on one store never passes over an event another store commits later."""
    registration_id = str(uuid.uuid4())
    await stores[0].register(registration_id, None, None, NOW)
    producers, per_producer = 6, 30
    done = asyncio.Event()
    received: list[bytes] = []

    async def produce(p: int) -> None:
        store = stores[p % 2]
        for i in range(per_producer):
            await store.append([b'{"p":%d,"i":%d}' % (p, i)], NOW)

    async def consume() -> None:
        reader = stores[2]
        while True:
            finished = done.is_set()
            batch = await reader.fetch(registration_id, 7, BIG, NOW)
            if batch is None:
                if finished:
                    return
                await asyncio.sleep(0)  # let the producers run
                continue
            received.extend(batch.entries)
            await reader.ack(registration_id, batch.id, NOW)

    consumer = asyncio.create_task(consume())
    await asyncio.gather(*(produce(p) for p in range(producers)))
    done.set()
    await consumer
    assert len(received) == len(set(received)) == producers * per_producer
    for p in range(producers):
        mine = [e for e in received if e.startswith(b'{"p":%d,' % p)]
        assert mine == [b'{"p":%d,"i":%d}' % (p, i) for i in range(per_producer)]


async def test_a_dead_letter_replayed_from_two_instances_at_once_is_stored_once(
    stores: list[Storage],
) -> None:
    a, b, _ = stores
    registration_id = str(uuid.uuid4())
    await a.register(registration_id, None, None, NOW)
    await a.append([], NOW, DeadLetters([(ev(i), "junk") for i in range(3)], 0))
    ids = [letter.id for letter in await b.list_dead_letters(0, 10)]
    outcomes = await asyncio.gather(
        a.replay_dead_letters(ids, NOW), b.replay_dead_letters(ids, NOW)
    )
    assert sorted(outcome.stored for outcome in outcomes) == [0, 3]
    batch = await b.fetch(registration_id, 10, BIG, NOW)
    assert batch is not None and list(batch.entries) == [ev(i) for i in range(3)]
    assert await a.count_dead_letters() == 0
