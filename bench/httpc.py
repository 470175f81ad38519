"""A small HTTP/1.1 keep-alive client over asyncio streams, for what wrk cannot do.

wrk measures closed-loop throughput; the paced (open-loop) ingest, the
drain and the end-to-end scenarios need a client that follows a schedule,
reads bodies and acknowledges batches. httpx costs about a millisecond per
request on this machine class; this client writes the request bytes itself
and reads `Content-Length` answers, which is all cfylogs ever sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self._reader = reader
        self._writer = writer
        self._host = host.encode()

    @classmethod
    async def open(cls, url: str) -> Conn:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port, limit=64 * 1024**2)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n" % (
            method.encode(),
            path.encode(),
            self._host,
        )
        self._writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self._reader.readexactly(length)

    async def ok(self, method: str, path: str, body: bytes = b"") -> bytes:
        status, answer = await self.request(method, path, body)
        if status != 200:
            raise HttpError(f"{method} {path}: {status} {answer[:200]!r}")
        return answer

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
