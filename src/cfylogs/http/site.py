"""What the connections of one listener share: their limits, and their graceful stop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cfylogs.http.budget import ByteBudget
from cfylogs.http.wire import DateHeader

if TYPE_CHECKING:
    from cfylogs.http.app import App
    from cfylogs.http.protocol import Connection


class Limits:
    """What every connection of a listener enforces (from the settings table)."""

    __slots__ = (
        "keep_alive",
        "max_discard_bytes",
        "max_header_bytes",
        "max_headers",
        "max_url_bytes",
        "request_timeout",
    )

    def __init__(
        self,
        max_url_bytes: int,
        max_header_bytes: int,
        max_headers: int,
        request_timeout: float,
        keep_alive: float,
        max_discard_bytes: int,
    ) -> None:
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.request_timeout = request_timeout
        self.keep_alive = keep_alive
        #: Most body bytes read and thrown away after an early refusal (401, 404...)
        #: to keep the connection; beyond, it is closed instead.
        self.max_discard_bytes = max_discard_bytes


class Site:
    """What the connections of one listener share, and their graceful stop."""

    def __init__(self, app: App, limits: Limits, budget: ByteBudget) -> None:
        self.app = app
        self.limits = limits
        self.budget = budget
        self.date = DateHeader()
        self.connections: set[Connection] = set()
        self.stopping = False
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    def connection(self) -> Connection:
        """The protocol factory for `loop.create_server`."""
        from cfylogs.http.protocol import Connection

        return Connection(self)

    def opened(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._all_closed.clear()

    def closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

    def begin_shutdown(self) -> None:
        """Read no new request; close idle connections now, the others once answered."""
        self.stopping = True
        for conn in tuple(self.connections):
            conn.shutdown()

    async def wait_closed(self, timeout: float) -> bool:
        """Whether every connection closed within `timeout`; those left are aborted."""
        try:
            await asyncio.wait_for(self._all_closed.wait(), timeout)
            return True
        except TimeoutError:
            for conn in tuple(self.connections):
                conn.abort()
            return False
