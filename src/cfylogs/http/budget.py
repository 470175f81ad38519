"""The request-body bytes held in memory at once, shared by every connection of a relay.

What counts is what a client has *sent*, never what it declares: a request
that announces 16 MiB and sends nothing holds nothing, so it costs the
other clients nothing (a budget booked on `Content-Length` let four such
requests stall every ingest until they timed out).

Bytes are counted as they arrive and given back when the request has been
answered. While the budget is spent, connections reading a body stop
reading (TCP then pushes back on their clients) until bytes are given back;
nobody is refused, since Cloudify 4's Logstash 1.5 drops what is refused.
Bytes are of two kinds: *reading* (a body still coming) and *settled* (a
body read whole, or what it decoded into, until its answer). Settled bytes
are given back by themselves; so when the budget is spent by reading bytes
alone, the connection that started reading its body first goes on, and
bodies that together exceed the budget complete one by one instead of
waiting for each other forever. `capacity` 0 means no budget.

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
        #: Of `used`, the bytes of requests read whole (given back once answered).
        self.settled = 0
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

    def add(self, nbytes: int, settled: bool = False) -> None:
        """Bytes now held in memory (already received: they are never refused)."""
        self.used += nbytes
        if settled:
            self.settled += nbytes

    def settle(self, nbytes: int) -> None:
        """A body of `nbytes` was read whole: its bytes go once it is answered."""
        self.settled += nbytes

    def release(self, nbytes: int, settled: bool) -> None:
        self.used -= nbytes
        if settled:
            self.settled -= nbytes
        if self._paused and not self.spent():
            self._resume_all()

    def spent(self) -> bool:
        return 0 < self.capacity <= self.used

    def may_read(self, reader: Reader) -> bool:
        """Whether `reader` may read more body bytes now; if not, it is resumed later."""
        if not self.spent():
            return True
        if not self.settled and next(iter(self._reading), None) is reader:
            return True  # only unfinished bodies hold it: the first one must go on
        self._paused[reader] = None
        return False

    def _resume_all(self) -> None:
        # Each one re-checks `may_read` after its next slice: whoever finds the budget
        # spent again waits again, so at most one slice each goes over.
        paused, self._paused = self._paused, {}
        for reader in paused:
            reader.resume_body()
