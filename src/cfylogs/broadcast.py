"""A broadcast to waiters on the event loop: every `notify` wakes every waiter once."""

from __future__ import annotations

import asyncio
import contextlib


class Broadcast:
    """Long polls wait on it (`wait_past`), ingest `notify`s it: the relay's consumers
    waiting for events, the console's live-tail viewers. Owned by the event loop."""

    def __init__(self) -> None:
        #: Grows at each notify: a waiter that read it before looking for news wakes
        #: at once if news came in between.
        self.generation = 0
        self._event = asyncio.Event()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Waiters holding on now (a gauge for /metrics)."""
        return self._waiting

    def notify(self) -> None:
        self.generation += 1
        if self._waiting:  # else nobody holds the event: keep it (once per ingest)
            event, self._event = self._event, asyncio.Event()
            event.set()

    async def wait_past(self, generation: int, timeout: float) -> None:
        """Return once `generation` is past, or after `timeout` seconds."""
        if self.generation != generation:
            return
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        finally:
            self._waiting -= 1
