"""Hostile load: 1,000 idle long-polls plus ingest, and clients that never finish a request.

Bounds are loose on purpose (a shared, noisy machine): they catch a server
that hangs or grows without limit, not one that is merely slow today.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, memory_bytes, wait_until

LONG_POLLS = 1000
#: About 70 MB here; a copy of the pending batch per waiting poll took it to 433 MB.
RSS_BOUND_BYTES = 200 * 1024**2
HEALTH_BOUND_SEC = 5.0
REQUEST_TIMEOUT_SEC = 2


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _pid(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def _health_seconds(server: ServerProcess) -> float:
    started = time.monotonic()
    with server.client(timeout=30) as client:
        assert client.get("/health").status_code == 200
    return time.monotonic() - started


async def _long_poll(host: str, port: int, registration_id: str, held: list[int]) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/v1/logs/{registration_id}?wait=60 HTTP/1.1\r\nHost: relay\r\n\r\n".encode()
    )
    await writer.drain()
    held.append(1)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    writer.close()
    return head.split(b" ", 2)[1] + b" " + body


async def _polls_then_ingest(server: ServerProcess, registration_id: str) -> list[bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    held: list[int] = []
    polls = [
        asyncio.create_task(_long_poll(host, int(port), registration_id, held))
        for _ in range(LONG_POLLS)
    ]
    await asyncio.to_thread(wait_until, lambda: len(held) == LONG_POLLS, 60)
    # All 1,000 are held open and idle: the server must still answer at once.
    assert await asyncio.to_thread(_health_seconds, server) < HEALTH_BOUND_SEC
    assert memory_bytes(_pid(server)) < RSS_BOUND_BYTES
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        pushes = [
            http.post("/api/v1/logs", content=json.dumps([{"i": i, "pad": "x" * 500}] * 20))
            for i in range(300)
        ]
        answers = await asyncio.gather(*pushes)
    assert all(r.status_code == 200 for r in answers)
    assert await asyncio.to_thread(_health_seconds, server) < HEALTH_BOUND_SEC
    return await asyncio.gather(*polls)


def test_a_thousand_idle_long_polls_and_ingest_keep_health_prompt_and_memory_bounded(
    server_factory: ServerFactory,
) -> None:
    server = server_factory().start()
    with server.client() as client:
        registration_id = Api(client).register()
    answers = asyncio.run(_polls_then_ingest(server, registration_id))
    # Ingest woke every long-poll: each got the same pending batch, byte for byte.
    assert len(set(answers)) == 1 and answers[0].startswith(b'200 {"id":0,')
    assert memory_bytes(_pid(server)) < RSS_BOUND_BYTES


def _raw_connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class Trickler(threading.Thread):
    """Sends a declared 10 kB body one byte at a time until the server hangs up."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.sock = _raw_connect(server)
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.sendall(
            b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Length: 10000\r\n\r\n{"
        )
        try:
            while not self.stop.wait(0.05):  # the slow client's pace, not synchronisation
                self.sock.sendall(b" ")
                self.sent += 1
        except OSError:
            return  # the server closed the connection: what the test wants


@pytest.fixture
def guarded(server_factory: ServerFactory) -> ServerProcess:
    return server_factory({"server": {"request_timeout_sec": REQUEST_TIMEOUT_SEC}}).start()


def test_unfinished_headers_and_silent_connections_are_closed_with_408(
    guarded: ServerProcess,
) -> None:
    with guarded.client() as client:
        api = Api(client)
        registration_id = api.register()
        assert api.push({"ok": 1}).status_code == 200
        assert api.drain(registration_id) == [{"ok": 1}]  # readers opened: the fds settle
        baseline = _open_fds(_pid(guarded))
        silent = [_raw_connect(guarded) for _ in range(20)]
        half = [_raw_connect(guarded) for _ in range(20)]
        for sock in half:
            sock.sendall(b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Le")
        wait_until(lambda: _open_fds(_pid(guarded)) >= baseline + 40, 10)
        assert api.push({"ok": 2}).status_code == 200  # others are served meanwhile
        assert api.drain(registration_id) == [{"ok": 2}]
    for sock in silent + half:
        answer = _read_until_closed(sock)  # returns only once the server hung up
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        sock.close()
    wait_until(lambda: _open_fds(_pid(guarded)) <= baseline, 10)


def test_a_body_trickled_byte_by_byte_is_cut_off_and_stores_nothing(
    guarded: ServerProcess,
) -> None:
    with guarded.client() as client:
        api = Api(client)
        registration_id = api.register()
        trickler = Trickler(guarded)
        trickler.start()
        assert api.push({"meanwhile": 1}).status_code == 200  # unaffected
        answer = _read_until_closed(trickler.sock)
        trickler.stop.set()
        trickler.join(10)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert trickler.sent < 10_000  # cut off long before the body was complete
        assert api.drain(registration_id) == [{"meanwhile": 1}]


def test_a_long_poll_may_wait_longer_than_the_request_timeout(guarded: ServerProcess) -> None:
    """The deadline covers receiving the request, not the answer it asked to wait for."""
    with guarded.client() as client:
        api = Api(client)
        registration_id = api.register()
        started = time.monotonic()
        r = client.get(f"/api/v1/logs/{registration_id}", params={"wait": REQUEST_TIMEOUT_SEC + 1})
        assert r.status_code == 200 and r.json() == {}
        assert time.monotonic() - started >= REQUEST_TIMEOUT_SEC + 1
