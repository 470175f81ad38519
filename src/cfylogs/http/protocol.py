"""HTTP/1.1 connections, on the public API of httptools' parser (llhttp).

Every request of the API takes one path: the head is parsed and checked
against the limits, the app routes it and decides from the head alone what
it can (403, 404, 405, 401, 413), the body is read whole (counted in the
relay's body budget as it arrives), the app answers, and the answer is
written with a `Content-Length` in one buffer. What this module owns:

- Limits, checked while reading, before routing or auth: the URL
  (`server.max_url_bytes`, 414), the header block and the header count
  (`server.max_header_bytes`, `server.max_headers`, 431), the body (the
  route's limit, 413), and time: a request must arrive whole within
  `server.request_timeout_sec` of its first byte (408); an idle connection
  (no request in progress: bare CRLFs do not count) is closed after
  `server.keep_alive_sec`.
- Pipelining: answers go out in request order, one request answered at a
  time; parsing runs at most `MAX_PIPELINE` requests ahead, then reading
  pauses. A request the parser cannot read gets its error (400, 414, 431,
  505) after the answers of the requests before it, then the connection is
  closed: a client is never left without the answer to a request that was
  processed.
- `Upgrade` is ignored: we upgrade to nothing, and the bytes after such a
  request (its body included) stay one stream of HTTP requests.
- `Expect: 100-continue`, chunked bodies, HTTP/1.0 (keep-alive only when
  asked), half-closed clients (their answers are still written), clients
  that stop reading (we stop reading them), graceful shutdown (`Site`).
- A client going away is not an error: its pending answers are dropped,
  a long poll it was waiting on is cancelled, a write in progress finishes.

Owned by the event loop thread, like everything here.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools

from cfylogs.errors import (
    BadRequest,
    HeadersTooLarge,
    HttpVersionNotSupported,
    PayloadTooLarge,
    RelayError,
    RequestTimeout,
    URITooLong,
)
from cfylogs.http.deadline import Deadline
from cfylogs.http.wire import CONTINUE, Request, Response, encode_response
from cfylogs.tls import peer_subject

if TYPE_CHECKING:
    from cfylogs.http.site import Site

log = logging.getLogger(__name__)

#: Requests parsed ahead of the one being answered before reading pauses.
MAX_PIPELINE = 16
#: Bytes handed to the parser at a time: limits are checked between slices, so a
#: head or a body goes past its limit by at most this much before it is refused.
SLICE = 16 * 1024
#: Headers that may appear once only: two `Authorization` headers, say, would let
#: two parts of a system see two different callers (refused, 400).
SINGLE_HEADERS = frozenset(
    (b"authorization", b"content-length", b"content-type", b"content-encoding", b"host")
)

#: After answering with a close, what a client still sends is read and dropped for at
#: most this long or this much, so that it reads its answer before the connection is
#: gone (closing with unread input resets it, and the answer may be lost with it).
LINGER_SEC = 2.0
LINGER_BYTES = 4 * 1024**2

#: What the connection's one deadline is for now.
_REQUEST = 0  # a request is being read: 408 when it passes
_IDLE = 1  # nothing to do (or lingering): close when it passes
_WRITE = 2  # the client does not read its answers: abort when it passes

_PAUSE_BUDGET = 1
_PAUSE_PIPELINE = 2
_PAUSE_WRITE = 4


class Exchange(Request):
    """A request with what its connection needs to know while reading and answering it."""

    __slots__ = (
        "close",
        "complete",
        "discard",
        "early",
        "expect_continue",
        "http10",
        "parts",
        "size",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: dict[bytes, bytes],
        keep_alive: bool,
        client: tuple[str, int] | None,
        tls_subject: str | None,
        http10: bool = False,
    ) -> None:
        super().__init__(method, path, query, headers, keep_alive, client, tls_subject)
        self.http10 = http10
        #: Its body has been read whole.
        self.complete = False
        #: The answer the app decided from the head alone (its body is then not kept).
        self.early: RelayError | None = None
        self.discard = False
        #: Close the connection after answering it (nothing after it is read).
        self.close = False
        self.expect_continue = False
        self.size = 0
        self.parts: list[bytes] = []


class Connection(asyncio.Protocol):
    """One client connection: parse, check, hand to the app, answer in order."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.app = site.app
        self.limits = site.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client: tuple[str, int] | None = None
        self.tls = False
        self.tls_subject: str | None = None
        #: Requests whose head is read, in order; the first is the one answered next.
        self.queue: collections.deque[Exchange] = collections.deque()
        #: The request whose head or body is being read.
        self.reading: Exchange | None = None
        #: The request the app is answering (its task), if any.
        self.current: asyncio.Task[None] | None = None
        #: Received, not yet parsed (while paused).
        self.stash = b""
        self.pauses = 0
        self.reading_paused = False
        #: Whether the body budget knows this connection as reading a body.
        self.in_budget = False
        #: No further request is read (error, close, EOF, shutdown).
        self.stopped = False
        self.gone = False
        self.deadline = Deadline(self.loop, self._deadline_passed)
        self._deadline_mode = _REQUEST
        # The head being parsed.
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_count = 0
        self._header_bytes = 0
        self._head_bytes = 0
        self._in_head = False
        #: A made-up head fed to a new parser so that it reads the body of an Upgrade
        #: request (llhttp stops at its head), and whether it is being parsed now.
        self._upgrade_body_head: bytes | None = None
        self._synthetic = False
        #: The client shut its side (EOF); we shut ours and drop what it sends.
        self._eof = False
        #: Graceful stop: the body being read is the last thing read.
        self._last_request = False
        self._framing_bytes = 0
        self._trailer_count = self._trailer_bytes = 0
        self._lingering = False
        self._lingered = 0
        #: Fed while a head is not over, past which it is refused (431) even before
        #: on_header sees the line in progress; one slice of slack.
        self._max_head_bytes = self.limits.max_url_bytes + self.limits.max_header_bytes + SLICE

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        ssl_object = transport.get_extra_info("ssl_object")
        self.tls = ssl_object is not None
        self.tls_subject = peer_subject(ssl_object) if ssl_object is not None else None
        self.site.opened(self)
        # A connection that never sends a request is answered 408 like a slow one.
        self._arm(self.limits.request_timeout, _REQUEST)
        if self.site.stopping:
            self.shutdown()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            if self._lingering:
                self._lingered += len(data)
                if self._lingered > LINGER_BYTES and self.transport is not None:
                    self.transport.close()
            return
        if self.stash:
            data, self.stash = self.stash + data, b""
        self._feed(data)

    def eof_received(self) -> bool | None:
        # A client may send its requests and shut its side: its answers are still due.
        self.stopped = self._eof = True
        self._drop_partial_head(finish_bodies=False)
        if self._lingering or (not self.queue and self.current is None):
            self._close()
        else:
            self._next()
        return None if self.tls else True  # asyncio's TLS cannot stay half-open

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = self.stopped = True
        self.deadline.close()
        self._end_body()
        self.site.closed(self)
        answering = self.queue[0] if self.current is not None and self.queue else None
        for request in self.queue:
            if request is not answering:
                request.release()
        self.queue.clear()
        if answering is not None:
            self.queue.append(answering)  # its task releases it when done
            if answering.method in ("GET", "HEAD") and self.current is not None:
                self.current.cancel()  # a long poll nobody waits for any more

    def pause_writing(self) -> None:
        # A client that does not read its answers: stop reading its requests too, and
        # give it request_timeout_sec to read again.
        self.pauses |= _PAUSE_WRITE
        self._pause_reading()
        self._arm(self.limits.request_timeout, _WRITE)

    def resume_writing(self) -> None:
        self.pauses &= ~_PAUSE_WRITE
        if self._in_head or self.reading is not None:
            self._arm(self.limits.request_timeout, _REQUEST)
        elif self.current is None and not self.queue:
            self._arm(self.limits.keep_alive, _IDLE)
        else:
            self.deadline.disarm()
        self._resume()
        self._next()

    # --- the budget's reader

    def resume_body(self) -> None:
        self.pauses &= ~_PAUSE_BUDGET
        self.loop.call_soon(self._resume)

    # --- graceful stop

    def _close(self) -> None:
        """Close once the answers are written; a client still sending gets a moment to read
        them first (we half-close, and drop what it sends until it closes or lingers)."""
        transport = self.transport
        if transport is None or self.gone or self._lingering:
            if self._lingering and transport is not None and self._eof:
                transport.close()
            return
        self.stopped = True
        if self._eof:
            transport.close()
            return
        if not self.tls and transport.can_write_eof():
            transport.write_eof()  # TLS cannot half-close: it lingers with its side open
        self._lingering = True
        self.pauses = 0
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        self._arm(LINGER_SEC, _IDLE)

    def shutdown(self) -> None:
        """Read no new request. One whose head is read is read whole and answered (a
        refusal would be a loss for Logstash 1.5); one still in its head is forgotten."""
        self._drop_partial_head(finish_bodies=True)
        if self.reading is not None:
            self._last_request = True  # its body goes on; nothing after it is read
        else:
            self.stopped = True
        if self.current is None and not self.queue and self.transport is not None:
            self._close()
        else:
            self._next()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- feeding the parser

    def _feed(self, data: bytes) -> None:
        end = len(data)
        view: memoryview | None = None
        pos = 0
        while pos < end and not self.stopped:
            if self.pauses:
                self.stash = data[pos:]
                self._pause_reading()
                break
            if pos == 0 and end <= SLICE:
                piece: bytes | memoryview = data  # most reads: one whole request or more
            else:
                view = view or memoryview(data)
                piece = view[pos : pos + SLICE]
            reading = self.reading
            size_before = reading.size if reading is not None else -1
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade as exc:
                pos += int(exc.args[0])
                self._restart_parser()
                continue
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                if isinstance(cause, _StopParsing):
                    self.stopped = True
                elif not self.stopped:
                    self._refuse(cause if isinstance(cause, RelayError) else _malformed(exc))
                break
            except httptools.HttpParserError as exc:
                if not self.stopped:  # else: bytes after a request that closes: ignored
                    self._refuse(_malformed(exc))
                break
            pos += len(piece)
            if self._in_head:
                # One header line still in progress is invisible to on_header (the parser
                # gathers it): count what was fed while the head is not over.
                self._head_bytes += len(piece)
                if self._head_bytes > self._max_head_bytes:
                    self._refuse(self._headers_too_large())
                    break
            if reading is not None and self.reading is reading and reading.size == size_before:
                # Bytes of a body in progress that carried none of it: chunk framing or
                # trailers (which the parser gathers line by line, as it does headers).
                self._framing_bytes += len(piece)
                if self._framing_bytes > self._max_head_bytes:
                    self._refuse(self._headers_too_large())
                    break
            else:
                self._framing_bytes = 0
            reading = self.reading
            if reading is not None and reading.held and not reading.discard:
                # A body still coming after this slice: it reads on while the budget lets it.
                # (Most bodies arrive with their head and never get here.)
                if not self.in_budget:
                    self.in_budget = True
                    self.site.budget.start_body(self)
                if not self.site.budget.may_read(self):
                    self.pauses |= _PAUSE_BUDGET
        if self.pauses:
            self._pause_reading()  # now, not after one more read
        self._next()

    def _restart_parser(self) -> None:
        """After an Upgrade request: a new parser, since we upgrade to nothing."""
        self.parser = httptools.HttpRequestParser(self)
        head, self._upgrade_body_head = self._upgrade_body_head, None
        if head is not None:
            self._synthetic = True
            self.parser.feed_data(head)

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.gone:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.pauses or self.gone:
            return
        if self.stash and not self.stopped:
            data, self.stash = self.stash, b""
            self._feed(data)
        if not self.pauses and self.reading_paused and not self.stopped:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    # --- parser callbacks (httptools' HTTPProtocol)

    def on_message_begin(self) -> None:
        if self._synthetic:
            return
        if self.stopped or self._last_request:
            raise _StopParsing  # nothing is read after a request that ends the connection
        self._url = b""
        self._headers = {}
        self._header_count = self._header_bytes = self._head_bytes = 0
        self._in_head = True
        self._arm(self.limits.request_timeout, _REQUEST)

    def on_url(self, url: bytes) -> None:
        if self._synthetic:
            return
        self._url += url
        if len(self._url) > self.limits.max_url_bytes:
            raise URITooLong(
                f"the request's URL is longer than {self.limits.max_url_bytes} bytes "
                "(server.max_url_bytes)"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._synthetic:
            return
        if not self._in_head:
            self._on_trailer(name, value)
            return
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if (
            self._header_count > self.limits.max_headers
            or self._header_bytes > self.limits.max_header_bytes
        ):
            raise self._headers_too_large()
        name = name.lower()
        headers = self._headers
        if name in headers:
            if name in SINGLE_HEADERS:
                raise BadRequest(f"the request has more than one {name.decode()} header")
            headers[name] += b", " + value
        else:
            headers[name] = value

    def _on_trailer(self, name: bytes, value: bytes) -> None:
        """A trailer field of a chunked body: bounded like the head, and dropped, never
        merged into the headers the app has already judged (RFC 9110, 6.5.1)."""
        self._trailer_count += 1
        self._trailer_bytes += len(name) + len(value) + 4
        if (
            self._trailer_count > self.limits.max_headers
            or self._trailer_bytes > self.limits.max_header_bytes
        ):
            raise self._headers_too_large()

    def on_headers_complete(self) -> None:
        if self._synthetic:
            self._synthetic = False
            return
        self._in_head = False
        self._trailer_count = self._trailer_bytes = self._framing_bytes = 0
        parser = self.parser
        raw_path, _, query = self._url.partition(b"?")
        if raw_path[:1] != b"/" and b"://" in raw_path:  # absolute form (RFC 9112, 3.2.2)
            authority_and_path = raw_path.split(b"://", 1)[1]
            slash = authority_and_path.find(b"/")
            raw_path = authority_and_path[slash:] if slash >= 0 else b"/"
        path = raw_path.partition(b"#")[0].decode("latin-1")
        if "%" in path:
            path = unquote(path)
        headers = self._headers
        keep_alive = parser.should_keep_alive()
        version = parser.get_http_version()
        request = Exchange(
            parser.get_method().decode("ascii"),
            path,
            query.partition(b"#")[0],
            headers,
            keep_alive,
            self.client,
            self.tls_subject,
            http10=version == "1.0",
        )
        request.budget = self.site.budget
        self.reading = request
        self.queue.append(request)
        length = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        has_body = chunked or (length is not None and length.strip(b"0") != b"")
        error: RelayError | None
        if version not in ("1.1", "1.0"):  # llhttp also takes 0.9 and 2.0 heads
            error = HttpVersionNotSupported(f"HTTP/{version} is not served: use HTTP/1.1")
            request.close = self.stopped = True
        else:
            error = self.app.prepare(request)
        if error is None and length is not None and int(length) > request.body_limit:
            error = PayloadTooLarge(
                f"the request body ({int(length)} bytes) is larger than {request.body_limit} bytes"
            )
        if parser.should_upgrade():
            if request.method == "CONNECT":  # its bytes are a tunnel: nothing to read on
                request.close = self.stopped = True
            elif has_body:
                framing = (
                    b"transfer-encoding: chunked"
                    if chunked
                    else b"content-length: " + (length or b"0")
                )
                self._upgrade_body_head = b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n"
        # An HTTP/1.0 client's expectation is ignored (RFC 9110, 10.1.1).
        expect = not request.http10 and headers.get(b"expect", b"").lower() == b"100-continue"
        if error is not None:
            request.early = error
            if has_body:
                request.discard = True
                declared = int(length) if length is not None else 0
                if (
                    isinstance(error, PayloadTooLarge)
                    or expect
                    or declared > self.limits.max_discard_bytes
                ):
                    # Not worth reading (or not coming): answer now, then close.
                    request.close = self.stopped = True
        elif has_body:
            # GET, HEAD and DELETE of this API take no body: read past it, keep nothing.
            request.discard = request.method in ("GET", "HEAD", "DELETE")
            request.expect_continue = expect
        if request.close:
            self.reading = None

    def on_body(self, body: bytes) -> None:
        request = self.reading
        if request is None:
            return
        size = request.size + len(body)
        if request.discard:
            request.size = size
            if size > self.limits.max_discard_bytes:
                if request.early is None:
                    request.early = PayloadTooLarge(
                        f"the request body is larger than {self.limits.max_discard_bytes} bytes"
                    )
                request.close = self.stopped = True
                self.reading = None
            return
        if size > request.body_limit:
            request.early = PayloadTooLarge(
                f"the request body is larger than {request.body_limit} bytes"
            )
            request.discard = request.close = self.stopped = True
            request.parts = []
            request.release()
            self._end_body()
            self.reading = None
            return
        request.parts.append(body)
        request.size = size
        request.hold(len(body))

    def on_message_complete(self) -> None:
        request = self.reading
        if request is None or self._upgrade_body_head is not None:
            return  # an Upgrade request's body: read by the next parser (_restart_parser)
        self.reading = None
        request.complete = True
        request.settle()
        parts = request.parts
        if parts:
            request.body = parts[0] if len(parts) == 1 else b"".join(parts)
            request.parts = []
            self._end_body()
        if not request.keep_alive or self._last_request:
            self.stopped = True  # nothing after a request that closes the connection
        if len(self.queue) > MAX_PIPELINE:
            self.pauses |= _PAUSE_PIPELINE
        if self.current is None:
            self.deadline.disarm()

    # --- answering

    def _next(self) -> None:
        """Answer the first request of the queue if it can be, in order."""
        while self.current is None and self.queue and not self.pauses & _PAUSE_WRITE:
            request = self.queue[0]
            if request.early is not None:
                if not (request.complete or request.close):
                    return  # its body is still coming (and being discarded)
                self._send(request, self.app.refusal(request, request.early))
                continue
            if not request.complete:
                if request.expect_continue and self.transport is not None:
                    request.expect_continue = False
                    self.transport.write(CONTINUE)
                return
            self.current = self.loop.create_task(self._answer(request))
            return
        if self.current is None and not self.queue and self.reading is None and self.stopped:
            self._close()

    async def _answer(self, request: Exchange) -> None:
        try:
            response = await self.app.handle(request)
        except asyncio.CancelledError:
            return  # the client went away
        finally:
            self.current = None
            request.release()
        try:
            self._send(request, response)
            self._next()
        except Exception:  # a bug here must not leave the connection hanging
            log.exception("could not answer %s %s", request.method, request.path)
            self.abort()

    def _send(self, request: Exchange, response: Response) -> None:
        if self.queue and self.queue[0] is request:
            self.queue.popleft()
        request.release()
        transport = self.transport
        if self.gone or transport is None or transport.is_closing():
            return
        keep_alive = not (request.close or (self.stopped and not self.queue))
        connection = (b"keep-alive" if request.http10 else None) if keep_alive else b"close"
        date = self.site.date.line()
        # write() keeps a reference to a large body rather than a copy (writelines may
        # join): a thousand answers of one pending batch share its bytes.
        for buffer in encode_response(response, connection, date, request.method == "HEAD"):
            transport.write(buffer)
        if not keep_alive:
            self._close()
            return
        if not self.queue and self.reading is None and not self._in_head:
            # Idle from now on: bytes that are no request (bare CRLFs) do not push it back.
            self._arm(self.limits.keep_alive, _IDLE)
        if self.pauses & _PAUSE_PIPELINE and len(self.queue) <= MAX_PIPELINE // 2:
            self.pauses &= ~_PAUSE_PIPELINE
            self.loop.call_soon(self._resume)

    def _refuse(self, error: RelayError) -> None:
        """What follows the requests read so far cannot be read: answer `error` after
        them, then close."""
        self.stopped = True
        self._pause_reading()
        request = self.reading
        if request is None:
            request = Exchange("-", "-", b"", {}, False, self.client, self.tls_subject)
            self.queue.append(request)
        else:
            self.reading = None
            request.parts = []
            request.release()
            self._end_body()
        if request.early is None:  # a refusal decided earlier stands (a 413, say)
            request.early = error
        request.close = True
        self._in_head = False

    def _end_body(self) -> None:
        if self.in_budget:
            self.in_budget = False
            self.site.budget.end_body(self)

    def _drop_partial_head(self, finish_bodies: bool) -> None:
        """No more is read: forget a request still in its head; one refused from its head
        is answered now; a body in progress goes on if `finish_bodies`, else is forgotten."""
        request = self.reading
        if request is not None and not request.complete:
            if request.early is not None:
                request.close = True
                self.reading = None
            elif not finish_bodies:
                self.reading = None
                if self.queue and self.queue[-1] is request:
                    self.queue.pop()
                request.release()
                self._end_body()
        self._in_head = False

    # --- time

    def _arm(self, delay: float, mode: int) -> None:
        self._deadline_mode = mode
        self.deadline.arm(delay)

    def _deadline_passed(self) -> None:
        if self.gone or self.transport is None:
            return
        if self._deadline_mode == _WRITE:
            self.transport.abort()  # its answers were not read for request_timeout_sec
            return
        if self._deadline_mode == _IDLE:
            if self._lingering or (self.current is None and not self.queue and not self._in_head):
                if self.transport.get_write_buffer_size():
                    self.transport.abort()  # close() would wait for a client that never reads
                else:
                    self.transport.close()
            return
        if self.reading is None and not self._in_head and self.queue:
            return  # every request is read; the app is answering them
        self._refuse(
            RequestTimeout(
                "the request was not received whole in time (server.request_timeout_sec)"
            )
        )
        self._next()

    def _headers_too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"the request's headers are larger than {self.limits.max_header_bytes} bytes or "
            f"more than {self.limits.max_headers} (server.max_header_bytes, server.max_headers)"
        )


class _StopParsing(Exception):
    """Raised in a parser callback to stop parsing what comes after the last request."""


def _malformed(exc: Exception) -> RelayError:
    reason = str(exc) or type(exc).__name__
    if "version" in reason.lower() or "PRI" in reason:
        return HttpVersionNotSupported(f"this server speaks HTTP/1.1 and HTTP/1.0 only ({reason})")
    return BadRequest(f"malformed HTTP request: {reason}")
