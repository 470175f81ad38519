"""Raw HTTP/1.1 over a socket, for the tests that check what a client library hides
(pipelining, framing, malformed or hostile requests)."""

from __future__ import annotations

import json
import socket
from typing import Any

from tests.support import ServerProcess

Answer = tuple[bytes, dict[bytes, bytes], bytes]


def connect(server: ServerProcess, timeout: float = 30) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def request(
    method: str, path: str, body: bytes = b"", *headers: str, version: str = "1.1"
) -> bytes:
    """A request with a Content-Length body (none for an empty GET or DELETE)."""
    head = [f"{method} {path} HTTP/{version}", "Host: relay"]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    head += headers
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def post(body: bytes, *headers: str, version: str = "1.1") -> bytes:
    """`POST /api/v1/logs` of `body` as Logstash sends it."""
    return request(
        "POST", "/api/v1/logs", body, "Content-Type: application/json", *headers, version=version
    )


def chunked(body: bytes, size: int = 7) -> bytes:
    """`body` in chunks of `size` bytes, with the last chunk."""
    parts = [b"%x\r\n%b\r\n" % (len(piece), piece) for piece in _pieces(body, size)]
    return b"".join(parts) + b"0\r\n\r\n"


def _pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


class Reader:
    """Reads answers off a socket, each by its Content-Length, keeping what is left."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed {what}: {self.buffer[:200]!r}"
        self.buffer += chunk

    def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            self._fill("before an answer's head")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, value = line.split(b": ", 1)
            headers[name.lower()] = value
        length = int(headers[b"content-length"])
        while len(self.buffer) < length:
            self._fill("in a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def answers(self, count: int) -> list[Answer]:
        return [self.answer() for _ in range(count)]

    def closed(self) -> bool:
        """Whether the server closes the connection with nothing more to read."""
        if self.buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def read_answers(sock: socket.socket, count: int) -> list[Answer]:
    return Reader(sock).answers(count)


def status_of(answer: Answer) -> int:
    return int(answer[0].split(b" ")[1])


def error_of(answer: Answer) -> dict[str, Any]:
    """The spec's error body of an answer (checked to be that shape)."""
    body = json.loads(answer[2])
    assert set(body) == {"data", "error"} and body["data"] is None, body
    assert answer[1][b"content-type"] == b"application/json"
    error: dict[str, Any] = body["error"]
    assert error["code"] == (504 if status_of(answer) == 404 else status_of(answer))
    assert isinstance(error["message"], str) and error["message"]
    return error
