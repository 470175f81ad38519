"""Runs the listeners (uvicorn, httptools, uvloop) around one relay.

uvicorn is used as a library: one `uvicorn.Server` per listener, all in one
event loop and sharing the relay, with our own signal handling so that
SIGTERM and SIGINT stop every listener gracefully and the process exits 0
(uvicorn's own handler re-raises the signal after its shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cfylogs.config import Settings
from cfylogs.http.app import FAST_INGEST_MAX_BYTES, INGEST_PATH, App, HttpOptions, Response
from cfylogs.http.budget import ByteBudget
from cfylogs.metrics import Metrics
from cfylogs.relay import Relay, RelayOptions
from cfylogs.storage import create_storage
from cfylogs.tls import build_server_context, peer_subject

log = logging.getLogger("cfylogs")


@dataclass
class Listener:
    name: str
    app: App
    sock: socket.socket
    ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        scheme = "https" if self.ssl_context else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are handled once for all listeners, in `run`


def _timeout_response() -> bytes:
    body = (
        b'{"data":null,"error":{"code":408,"message":"the request was not received in time '
        b'(server.request_timeout_sec)"}}'
    )
    head = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    return head + b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body)


_TIMEOUT_RESPONSE = _timeout_response()


class _NoEvent:
    """uvicorn's protocol wakes its request cycle's reader; a fast ingest has none."""

    @staticmethod
    def set() -> None:
        pass


class _FastIngest:
    """A `POST /api/v1/logs` read whole by the protocol and answered without ASGI.

    It stands where uvicorn keeps its request cycle, with the attributes the
    protocol uses: the body grows by on_body, and shutdown, disconnection and
    keep-alive work as for any request.
    """

    __slots__ = (
        "body",
        "disconnected",
        "headers",
        "keep_alive",
        "message_event",
        "more_body",
        "response_complete",
        "response_started",
        "share",
    )

    def __init__(self, headers: dict[bytes, bytes], keep_alive: bool, share: int) -> None:
        self.headers = headers
        self.keep_alive = keep_alive
        #: What it holds of the ingest memory budget.
        self.share = share
        self.body = b""
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.message_event = _NoEvent


_INGEST_URL = INGEST_PATH.encode()
#: Requests with any of these go the ASGI way (streamed, decompressed, upgraded).
_NOT_FAST = frozenset((b"transfer-encoding", b"content-encoding", b"upgrade"))


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline to receive each request whole.

    uvicorn has no timeout for reading headers or a body: its keep-alive timer
    starts only after a response. A client that connects and sends nothing, half
    its headers, or a body byte by byte would hold a connection (and a file
    descriptor) for ever; past `request_timeout` from its connection or from the
    first byte of a request, it gets a 408 and is disconnected. Once a request is
    read whole the deadline is off: a long-poll may wait as long as it asked.
    """

    request_timeout: float = 60.0
    #: The listener's app, for the fast path of small ingest requests.
    fast_app: App | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_deadline = _Deadline(self.loop, self._timed_out)
        self._idle_deadline = _Deadline(self.loop, self.timeout_keep_alive_handler)
        self._request_deadline.arm(self.request_timeout)

    def on_message_begin(self) -> None:
        # uvicorn's, less the ASGI scope: made in on_headers_complete, and only for the
        # requests that go the ASGI way (not the fast path's single events).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._request_deadline.arm(self.request_timeout)

    def _start_scope(self) -> None:
        """uvicorn's scope for this request (its on_message_begin, keeping what was read)."""
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        self.scope["headers"] = headers

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._request_deadline.disarm()
        cycle: object = self.cycle
        if isinstance(cycle, _FastIngest) and not cycle.response_complete:
            task = self.loop.create_task(self._answer_fast(cycle))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)  # a graceful stop waits for it

    # --- the fast path: single events (Logstash `format => json`) skip ASGI

    def on_headers_complete(self) -> None:
        share = self._fast_share()
        if share is None:
            self._start_scope()
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.cycle = _FastIngest(dict(self.headers), keep_alive, share)  # type: ignore[assignment]

    def _fast_share(self) -> int | None:
        """Its share of the memory budget if this request can take the fast path.

        Only a plain `POST /api/v1/logs` with a small Content-Length body, when
        no earlier request of the connection is still being answered (pipelined
        ones queue the ASGI way) and the budget has room now (else it waits its
        turn the ASGI way). Everything else about it is the app's ingest.
        """
        app = self.fast_app
        if app is None or self.url != _INGEST_URL or self.expect_100_continue:
            return None
        if self.parser.get_method() != b"POST":
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None
        length = b""
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name in _NOT_FAST:
                return None
        limit = min(FAST_INGEST_MAX_BYTES, app.options.max_request_bytes)
        if not length.isdigit() or int(length) > limit or not app.ingest_allowed(self.headers):
            return None  # a refused token is answered the ASGI way, before any budget
        return app.options.ingest_budget.take_now(int(length))

    async def _answer_fast(self, cycle: _FastIngest) -> None:
        app = self.fast_app
        assert app is not None
        try:
            response = await app.ingest_read(cycle.headers, cycle.body, self.client)
        finally:
            app.options.ingest_budget.release(cycle.share)
            cycle.share = 0
        if cycle.disconnected or self.transport.is_closing():
            return
        keep_alive = cycle.keep_alive  # a graceful stop may have turned it off meanwhile
        self.transport.write(
            _http_response(response, keep_alive, self.server_state.default_headers)
        )
        if self.flow.write_paused:  # a client that does not read: stop reading it too
            await self.flow.drain()
        cycle.response_started = cycle.response_complete = True
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_deadline.close()
        self._idle_deadline.close()
        cycle: object = self.cycle
        if isinstance(cycle, _FastIngest) and cycle.more_body and self.fast_app is not None:
            # Gone (or timed out) before its body was whole: no task will give it back.
            self.fast_app.options.ingest_budget.release(cycle.share)
            cycle.share = 0
        super().connection_lost(exc)

    # uvicorn's keep-alive, with its timer kept across requests (see _Deadline)

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_deadline.disarm()
        self.flow.resume_reading()
        if self.pipeline:  # requests that came pipelined behind this one
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_deadline.arm(self.timeout_keep_alive)

    def _unset_keepalive_if_required(self) -> None:
        self._idle_deadline.disarm()

    def _timed_out(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


class _Deadline:
    """A deadline that requests push back: one timer, moved when it fires early.

    A timer made and cancelled for every request (uvicorn's keep-alive, our
    request timeout) is a good share of the cost of a single-event ingest.
    """

    __slots__ = ("_at", "_handle", "_loop", "_on_expiry")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self._at: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, delay: float) -> None:
        self._at = self._loop.time() + delay
        if self._handle is None:
            self._handle = self._loop.call_at(self._at, self._fire)

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
            self._handle = self._loop.call_at(self._at, self._fire)
            return
        self._at = None
        self._on_expiry()


