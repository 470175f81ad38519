"""What goes on the wire: requests as the protocol hands them over, answers as bytes.

`Request` and `Response` are the only HTTP types the application sees.
Every answer, errors included, is written by `encode_response`: a status
line, a `Date`, `Content-Type`, a `Content-Length` (never chunked, never
204: Cloudify 4's Logstash 1.5 hangs on those) and the body, in one buffer.
"""

from __future__ import annotations

import http
import time
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from cfylogs.http.budget import ByteBudget

JSON = b"application/json"

#: `HTTP/1.1 <code> <phrase>\r\n` for every status Python knows.
STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in http.HTTPStatus
}
#: Bodies at most this long are sent in one buffer with the head; longer ones in two
#: writes (joining would copy a whole batch for nothing).
_JOIN_MAX = 64 * 1024


class Request:
    """One request: its head as parsed, and its body once read whole.

    Header names are lower-case; a repeated header is joined with `, `
    (RFC 9110), except the ones that must be single, which the protocol
    refuses twice (see `SINGLE_HEADERS`).
    """

    __slots__ = (
        "body",
        "body_limit",
        "budget",
        "client",
        "headers",
        "held",
        "keep_alive",
        "method",
        "params",
        "path",
        "query",
        "route",
        "settled",
        "tls_subject",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: dict[bytes, bytes],
        keep_alive: bool = True,
        client: tuple[str, int] | None = None,
        tls_subject: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.keep_alive = keep_alive
        self.client = client
        #: The subject of the client's verified certificate (mutual TLS), if any.
        self.tls_subject = tls_subject
        self.body = b""
        #: Set by the app when it routes the request (`App.prepare`).
        self.route: object = None
        self.params: list[str] = []
        self.body_limit = 0
        #: Bytes of this request counted in the relay's body budget (given back once
        #: answered).
        self.held = 0
        #: Whether its body is read whole (its bytes then go once it is answered).
        self.settled = False
        self.budget: ByteBudget | None = None

    def header(self, name: bytes) -> str:
        return self.headers.get(name, b"").decode("latin-1")

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))

    def hold(self, nbytes: int) -> None:
        """Count `nbytes` more of memory against the body budget until answered (e.g. a
        decompressed body)."""
        if self.budget is not None:
            self.budget.add(nbytes, self.settled)
            self.held += nbytes

    def settle(self) -> None:
        """Its body is read whole."""
        if self.budget is not None and not self.settled:
            self.settled = True
            self.budget.settle(self.held)

    def release(self) -> None:
        if self.budget is not None and self.held:
            self.budget.release(self.held, self.settled)
        self.held = 0


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes | memoryview,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = JSON,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers or []
        self.content_type = content_type


class DateHeader:
    """`Date: ...\\r\\n`, rendered once per second (RFC 9110 asks for it on every answer)."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
        return self._line


def encode_response(
    response: Response, connection: bytes | None, date: bytes, head_only: bool = False
) -> list[bytes | memoryview]:
    """The buffers to write for `response` (one, or head and a large body); `connection`
    is the value of a `Connection` header to add (`close`, `keep-alive`), if any."""
    body = response.body
    head: list[bytes | memoryview] = [
        STATUS_LINES.get(response.status) or b"HTTP/1.1 %d Unknown\r\n" % response.status,
        date,
        b"content-type: ",
        response.content_type,
        b"\r\ncontent-length: %d\r\n" % len(body),
    ]
    for name, value in response.headers:
        head += (name, b": ", value, b"\r\n")
    if connection is not None:
        head += (b"connection: ", connection, b"\r\n")
    head.append(b"\r\n")
    if head_only or not body:
        return [b"".join(head)]
    if len(body) <= _JOIN_MAX:
        head.append(body)
        return [b"".join(head)]
    return [b"".join(head), body]


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
