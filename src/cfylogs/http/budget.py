"""The request-body bytes held in memory at once, shared by every connection of a relay.

What counts is what a client has *sent*, never what it declares: a request
that announces 16 MiB and sends nothing holds nothing, so it costs the
other clients nothing (a budget booked on `Content-Length` let four such
requests stall every ingest until they timed out).

Bytes are counted as they arrive and given back when the request has been
answered. While the budget is spent, connections reading a body stop
reading (TCP then pushes back on their clients) until bytes are given back;
nobody is refused, since Cloudify 4's Logstash 1.5 drops what is refused.
The connection that started reading its body first always goes on, so
bodies that together exceed the budget still complete one by one instead
of waiting for each other forever. `capacity` 0 means no budget.

Owned by the event loop thread: every method is called from it.
"""

from __future__ import annotations

from typing import Protocol


class Reader(Protocol):
    """A connection reading a request body (see `http.protocol`)."""

    def resume_body(self) -> None:
        """Room was given back: read on."""


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        #: Connections with a body in progress, oldest first (a dict keeps order).
        self._reading: dict[Reader, None] = {}
        #: Connections that stopped reading until room is given back, in order.
        self._paused: dict[Reader, None] = {}

    @property
    def waiting(self) -> int:
        return len(self._paused)

    def start_body(self, reader: Reader) -> None:
        self._reading[reader] = None

    def end_body(self, reader: Reader) -> None:
        """Its body is whole (or abandoned): it no longer reads, nor waits."""
        self._reading.pop(reader, None)
        self._paused.pop(reader, None)
        if self._paused and not self.spent():
            self._resume_all()

    def add(self, nbytes: int) -> None:
        """Bytes now held in memory (already received: they are never refused)."""
        self.used += nbytes

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        if self._paused and not self.spent():
            self._resume_all()

    def spent(self) -> bool:
        return 0 < self.capacity <= self.used

    def may_read(self, reader: Reader) -> bool:
        """Whether `reader` may read more body bytes now; if not, it is resumed later."""
        if not self.spent() or next(iter(self._reading), None) is reader:
            return True
        self._paused[reader] = None
        return False

    def _resume_all(self) -> None:
        # Each one re-checks `may_read` after its next slice: whoever finds the budget
        # spent again waits again, so at most one slice each goes over.
        paused, self._paused = self._paused, {}
        for reader in paused:
            reader.resume_body()