@functools.lru_cache(maxsize=8)
def _default_head(default_headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """uvicorn's default headers (Date), rendered once per second."""
    return b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)


def _http_response(
    response: Response, keep_alive: bool, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """The whole answer in one write (uvicorn writes the head and the body apart)."""
    parts = [STATUS_LINE[response.status], _default_head(tuple(default_headers))]
    parts += [b"content-type: ", response.content_type, b"\r\n"]
    parts += [b"content-length: %d\r\n" % len(response.body)]
    for name, value in response.headers:
        parts += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += [b"\r\n", response.body]
    return b"".join(parts)


class _TlsHttpToolsProtocol(_GuardedHttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, plus the ASGI `tls` extension with the client subject.

    uvicorn does not fill `scope["extensions"]["tls"]`; the verified client
    certificate is on the connection's SSL object, read once per connection
    (the handshake is over when `connection_made` runs).
    """

    _tls: dict[object, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        subject = peer_subject(transport.get_extra_info("ssl_object"))
        self._tls = {"client_subject": subject, "client_cert_name": subject}

    def _start_scope(self) -> None:
        super()._start_scope()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}


def relay_options(settings: Settings) -> RelayOptions:
    return RelayOptions(
        batch_size=settings.buffer_size,
        max_batch_bytes=settings.buffer_max_batch_bytes,
        leased=settings.lease_enabled,
        lease_duration_sec=settings.lease_duration_sec,
        lease_check_every_sec=settings.lease_check_every_sec,
        revive_expired=settings.lease_revive_expired,
        accept=settings.ingest_accept,
        max_dead_letters=settings.ingest_max_dead_letters,
    )


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def http_options(settings: Settings, budget: ByteBudget, ingest_only: bool = False) -> HttpOptions:
    def token(value: str | None) -> bytes | None:
        return value.encode() if value else None

    return HttpOptions(
        max_request_bytes=settings.server_max_request_bytes,
        ingest_only=ingest_only,
        ingest_token=token(settings.security_ingest_token),
        consumer_token=token(settings.security_consumer_token),
        access_log=settings.server_access_log,
        ingest_budget=budget,
    )


def build_listeners(
    settings: Settings, relay: Relay, ssl_context: ssl.SSLContext | None = None
) -> list[Listener]:
    """`api` on server.port (HTTPS in SSL mode); in SSL mode also `http`, ingest only."""
    if settings.ssl_enabled and ssl_context is None:
        ssl_context = build_server_context(settings)
    main = bind(settings.server_address, settings.server_port)
    metrics = Metrics(relay)
    budget = ByteBudget(settings.server_max_ingest_bytes_in_flight)
    api = App(relay, http_options(settings, budget), metrics)
    listeners = [Listener("api", api, main, ssl_context)]
    if ssl_context is not None:
        # Cloudify's Logstash cannot push over HTTPS: it keeps a plain port, for ingest only.
        try:
            plain = bind(settings.server_address, settings.server_http_port)
        except OSError:
            main.close()
            raise
        ingest = App(relay, http_options(settings, budget, ingest_only=True), metrics)
        listeners.append(Listener("http", ingest, plain))
    return listeners


def _protocol(settings: Settings, listener: Listener) -> type[HttpToolsProtocol]:
    base = _TlsHttpToolsProtocol if listener.ssl_context else _GuardedHttpToolsProtocol
    timeout = float(settings.server_request_timeout_sec)
    attributes = {"request_timeout": timeout, "fast_app": listener.app}
    return type(base.__name__, (base,), attributes)


def _uvicorn_config(settings: Settings, listener: Listener) -> uvicorn.Config:
    config = uvicorn.Config(
        listener.app,
        loop="none",
        http=_protocol(settings, listener),
        lifespan="off",
        access_log=False,  # ours (HttpOptions.access_log) also has the duration
        log_config=None,
        timeout_keep_alive=settings.server_keep_alive_sec,
        timeout_graceful_shutdown=settings.server_shutdown_timeout_sec,
        server_header=False,
        date_header=True,
        # The client is the TCP peer on every path (the ingest fast path has no ASGI
        # middleware to read X-Forwarded-For), as the access log documents.
        proxy_headers=False,
    )
    config.load()
    config.ssl = listener.ssl_context
    return config


async def serve(settings: Settings) -> None:
    """Open the store, serve until SIGTERM/SIGINT, drain, close. Raises on start-up errors."""
    ssl_context = build_server_context(settings)  # before the store: a bad keystore opens nothing
    _hint_legacy_home(settings)
    relay = Relay(create_storage(settings), relay_options(settings))
    await relay.start()
    log.info("storage %s ready%s", settings.storage_backend, _where(settings))
    try:
        listeners = build_listeners(settings, relay, ssl_context)
    except BaseException:
        await relay.stop()
        raise
    servers = [_Server(_uvicorn_config(settings, lst)) for lst in listeners]
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        if any(s.should_exit for s in servers):
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            for server in servers:
                server.force_exit = True
        else:
            log.info("%s received: finishing requests in flight", signal.Signals(signum).name)
        relay.begin_shutdown()
        for server in servers:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        tasks = [
            asyncio.create_task(server.serve(sockets=[lst.sock]))
            for server, lst in zip(servers, listeners, strict=True)
        ]
        await _wait_started(servers, tasks)
        for lst in listeners:
            log.info("listening on %s (%s)", lst.url, lst.name)
        await asyncio.gather(*tasks)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await relay.stop()
        log.info("stopped")


def _hint_legacy_home(settings: Settings) -> None:
    """The Java server's home is the default home_directory too: say what is not served."""
    from cfylogs.cli.legacy import is_legacy_home
    from cfylogs.storage.sqlite import DB_FILE

    home = settings.home_directory
    if (
        settings.storage_backend == "sqlite"
        and is_legacy_home(home)
        and not (home / DB_FILE).exists()
    ):
        log.warning(
            "%s holds the Java alien4cloud-cfy-logs state: its registrations and pending "
            "batches are not served until imported; stop cfylogs and run "
            "`cfylogs import-legacy %s` (see docs/MIGRATION.md)",
            home,
            home,
        )


def _where(settings: Settings) -> str:
    # Never the PostgreSQL DSN: it may hold a password.
    return f" under {settings.home_directory}" if settings.storage_backend == "sqlite" else ""


async def _wait_started(servers: list[_Server], tasks: list[asyncio.Task[None]]) -> None:
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            return
        await asyncio.sleep(0.01)
