"""A small in-memory history of the relay's rates and backlog, for the console's charts.

One sample every `INTERVAL_SEC` (5 s); the last `CAPACITY` (720: one hour)
are kept, so the charts are filled when a page opens. A sample holds the
rates of events received, delivered and acknowledged since the previous one
(from the relay's counters) and the backlog (events and bytes) of every
registration, read from the store like `GET /api/v1/registration` does: one
read every 5 s, whoever watches. Per-registration backlog series are kept
for the first `MAX_TRACKED` registrations (oldest first).

It lives in memory only: a restarted relay starts a new history (its
counters start again too), and with a shared PostgreSQL store each relay
has its own history of its own counters (the backlog is the shared one).
About 500 KiB when full with 50 registrations tracked (tracemalloc).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cfylogs.errors import StorageUnavailable

if TYPE_CHECKING:
    from cfylogs.relay import Relay

log = logging.getLogger(__name__)

INTERVAL_SEC = 5.0
CAPACITY = 720
MAX_TRACKED = 50


@dataclass(frozen=True, slots=True)
class Sample:
    #: Unix time of the sample.
    at: float
    received_per_sec: float
    delivered_per_sec: float
    acknowledged_per_sec: float
    #: Over every registration; None when the store did not answer.
    backlog_events: int | None
    backlog_bytes: int | None


@dataclass(slots=True)
class _Series:
    """One registration's backlog (events); values cover samples [end - len, end)."""

    end: int
    values: deque[int | None]


@dataclass(frozen=True)
class HistoryWindow:
    samples: list[Sample]
    #: Registration id -> its backlog at each of `samples` (None before it was tracked).
    backlogs: dict[str, list[int | None]]


class History:
    def __init__(
        self,
        relay: Relay,
        interval: float = INTERVAL_SEC,
        capacity: int = CAPACITY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.relay = relay
        self.interval = interval
        self.capacity = capacity
        self.monotonic = monotonic
        self._samples: deque[Sample] = deque(maxlen=capacity)
        #: Samples taken so far (the number of the next one).
        self._taken = 0
        self._series: dict[str, _Series] = {}
        self._previous: tuple[float, int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cfylogs-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # keep sampling: the next one may work
                log.exception("console history: sample failed")
            await asyncio.sleep(self.interval)

    async def sample(self) -> Sample:
        """Take one sample now (the task does every `interval`)."""
        counters = self.relay.counters
        now = self.monotonic()
        counts = (
            counters.events_received,
            counters.events_delivered,
            counters.events_acknowledged,
        )
        rates = self._rates(now, counts)
        self._previous = (now, *counts)
        try:
            registrations = await self.relay.registrations()
        except StorageUnavailable:
            registrations = None
        number = self._taken
        if registrations is None:
            backlog_events = backlog_bytes = None
            for series in self._series.values():
                self._append(series, number, None)
        else:
            backlog_events = sum(r.backlog_events for r in registrations)
            backlog_bytes = sum(r.backlog_bytes for r in registrations)
            tracked = registrations[:MAX_TRACKED]
            self._series = {r.id: self._series.get(r.id) or self._new_series() for r in tracked}
            for reg in tracked:
                self._append(self._series[reg.id], number, reg.backlog_events)
        # Rounded as the API shows it, so that `window(after=)` of a shown time is exact.
        sample = Sample(round(self.relay.clock(), 3), *rates, backlog_events, backlog_bytes)
        self._samples.append(sample)
        self._taken += 1
        return sample

    def _rates(self, now: float, counts: tuple[int, int, int]) -> tuple[float, float, float]:
        if self._previous is None or now <= self._previous[0]:
            return (0.0, 0.0, 0.0)
        elapsed = now - self._previous[0]
        before = self._previous[1:]
        return tuple(  # type: ignore[return-value]
            round(max(0, c - b) / elapsed, 1) for c, b in zip(counts, before, strict=True)
        )

    def _new_series(self) -> _Series:
        return _Series(self._taken, deque(maxlen=self.capacity))

    def _append(self, series: _Series, number: int, value: int | None) -> None:
        if series.end != number:  # it was not tracked at the previous sample: start again
            series.values.clear()
        series.values.append(value)
        series.end = number + 1

    def window(self, after: float | None = None) -> HistoryWindow:
        """The samples taken after Unix time `after` (all when None)."""
        samples = list(self._samples)
        skip = 0
        if after is not None:
            while skip < len(samples) and samples[skip].at <= after:
                skip += 1
        samples = samples[skip:]
        first = self._taken - len(samples)  # the number of samples[0]
        backlogs: dict[str, list[int | None]] = {}
        for reg_id, series in self._series.items():
            start = series.end - len(series.values)
            values = list(series.values)
            backlogs[reg_id] = [
                values[n - start] if start <= n < series.end else None
                for n in range(first, self._taken)
            ]
        return HistoryWindow(samples, backlogs)
