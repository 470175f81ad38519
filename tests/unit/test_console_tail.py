"""The live tail's ring: bounds, cursor, what a slow viewer is told, filters, idleness."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cfylogs.console import tail
from cfylogs.console.tail import Tail, TailFilter

ANY = TailFilter()


def log(n: int, level: str = "info", deployment: str = "dep", text: str = "") -> bytes:
    event = {
        "type": "cloudify_log",
        "level": level,
        "context": {"deployment_id": deployment, "node_id": "node_1"},
        "message": {"text": text or f"message {n}"},
        "n": n,
    }
    return json.dumps(event).encode()


def numbers(page: tail.TailPage) -> list[int]:
    assert all(e.raw is not None for e in page.events)
    return [json.loads(e.raw or b"")["n"] for e in page.events]


async def watching() -> Tail:
    """A tail someone polls (watched), as the first poll makes it."""
    t = Tail()
    page = await t.poll(None, 10, ANY, 0)
    assert page.events == [] and t.watched
    return t


async def test_unwatched_it_only_counts() -> None:
    t = Tail()
    t.offer([log(1), log(2)])
    assert t.head == 2 and not t.watched
    assert t.read(None, 10, ANY).events == []  # nothing kept
    t.close()


async def test_a_viewer_follows_with_its_cursor() -> None:
    t = await watching()
    t.offer([log(1), log(2)])
    first = t.read(0, 10, ANY)
    assert numbers(first) == [1, 2] and first.last == 2 and first.missed == 0
    t.offer([log(3)])
    second = t.read(first.last, 10, ANY)
    assert numbers(second) == [3] and second.last == 3 and [e.seq for e in second.events] == [3]
    assert t.read(second.last, 10, ANY).events == []
    t.close()


async def test_a_new_viewer_gets_what_the_ring_holds_and_misses_nothing() -> None:
    t = await watching()
    t.offer([log(n) for n in range(5)])
    page = t.read(None, 3, ANY)
    assert numbers(page) == [2, 3, 4] and page.missed == 0  # the newest of them
    t.close()


async def test_the_ring_is_bounded_and_a_slow_viewer_is_told_what_it_missed() -> None:
    t = await watching()
    for start in range(0, tail.MAX_EVENTS + 500, 100):
        t.offer([log(n) for n in range(start, start + 100)])
    page = t.read(0, tail.MAX_LIMIT, ANY)
    # 2500 accepted, 2000 held: 500 dropped from the ring, then 1000 more than the limit
    assert page.last == tail.MAX_EVENTS + 500
    assert page.missed == 500 + (tail.MAX_EVENTS - tail.MAX_LIMIT)
    assert numbers(page) == list(range(1500, 2500))
    t.close()


async def test_bytes_are_bounded_too_even_within_one_request() -> None:
    t = await watching()
    big = [log(n, text="x" * 60_000) for n in range(100)]  # about 6 MB in one request
    t.offer(big)
    page = t.read(0, tail.MAX_LIMIT, ANY)
    held = sum(e.size for e in page.events)
    assert held <= tail.MAX_BYTES and len(page.events) == page.last - page.missed
    assert numbers(page)[-1] == 99 and page.missed > 0
    t.close()


async def test_an_oversized_event_is_held_as_its_size() -> None:
    t = await watching()
    huge = log(1, text="y" * (tail.MAX_EVENT_BYTES + 1))
    t.offer([huge, log(2)])
    page = t.read(0, 10, ANY)
    assert [(e.raw is None, e.size) for e in page.events] == [
        (True, len(huge)),
        (False, len(log(2))),
    ]
    assert [e.seq for e in t.read(0, 10, TailFilter(level="info")).events] == [2]
    t.close()


async def test_events_counted_while_nobody_watched_are_missed_by_an_old_cursor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tail, "WATCH_WINDOW_SEC", 0.05)
    t = await watching()
    t.offer([log(1)])
    cursor = (await t.poll(0, 10, ANY, 0)).last
    await asyncio.sleep(0.2)  # nobody polls: the ring is let go
    assert not t.watched
    t.offer([log(2), log(3)])
    assert (await t.poll(cursor, 10, ANY, 0)).missed == 2  # watched again from here
    t.offer([log(4)])
    page = await t.poll(3, 10, ANY, 0)
    assert numbers(page) == [4] and page.missed == 0
    t.close()


async def test_a_cursor_from_another_run_starts_afresh() -> None:
    t = await watching()
    t.offer([log(1)])
    page = t.read(10_000, 10, ANY)
    assert numbers(page) == [1] and page.missed == 0 and page.last == 1
    t.close()


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (TailFilter(level="warning"), [2, 3]),
        (TailFilter(level="error"), [3]),
        (TailFilter(level="debug"), [0, 1, 2, 3]),
        (TailFilter(deployment="other"), [1]),
        (TailFilter(text="DISK FULL"), [3]),
        (TailFilter(text="node_1"), [0, 1, 2, 3]),  # any field
        (TailFilter(type="cloudify_event"), [4]),
        (TailFilter(type="cloudify_log", level="warning", deployment="dep"), [2, 3]),
    ],
)
async def test_filters(wanted: TailFilter, expected: list[int]) -> None:
    t = await watching()
    event = {"type": "cloudify_event", "event_type": "workflow_started", "n": 4, "context": {}}
    t.offer(
        [
            log(0, "debug"),
            log(1, "info", deployment="other"),
            log(2, "warning"),
            log(3, "error", text="disk full"),
            json.dumps(event).encode(),
            b"[1, 2]",  # not an object (accept: any): shown without a filter only
        ]
    )
    page = t.read(0, 10, wanted)
    assert [json.loads(e.raw or b"")["n"] for e in page.events] == expected
    assert page.last == 6
    t.close()


async def test_a_long_poll_returns_when_a_matching_event_arrives() -> None:
    t = await watching()
    waiting = asyncio.create_task(t.poll(0, 10, TailFilter(level="error"), 5))
    await asyncio.sleep(0.01)
    t.offer([log(1, "info")])  # wakes it, does not match: it waits on
    await asyncio.sleep(0.01)
    assert not waiting.done()
    started = time.monotonic()
    t.offer([log(2, "error")])
    page = await asyncio.wait_for(waiting, 1)
    assert numbers(page) == [2] and page.last == 2 and time.monotonic() - started < 0.5
    t.close()


async def test_close_answers_polls_at_once() -> None:
    t = await watching()
    waiting = asyncio.create_task(t.poll(0, 10, ANY, 20))
    await asyncio.sleep(0.01)
    t.close()
    page = await asyncio.wait_for(waiting, 1)
    assert page.events == []


async def test_the_ring_is_forgotten_once_nobody_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "WATCH_WINDOW_SEC", 0.05)
    t = await watching()
    t.offer([log(1)])
    assert t.watched
    await asyncio.sleep(0.2)
    assert not t.watched and t.read(None, 10, ANY).events == []
    t.offer([log(2)])
    assert t.head == 2 and t.read(None, 10, ANY).events == []
    t.close()


async def test_a_poll_in_flight_keeps_it_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "WATCH_WINDOW_SEC", 0.05)
    t = Tail()
    waiting = asyncio.create_task(t.poll(None, 10, ANY, 0.3))
    await asyncio.sleep(0.15)  # past the window, but someone is waiting
    assert t.watched
    t.offer([log(1)])
    assert numbers(await waiting) == [1]
    t.close()


def test_offering_unwatched_costs_next_to_nothing() -> None:
    t = Tail()
    events = [log(1)]
    rounds = 200_000
    started = time.perf_counter()
    for _ in range(rounds):
        t.offer(events)
    per_call = (time.perf_counter() - started) / rounds
    # A single-event ingest takes tens of microseconds: this is a thousandth of that.
    assert per_call < 2e-6, per_call
    assert t.head == rounds
