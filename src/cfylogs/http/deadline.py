"""A deadline that requests push back: one timer per connection, moved rather than remade."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Deadline:
    """A deadline that requests push back: one timer, moved when it fires early.

    Making and cancelling a timer for every request would be a good share of the
    cost of a single-event ingest.
    """

    __slots__ = ("_at", "_handle", "_handle_at", "_loop", "_on_expiry")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self._at: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0.0

    def arm(self, delay: float) -> None:
        at = self._at = self._loop.time() + delay
        if self._handle is not None and self._handle_at > at:
            self._handle.cancel()  # an earlier deadline than the timer's (keep-alive)
            self._handle = None
        if self._handle is None:
            self._handle_at = at
            self._handle = self._loop.call_at(at, self._fire)

    def disarm(self) -> None:
        self._at = None

    def close(self) -> None:
        self._at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._at is None:
            return
        if self._loop.time() < self._at:
            self._handle_at = self._at
            self._handle = self._loop.call_at(self._at, self._fire)
            return
        self._at = None
        try:
            self._on_expiry()
        except Exception:  # logged, not lost: a timer's error would otherwise hang a client
            log.exception("a connection's deadline failed")
