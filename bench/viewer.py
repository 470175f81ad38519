"""`--console-viewer`: one live-tail viewer of the web console during P1 and P2.

The system `cfylogs-viewer` is cfylogs as shipped with one viewer polling
`GET /api/v1/console/tail` the way the page does (a long poll of up to 20 s
for at most 200 events after its cursor, the whole answer parsed as JSON,
then 250 ms before the next poll when it had events),
in a thread of this process, for the whole timed load. It takes turns with
`cfylogs` in every round, so the report compares the two in the same
conditions ("console" lines). wrk blocks the event loop of this process
while it runs, hence a thread, and the stdlib's http.client: one request at
a time, keep-alive.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from typing import ClassVar
from urllib.parse import urlsplit

from bench.systems import Cfylogs, Load, Measure

#: As the page polls (src/cfylogs/console/static/tail.js): a long poll, and a pause
#: after an answer that had events.
WAIT_SEC = 20
LIMIT = 200
PAUSE_SEC = 0.25


class TailViewer:
    """Polls the tail until `stop`; counts what it saw and what it was told it missed."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.events = self.missed = self.polls = self.errors = 0
        self._done = threading.Event()
        self._conn = http.client.HTTPConnection(self.host, self.port, timeout=WAIT_SEC + 10)
        self._thread = threading.Thread(target=self._run, name="console-viewer", daemon=True)

    def start(self) -> TailViewer:
        self._thread.start()
        return self

    def stop(self) -> Measure:
        self._done.set()
        sock = self._conn.sock
        if sock is not None:  # ends a long poll still waiting (once the load is over)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(WAIT_SEC + 10)
        return {
            "console_viewer_events": self.events,
            "console_viewer_missed": self.missed,
            "console_viewer_polls": self.polls,
            "console_viewer_errors": self.errors,
        }

    def _run(self) -> None:
        conn = self._conn
        cursor: int | None = None
        try:
            while not self._done.is_set():
                after = "" if cursor is None else f"&after={cursor}"
                conn.request("GET", f"/api/v1/console/tail?wait={WAIT_SEC}&limit={LIMIT}{after}")
                response = conn.getresponse()
                body = response.read()
                self.polls += 1
                if response.status != 200:
                    self.errors += 1
                    continue
                page = json.loads(body)
                cursor = page["last"]
                self.events += len(page["events"])
                self.missed += page["missed"]
                if page["events"] or page["missed"]:
                    self._done.wait(PAUSE_SEC)
        except (OSError, http.client.HTTPException):
            if not self._done.is_set():  # else: the stop's own shutdown
                self.errors += 1
        finally:
            conn.close()


class CfylogsWithViewer(Cfylogs):
    """cfylogs with one console viewer on the live tail (P1 and P2 only)."""

    kinds: ClassVar[tuple[str, ...]] = ("ingest",)

    async def ingest(self, load: Load, batched: bool) -> Measure:
        assert self.server is not None
        viewer = TailViewer(self.server.url).start()
        try:
            result = await super().ingest(load, batched)
        finally:
            seen = viewer.stop()
        return {**result, **seen}
