"""`Client` (blocking) and `AsyncClient` (asyncio) over httpx: one method per API call."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from cfylogs import __version__
from cfylogs.client import calls
from cfylogs.client.errors import TransportError
from cfylogs.client.models import (
    AckResult,
    Batch,
    DeadLetterPage,
    Health,
    Registration,
    ReplayResult,
)

T = TypeVar("T")
DEFAULT_TIMEOUT_SEC = 30.0


@dataclass(frozen=True)
class TlsOptions:
    """How to check the server (`cafile`) and prove who we are (`certfile`, `keyfile`)."""

    cafile: Path | str | None = None
    certfile: Path | str | None = None
    keyfile: Path | str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.certfile:
            context.load_cert_chain(str(self.certfile), str(self.keyfile) if self.keyfile else None)
        return context


def _client_options(
    url: str, token: str | None, tls: TlsOptions | None, timeout: float
) -> dict[str, Any]:
    headers = {"user-agent": f"cfylogs-client/{__version__}", "accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    options: dict[str, Any] = {
        "base_url": url.rstrip("/"),
        "headers": headers,
        "timeout": httpx.Timeout(timeout),
    }
    if tls is not None:
        options["verify"] = tls.context()
    return options


def _request_options(call: calls.Call[Any], timeout: float) -> dict[str, Any]:
    options: dict[str, Any] = {
        "params": call.params,
        "content": call.content,
        "headers": call.headers,
    }
    if call.held_for:
        options["timeout"] = httpx.Timeout(timeout, read=timeout + call.held_for)
    return options


def _transport_error(call: calls.Call[Any], exc: httpx.TransportError) -> TransportError:
    return TransportError(f"{call.method} {call.path} failed: {exc or type(exc).__name__}")


class Client:
    """A blocking client of one cfylogs server.

    >>> with Client("http://127.0.0.1:8200") as client:
    ...     registration = client.register("my-orchestrator")
    ...     batch = client.fetch(registration, wait=30)
    ...     if batch is not None:
    ...         handle(batch.entries)
    ...         client.ack(registration, batch.id)

    Every method raises a `cfylogs.client.ClientError` on failure.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        tls: TlsOptions | None = None,
        timeout: float = DEFAULT_TIMEOUT_SEC,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._http = httpx.Client(**_client_options(url, token, tls, timeout), transport=transport)

    def send(self, call: calls.Call[T]) -> T:
        """Send one call and read its answer (the methods below are shortcuts for this)."""
        try:
            response = self._http.request(
                call.method, call.path, **_request_options(call, self.timeout)
            )
        except httpx.TransportError as exc:
            raise _transport_error(call, exc) from exc
        return call.read(response.status_code, response.headers, response.content)

    def register(self, name: str | None = None) -> str:
        """A new registration's id; it receives events ingested from now on."""
        return self.send(calls.register(name))

    def unregister(self, registration_id: str) -> None:
        """Remove a registration and its backlog."""
        self.send(calls.unregister(registration_id))

    def fetch(
        self, registration_id: str, wait: float = 0.0, max_entries: int | None = None
    ) -> Batch | None:
        """The pending batch (the same until acknowledged), or None; `wait` long-polls."""
        return self.send(calls.fetch(registration_id, wait, max_entries))

    def ack(self, registration_id: str, batch_id: int) -> AckResult:
        """Acknowledge a batch; idempotent."""
        return self.send(calls.ack(registration_id, batch_id))

    def push(self, events: Iterable[bytes | Mapping[str, Any]], *, gzip: bool = False) -> int:
        """Send events (raw JSON objects or mappings) in one request; returns how many."""
        return self.send(calls.push(events, gzip))

    def registrations(self) -> list[Registration]:
        return self.send(calls.registrations())

    def health(self) -> Health:
        """The server's health; `Health.ok` is False when its store does not answer."""
        return self.send(calls.health())

    def dead_letters(self, after: int = 0, limit: int = 100) -> DeadLetterPage:
        """A page of the events `ingest.accept` kept from consumers, ids above `after`."""
        return self.send(calls.dead_letters(after, limit))

    def replay_dead_letters(self, ids: Iterable[int] | None) -> ReplayResult:
        """Move dead letters `ids` (None: every one) into the stream, as if ingested now."""
        return self.send(calls.replay_dead_letters(ids))

    def purge_dead_letters(self, ids: Iterable[int] | None) -> int:
        """Delete dead letters `ids` (None: every one) for good; returns how many."""
        return self.send(calls.purge_dead_letters(ids))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`: same methods, awaited."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        tls: TlsOptions | None = None,
        timeout: float = DEFAULT_TIMEOUT_SEC,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            **_client_options(url, token, tls, timeout), transport=transport
        )

    async def send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, **_request_options(call, self.timeout)
            )
        except httpx.TransportError as exc:
            raise _transport_error(call, exc) from exc
        return call.read(response.status_code, response.headers, response.content)

    async def register(self, name: str | None = None) -> str:
        return await self.send(calls.register(name))

    async def unregister(self, registration_id: str) -> None:
        await self.send(calls.unregister(registration_id))

    async def fetch(
        self, registration_id: str, wait: float = 0.0, max_entries: int | None = None
    ) -> Batch | None:
        return await self.send(calls.fetch(registration_id, wait, max_entries))

    async def ack(self, registration_id: str, batch_id: int) -> AckResult:
        return await self.send(calls.ack(registration_id, batch_id))

    async def push(self, events: Iterable[bytes | Mapping[str, Any]], *, gzip: bool = False) -> int:
        return await self.send(calls.push(events, gzip))

    async def registrations(self) -> list[Registration]:
        return await self.send(calls.registrations())

    async def health(self) -> Health:
        return await self.send(calls.health())

    async def dead_letters(self, after: int = 0, limit: int = 100) -> DeadLetterPage:
        return await self.send(calls.dead_letters(after, limit))

    async def replay_dead_letters(self, ids: Iterable[int] | None) -> ReplayResult:
        return await self.send(calls.replay_dead_letters(ids))

    async def purge_dead_letters(self, ids: Iterable[int] | None) -> int:
        return await self.send(calls.purge_dead_letters(ids))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
