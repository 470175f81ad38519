"""Runs the listeners around one relay: open the store, serve, stop gracefully.

Each listener is an asyncio server (uvloop's event loop) whose connections
speak `http.protocol`; in SSL mode the HTTPS API port and the plain-HTTP
ingest port share one loop, one relay, one body budget and one set of
metrics. SIGTERM or SIGINT: stop accepting, answer long polls at once, let
the requests in flight finish (at most `server.shutdown_timeout_sec`), close
the store, exit 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
from dataclasses import dataclass

from cfylogs.config import Settings
from cfylogs.http.app import App, HttpOptions
from cfylogs.http.budget import ByteBudget
from cfylogs.http.site import Limits, Site
from cfylogs.metrics import Metrics
from cfylogs.relay import Relay, relay_options
from cfylogs.storage import create_storage
from cfylogs.tls import build_server_context

log = logging.getLogger("cfylogs")

#: Connections the kernel queues before they are accepted.
LISTEN_BACKLOG = 2048


@dataclass
class Listener:
    name: str
    site: Site
    sock: socket.socket
    ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        scheme = "https" if self.ssl_context else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def http_options(settings: Settings, ingest_only: bool = False) -> HttpOptions:
    def token(value: str | None) -> bytes | None:
        return value.encode() if value else None

    return HttpOptions(
        max_request_bytes=settings.server_max_request_bytes,
        ingest_only=ingest_only,
        ingest_token=token(settings.security_ingest_token),
        consumer_token=token(settings.security_consumer_token),
        access_log=settings.server_access_log,
        console=settings.console_enabled,
    )


def http_limits(settings: Settings) -> Limits:
    return Limits(
        max_url_bytes=settings.server_max_url_bytes,
        max_header_bytes=settings.server_max_header_bytes,
        max_headers=settings.server_max_headers,
        request_timeout=float(settings.server_request_timeout_sec),
        keep_alive=float(settings.server_keep_alive_sec),
        max_discard_bytes=settings.server_max_request_bytes,
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
    limits = http_limits(settings)
    api = App(relay, http_options(settings), metrics)
    listeners = [Listener("api", Site(api, limits, budget), main, ssl_context)]
    if ssl_context is not None:
        # Cloudify's Logstash cannot push over HTTPS: it keeps a plain port, for ingest only.
        try:
            plain = bind(settings.server_address, settings.server_http_port)
        except OSError:
            main.close()
            raise
        ingest = App(relay, http_options(settings, ingest_only=True), metrics)
        listeners.append(Listener("http", Site(ingest, limits, budget), plain))
    return listeners


async def serve(settings: Settings) -> None:
    """Open the store, serve until SIGTERM/SIGINT, drain, close. Raises on start-up errors."""
    ssl_context = build_server_context(settings)  # before the store: a bad keystore opens nothing
    relay = Relay(create_storage(settings), relay_options(settings))
    await relay.start()
    log.info("storage %s ready%s", settings.storage_backend, _where(settings))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            log.info("%s received: finishing requests in flight", name)
        else:
            log.warning("second %s: stopping now", name)
            for lst in listeners:
                for conn in tuple(lst.site.connections):
                    conn.abort()
        stop.set()

    try:
        listeners = build_listeners(settings, relay, ssl_context)
        servers = [
            await loop.create_server(
                lst.site.connection,
                sock=lst.sock,
                ssl=lst.ssl_context,
                ssl_handshake_timeout=float(settings.server_request_timeout_sec)
                if lst.ssl_context
                else None,
                backlog=LISTEN_BACKLOG,
            )
            for lst in listeners
        ]
    except BaseException:
        await relay.stop()
        raise
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    # What exists now (modules, settings, the store's state at start, the routes) lives as
    # long as the process: out of the cyclic collector's sight. Requests waiting for their
    # fsync outlive two young collections, so under load the oldest generation fills and a
    # full collection runs several times a second; each walked every object of the process
    # (about 15 ms here: P1's p99 was 14 ms instead of 4) and now walks only what came since.
    gc.freeze()
    try:
        for lst in listeners:
            log.info("listening on %s (%s)", lst.url, lst.name)
        await stop.wait()
        relay.begin_shutdown()  # long polls answer now
        for server in servers:
            server.close()
        for lst in listeners:
            lst.site.begin_shutdown()
        timeout = float(settings.server_shutdown_timeout_sec)
        waits = [lst.site.wait_closed(timeout) for lst in listeners]
        if not all(await asyncio.gather(*waits)):
            log.warning("requests still in flight after %ss: closed", int(timeout))
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await relay.stop()
        log.info("stopped")


def _where(settings: Settings) -> str:
    # Never the PostgreSQL DSN: it may hold a password.
    return f" under {settings.home_directory}" if settings.storage_backend == "sqlite" else ""
