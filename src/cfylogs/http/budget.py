"""A budget of request-body bytes held in memory at once, shared by every listener."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator


class ByteBudget:
    """Makes large ingest requests take turns instead of all being held at once.

    A request waits for its share before its body is read, so TCP pushes back on
    the client while it waits. It is never refused: Cloudify 4's Logstash 1.5
    drops what is refused. Shares are granted in arrival order; one larger than
    the whole budget still goes, alone. `capacity` 0 means no budget.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        if self.capacity <= 0:
            yield
            return
        share = min(size, self.capacity)
        if self._waiters or self.used + share > self.capacity:
            await self._wait(share)
        else:
            self.used += share
        try:
            yield
        finally:
            self._release(share)

    def take_now(self, size: int) -> int | None:
        """The share for `size` if it is free now and nobody waits (give it back with
        `release`), else None: the caller goes the waiting way, `hold`."""
        if self.capacity <= 0:
            return 0
        share = min(size, self.capacity)
        if self._waiters or self.used + share > self.capacity:
            return None
        self.used += share
        return share

    def release(self, share: int) -> None:
        if share:
            self._release(share)

    async def _wait(self, share: int) -> None:
        granted = asyncio.get_running_loop().create_future()
        entry = (share, granted)
        self._waiters.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(share)  # granted just as it was cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._grant()  # it may have been first in line
            raise

    def _release(self, share: int) -> None:
        self.used -= share
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            share, granted = self._waiters.popleft()
            if not granted.done():
                self.used += share
                granted.set_result(None)
