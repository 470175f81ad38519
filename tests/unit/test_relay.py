"""The domain over the reference store (in memory, no threads), with a clock the tests control."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cfylogs.config import Settings
from cfylogs.errors import RegistrationNotFound, StorageUnavailable
from cfylogs.relay import Relay, relay_options
from cfylogs.storage.memory import MemoryState, MemoryStorage
from tests.contract.conftest import limits


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state() -> MemoryState:
    """What the store holds, kept across a relay's stop and start."""
    return MemoryState()


async def make_relay(state: MemoryState, clock: Clock, **options: Any) -> Relay:
    """A relay with the default settings but `options`."""
    chosen = dataclasses.replace(relay_options(Settings()), **options)
    relay = Relay(MemoryStorage(state=state), chosen, clock)
    await relay.start()
    return relay


@pytest.fixture
async def relay(state: MemoryState, clock: Clock) -> AsyncIterator[Relay]:
    relay = await make_relay(state, clock, batch_size=3)
    yield relay
    await relay.stop()


async def test_counters_follow_the_life_of_events(relay: Relay) -> None:
    await relay.ingest([b'{"a":0}'])  # nobody registered: discarded
    r = await relay.register("a")
    await relay.ingest([b'{"a":%d}' % i for i in range(5)])
    first = await relay.fetch(r)
    again = await relay.fetch(r)
    assert first is not None and again is not None and again.deliveries == 2
    await relay.ack(r, first.id)
    await relay.ack(r, first.id)
    c = relay.counters
    assert (c.events_received, c.events_stored, c.events_discarded) == (6, 5, 1)
    assert (c.events_delivered, c.events_redelivered, c.batches_redelivered) == (6, 3, 1)
    assert (c.events_acknowledged, c.batches_acknowledged) == (3, 1)


async def test_max_is_capped_by_the_batch_size(relay: Relay) -> None:
    r = await relay.register()
    await relay.ingest([b'{"a":%d}' % i for i in range(10)])
    batch = await relay.fetch(r, max_entries=100)
    assert batch is not None and len(batch.entries) == 3
    await relay.ack(r, batch.id)
    batch = await relay.fetch(r, max_entries=1)
    assert batch is not None and len(batch.entries) == 1


async def test_a_waiting_fetch_is_woken_by_ingest(relay: Relay) -> None:
    r = await relay.register()
    waiter = asyncio.create_task(relay.fetch(r, wait=30))
    await asyncio.sleep(0)  # let it start waiting
    await relay.ingest([b'{"a":1}'])
    batch = await asyncio.wait_for(waiter, 5)
    assert batch is not None and list(batch.entries) == [b'{"a":1}']


async def test_shutdown_answers_waiting_fetches(relay: Relay) -> None:
    r = await relay.register()
    waiter = asyncio.create_task(relay.fetch(r, wait=60))
    await asyncio.sleep(0)
    relay.begin_shutdown()
    assert await asyncio.wait_for(waiter, 5) is None


async def test_leases_run_from_the_relay_start(state: MemoryState, clock: Clock) -> None:
    relay = await make_relay(state, clock, leased=True, lease_duration_sec=100)
    try:
        idle = await relay.register()
        clock.now += 50
        assert await relay.expire_leases() == []
        clock.now += 100
        assert await relay.expire_leases() == [idle]
        assert relay.counters.registrations_expired == 1
        assert await relay.fetch(idle) is None  # revived
        assert relay.counters.registrations_revived == 1
    finally:
        await relay.stop()
    clock.now += 10_000  # down for hours: nobody expires at restart
    relay = await make_relay(state, clock, leased=True, lease_duration_sec=100)
    try:
        assert await relay.expire_leases() == []
    finally:
        await relay.stop()


async def test_no_revival_when_it_is_off(state: MemoryState, clock: Clock) -> None:
    relay = await make_relay(state, clock, leased=True, lease_duration_sec=10, revive_expired=False)
    try:
        r = await relay.register()
        clock.now += 20
        assert await relay.expire_leases() == [r]
        with pytest.raises(RegistrationNotFound):
            await relay.fetch(r)
    finally:
        await relay.stop()


LOG = (
    b'{"type":"cloudify_log","level":"info","timestamp":"2017-09-14T14:06:50.296Z",'
    b'"context":{},"message":{"text":"ok"}}'
)


async def test_a_refused_ingest_keeps_no_dead_letter_and_its_retry_keeps_it_once(
    clock: Clock,
) -> None:
    """The request's events and dead letters are one storage step: a 503 stores neither,
    so the producer's retry cannot leave a dead letter twice."""
    store = MemoryStorage(limits(max_backlog_events=1, backlog_policy="reject"))
    relay = Relay(store, dataclasses.replace(relay_options(Settings()), accept="cloudify"), clock)
    await relay.start()
    try:
        r = await relay.register()
        await relay.ingest([LOG])
        with pytest.raises(StorageUnavailable):
            await relay.ingest([LOG, b'{"junk":1}'])
        assert await store.count_dead_letters() == 0
        assert relay.counters.events_dead_lettered == 0 and relay.counters.ingests_refused == 1
        batch = await relay.fetch(r)
        assert batch is not None
        await relay.ack(r, batch.id)
        result = await relay.ingest([LOG, b'{"junk":1}'])  # the retry
        assert (result.stored, result.dead_lettered) == (1, 1)
        assert await store.count_dead_letters() == 1
        assert relay.counters.events_dead_lettered == 1
    finally:
        await relay.stop()


async def test_events_dropped_by_the_caps_are_counted(state: MemoryState, clock: Clock) -> None:
    store = MemoryStorage(limits(max_backlog_events=2))
    relay = Relay(store, relay_options(Settings()), clock)
    await relay.start()
    try:
        await relay.register()
        await relay.register()
        await relay.ingest([b'{"n":%d}' % i for i in range(5)])
        assert relay.counters.events_dropped == 6  # three from each backlog
    finally:
        await relay.stop()


async def test_expired_registrations_are_purged_after_their_retention(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStorage(limits(expired_retention_sec=1000))
    options = dataclasses.replace(relay_options(Settings()), leased=True, lease_duration_sec=100)
    relay = Relay(store, options, clock)
    await relay.start()
    try:
        idle = await relay.register()
        clock.now += 150
        assert await relay.expire_leases() == [idle]
        clock.now += 500
        await relay.expire_leases()
        assert relay.counters.registrations_purged == 0
        clock.now += 600  # 1,100 s after its lease ran out
        with caplog.at_level(logging.INFO, logger="cfylogs.relay"):
            await relay.expire_leases()
        assert relay.counters.registrations_purged == 1
        assert any(idle in m and "deleted" in m for m in caplog.messages)
        with pytest.raises(RegistrationNotFound):
            await relay.fetch(idle)  # not revived: forgotten
    finally:
        await relay.stop()
