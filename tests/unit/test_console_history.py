"""The console's history: rates from the counters, backlog per registration, bounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cfylogs.console.history import MAX_TRACKED, History
from cfylogs.errors import StorageUnavailable
from cfylogs.relay import Relay
from cfylogs.storage.sqlite import SqliteStorage
from tests.unit.test_relay import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def relay(tmp_path: Path, clock: Clock) -> AsyncIterator[Relay]:
    relay = Relay(SqliteStorage(tmp_path / "home"), clock=clock)
    await relay.start()
    yield relay
    await relay.stop()


def history_of(relay: Relay, clock: Clock, capacity: int = 720) -> History:
    """A history sampled by hand, on the relay's clock, 5 s apart."""
    return History(relay, capacity=capacity, monotonic=clock)


async def test_rates_are_per_second_between_samples(relay: Relay, clock: Clock) -> None:
    history = history_of(relay, clock)
    reg = await relay.register("a")
    first = await history.sample()
    assert (first.received_per_sec, first.backlog_events) == (0.0, 0)
    await relay.ingest([b'{"n":%d}' % n for n in range(50)])
    batch = await relay.fetch(reg)
    assert batch is not None
    await relay.ack(reg, batch.id)
    clock.now += 5
    second = await history.sample()
    assert second.at == clock.now
    assert (second.received_per_sec, second.delivered_per_sec) == (10.0, 10.0)
    assert second.acknowledged_per_sec == 10.0 and second.backlog_events == 0
    await relay.ingest([b'{"n":1}'])
    clock.now += 5
    third = await history.sample()
    assert third.received_per_sec == 0.2 and third.delivered_per_sec == 0.0
    assert third.backlog_events == 1 and third.backlog_bytes == len(b'{"n":1}')


async def test_registration_series_are_aligned_with_the_samples(relay: Relay, clock: Clock) -> None:
    history = history_of(relay, clock)
    a = await relay.register("a")
    await relay.ingest([b"{}"] * 3)
    await history.sample()
    b = await relay.register("b")
    await relay.ingest([b"{}"] * 2)
    clock.now += 5
    await history.sample()
    window = history.window()
    assert [s.backlog_events for s in window.samples] == [3, 7]
    assert window.backlogs == {a: [3, 5], b: [None, 2]}
    await relay.unregister(a)
    clock.now += 5
    await history.sample()
    assert history.window().backlogs == {b: [None, 2, 2]}
    assert history.window(after=clock.now - 5).backlogs == {b: [2]}  # the last sample only


async def test_it_keeps_its_capacity(relay: Relay, clock: Clock) -> None:
    history = history_of(relay, clock, capacity=3)
    reg = await relay.register()
    for _ in range(5):
        await relay.ingest([b"{}"])
        await history.sample()
        clock.now += 5
    window = history.window()
    assert len(window.samples) == 3 and window.backlogs == {reg: [3, 4, 5]}


async def test_only_the_first_registrations_get_a_series(relay: Relay, clock: Clock) -> None:
    history = history_of(relay, clock)
    ids = [await relay.register(f"r{n}") for n in range(MAX_TRACKED + 2)]
    await history.sample()
    assert list(history.window().backlogs) == ids[:MAX_TRACKED]


async def test_a_store_that_does_not_answer_leaves_gaps(
    relay: Relay, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = history_of(relay, clock)
    reg = await relay.register()
    await history.sample()

    async def down() -> list[object]:
        raise StorageUnavailable("down")

    monkeypatch.setattr(relay, "registrations", down)
    clock.now += 5
    sample = await history.sample()
    assert sample.backlog_events is None and sample.backlog_bytes is None
    monkeypatch.undo()
    clock.now += 5
    await history.sample()
    assert history.window().backlogs == {reg: [0, None, 0]}


async def test_the_relay_samples_from_its_start(relay: Relay) -> None:
    # Relay.start took the first sample (the task runs at once, then every 5 s).
    for _ in range(100):
        if relay.history.window().samples:
            break
        await asyncio.sleep(0.01)
    assert len(relay.history.window().samples) == 1
