"""The live tail: the events ingest accepted lately, for people watching them.

Best effort and bounded by design. Ingest hands every accepted request's
events to `Tail.offer`, which only counts them unless a viewer polled within
the last `WATCH_WINDOW_SEC`; while someone watches it keeps them in a ring of
at most `MAX_EVENTS` events and `MAX_BYTES` bytes (the bytes as posted,
shared with the request: no copy, no parsing). Viewers read with a cursor
(`after`: the last sequence number they saw) and long-poll for more; a
viewer that falls behind is not waited for: the ring drops the oldest
events and the viewer is told how many it missed.

Watching registers, consumes, delays and acknowledges nothing: the tail
never touches the store or any registration.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from cfylogs.broadcast import Broadcast

#: Bounds of the ring (whichever is reached first).
MAX_EVENTS = 2000
MAX_BYTES = 4 * 1024**2
#: A larger event is held as its size only (shown as "too large").
MAX_EVENT_BYTES = 64 * 1024
#: The ring is kept while a viewer polled this recently (or is polling).
WATCH_WINDOW_SEC = 30.0
#: Longest long poll, and the most events one answer holds.
MAX_WAIT_SEC = 25.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 200

#: `?level=` keeps this level and the more severe ones.
_SEVERITY = {"debug": 0, "info": 1, "warning": 2, "warn": 2, "error": 3, "critical": 4, "fatal": 4}


class _Fields(msgspec.Struct):
    """What the filters read of an event (any JSON object: every field may be anything)."""

    type: Any = None
    level: Any = None
    context: Any = None
    message: Any = None


_decode_fields = msgspec.json.Decoder(_Fields).decode


@dataclass(frozen=True, slots=True)
class TailFilter:
    """`?type=` (the event's `type`), `?level=` (at least), `?deployment=`
    (`context.deployment_id`), `?q=` (text anywhere in the event, any case)."""

    type: str | None = None
    level: str | None = None
    deployment: str | None = None
    text: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.type or self.level or self.deployment or self.text)

    def matches(self, raw: bytes) -> bool:
        try:
            event = _decode_fields(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return False  # not an object: ingest takes any JSON value with accept: any
        if self.type and event.type != self.type:
            return False
        if self.level and not _severe_enough(event.level, self.level):
            return False
        context = event.context if isinstance(event.context, dict) else {}
        if self.deployment and context.get("deployment_id") != self.deployment:
            return False
        return not self.text or _contains(raw, event.message, self.text.lower())


def _severe_enough(level: Any, wanted: str) -> bool:
    if not isinstance(level, str):
        return False
    wanted_rank = _SEVERITY.get(wanted.lower())
    if wanted_rank is None:  # a level of its own: that one only
        return level.lower() == wanted.lower()
    rank = _SEVERITY.get(level.lower())
    return rank is not None and rank >= wanted_rank


def _contains(raw: bytes, message: Any, needle: str) -> bool:
    if needle in raw.decode("utf-8", "replace").lower():
        return True
    # The text as decoded too: a producer may have escaped its non-ASCII letters.
    text = message.get("text") if isinstance(message, dict) else message
    return isinstance(text, str) and needle in text.lower()


@dataclass(frozen=True, slots=True)
class TailEvent:
    seq: int
    received_at: float
    #: The event as posted; None when it is over MAX_EVENT_BYTES.
    raw: bytes | None
    size: int


@dataclass(frozen=True, slots=True)
class TailPage:
    events: list[TailEvent]
    #: The cursor to pass as `after` next time (the last event accepted so far).
    last: int
    #: Events this viewer did not get: dropped from the ring (or ingested while
    #: nobody watched) before it asked, or more matches than its `limit` at once.
    missed: int


@dataclass(slots=True)
class _Chunk:
    """The events of one ingest request; an oversized one is held as its size (an int)."""

    first_seq: int
    received_at: float
    events: Sequence[bytes | int]
    size: int


class Tail:
    """The ring, its cursor and its viewers; used from the event loop only."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.monotonic = monotonic
        #: Sequence number of the last event accepted (counted even while unwatched).
        self.head = 0
        #: Whether the ring is kept: someone polled within WATCH_WINDOW_SEC.
        self.watched = False
        self._ring: deque[_Chunk] = deque()
        self._count = 0
        self._bytes = 0
        self._readers = 0
        self._last_poll = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._news = Broadcast()
        self._closed = False

    # --- the ingest side

    def offer(self, events: Sequence[bytes]) -> None:
        """Ingest accepted `events`: count them, and keep them if someone watches."""
        self.head += len(events)
        if not self.watched:
            return
        self._keep(events)

    def _keep(self, events: Sequence[bytes]) -> None:
        if len(events) > MAX_EVENTS:
            events = events[-MAX_EVENTS:]
        size = sum(map(len, events))
        held: Sequence[bytes | int] = events
        if size > MAX_EVENT_BYTES and max(map(len, events)) > MAX_EVENT_BYTES:
            held = [e if len(e) <= MAX_EVENT_BYTES else len(e) for e in events]
            size = sum(len(e) for e in held if isinstance(e, bytes))
        self._ring.append(_Chunk(self.head - len(events) + 1, self.clock(), held, size))
        self._count += len(events)
        self._bytes += size
        self._evict()
        self._news.notify()

    def _evict(self) -> None:
        while self._count > MAX_EVENTS or self._bytes > MAX_BYTES:
            oldest = self._ring[0]
            if len(self._ring) > 1:
                self._ring.popleft()
                self._count -= len(oldest.events)
                self._bytes -= oldest.size
                continue
            # One request alone is over a bound: keep the newest of its events that fit.
            sizes = [len(e) if isinstance(e, bytes) else 0 for e in oldest.events]
            drop, size = 0, oldest.size
            while size > MAX_BYTES or len(sizes) - drop > MAX_EVENTS:
                size -= sizes[drop]
                drop += 1
            events = oldest.events[drop:]
            self._ring[0] = _Chunk(oldest.first_seq + drop, oldest.received_at, events, size)
            self._count -= drop
            self._bytes = size

    # --- the viewers' side

    def read(self, after: int | None, limit: int, wanted: TailFilter) -> TailPage:
        """The newest `limit` of the events after `after` that match (after None:
        of those the ring holds, a viewer joining)."""
        oldest = self._ring[0].first_seq if self._ring else self.head + 1
        joining = after is None or after > self.head  # a new viewer, or a cursor of another run
        if after is None or joining:
            after, missed = oldest - 1, 0
        else:
            missed = max(0, oldest - 1 - after)
        newest_first: list[TailEvent] = []
        for chunk in reversed(self._ring):
            start = max(0, after + 1 - chunk.first_seq)
            for index in range(len(chunk.events) - 1, start - 1, -1):
                event = _matching(chunk, index, wanted)
                if event is not None:
                    newest_first.append(event)
            if chunk.first_seq <= after:
                break
        if not joining:  # a new viewer has missed nothing: it starts with the newest
            missed += max(0, len(newest_first) - limit)
        matching = newest_first[:limit]
        matching.reverse()
        return TailPage(matching, self.head, missed)

    async def poll(
        self, after: int | None, limit: int, wanted: TailFilter, wait: float
    ) -> TailPage:
        """`read`, holding up to `wait` seconds while nothing matches."""
        self._watch()
        deadline = self.monotonic() + wait
        missed = 0
        try:
            while True:
                generation = self._news.generation
                page = self.read(after, limit, wanted)
                missed += page.missed
                remaining = deadline - self.monotonic()
                if page.events or remaining <= 0 or self._closed:
                    return TailPage(page.events, page.last, missed)
                after = page.last
                await self._news.wait_past(generation, remaining)
        finally:
            self._readers -= 1
            self._last_poll = self.monotonic()

    @property
    def polls_waiting(self) -> int:
        """Viewers' polls held open now, waiting for events."""
        return self._news.waiting

    def close(self) -> None:
        """Answer every poll now and stop waiting (the relay is stopping)."""
        self._closed = True
        self._news.notify()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watch(self) -> None:
        self._readers += 1
        self.watched = True
        if self._timer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(WATCH_WINDOW_SEC, self._check_watched)

    def _check_watched(self) -> None:
        """Forget the ring once nobody has polled for WATCH_WINDOW_SEC."""
        self._timer = None
        idle = self.monotonic() - self._last_poll
        if self._readers or idle < WATCH_WINDOW_SEC:
            delay = WATCH_WINDOW_SEC - (0.0 if self._readers else idle)
            self._timer = asyncio.get_running_loop().call_later(delay, self._check_watched)
            return
        self.watched = False
        self._ring.clear()
        self._count = self._bytes = 0


def _matching(chunk: _Chunk, index: int, wanted: TailFilter) -> TailEvent | None:
    """The viewer's event at `index` of `chunk`, or None when the filter leaves it out."""
    item = chunk.events[index]
    seq = chunk.first_seq + index
    if isinstance(item, int):  # too large to hold: shown (as its size) without a filter only
        return TailEvent(seq, chunk.received_at, None, item) if wanted.empty else None
    if not wanted.empty and not wanted.matches(item):
        return None
    return TailEvent(seq, chunk.received_at, item, len(item))
