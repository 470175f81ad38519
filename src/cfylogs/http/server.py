"""Runs the listeners (uvicorn, httptools, uvloop) around one relay.

uvicorn is used as a library: one `uvicorn.Server` per listener, all in one
event loop and sharing the relay, with our own signal handling so that
SIGTERM and SIGINT stop every listener gracefully and the process exits 0
(uvicorn's own handler re-raises the signal after its shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cfylogs.config import Settings
from cfylogs.http.app import App, HttpOptions
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
    _request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_request_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_request_timer()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def _arm_request_timer(self) -> None:
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


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

    def on_message_begin(self) -> None:
        super().on_message_begin()
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
    return type(base.__name__, (base,), {"request_timeout": timeout})


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
    from cfylogs.legacy import is_legacy_home
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
