"""The domain over a real embedded store, with a clock the tests control."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cfylogs.config import Settings
from cfylogs.errors import RegistrationNotFound
from cfylogs.relay import Relay, relay_options
from cfylogs.storage.sqlite import SqliteStorage


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def make_relay(tmp_path: Path, clock: Clock, **options: Any) -> Relay:
    """A relay with the default settings but `options`."""
    chosen = dataclasses.replace(relay_options(Settings()), **options)
    relay = Relay(SqliteStorage(tmp_path / "home"), chosen, clock)
    await relay.start()
    return relay


@pytest.fixture
async def relay(tmp_path: Path, clock: Clock) -> AsyncIterator[Relay]:
    relay = await make_relay(tmp_path, clock, batch_size=3)
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


async def test_leases_run_from_the_relay_start(tmp_path: Path, clock: Clock) -> None:
    relay = await make_relay(tmp_path, clock, leased=True, lease_duration_sec=100)
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
    relay = await make_relay(tmp_path, clock, leased=True, lease_duration_sec=100)
    try:
        assert await relay.expire_leases() == []
    finally:
        await relay.stop()


async def test_no_revival_when_it_is_off(tmp_path: Path, clock: Clock) -> None:
    relay = await make_relay(
        tmp_path, clock, leased=True, lease_duration_sec=10, revive_expired=False
    )
    try:
        r = await relay.register()
        clock.now += 20
        assert await relay.expire_leases() == [r]
        with pytest.raises(RegistrationNotFound):
            await relay.fetch(r)
    finally:
        await relay.stop()
