"""The HTTP API as a bare ASGI application: parse, call the domain, render.

No framework: the API is eight routes, and on the ingest hot path a router
and request objects would cost a large share of a request's time (see
docs/ARCHITECTURE.md). Every error leaves through `_render_error`, which
writes the spec's body; every answer carries `Content-Length` (never chunked,
never 204), which Cloudify 4's Logstash 1.5 needs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from cfylogs import __version__
from cfylogs.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RelayError,
    StorageUnavailable,
)
from cfylogs.http.auth import check_bearer, check_ingest_only
from cfylogs.http.budget import ByteBudget
from cfylogs.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cfylogs.metrics import Metrics
from cfylogs.models import Batch, JoinedEntries, Registration
from cfylogs.openapi import OPENAPI
from cfylogs.payload import JSON_ERRORS, decode_body, json_problem, parse_events
from cfylogs.relay import MAX_WAIT_SEC, Relay

log = logging.getLogger(__name__)
#: `server.access_log`: one line per request (method, path, status, duration; no header).
access_log = logging.getLogger("cfylogs.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
INGEST_PATH = "/api/v1/logs"
#: Ingest bodies up to this size (no Content-Encoding) may be read whole by the
#: server before the app is called: its fast path for single events (server.py).
FAST_INGEST_MAX_BYTES = 64 * 1024
_EMPTY_BATCH = b"{}"
_MAX_REGISTRATION_BODY = 64 * 1024
_MAX_ID_LENGTH = 200
_encode = msgspec.json.Encoder().encode
_OPENAPI_JSON = _encode(OPENAPI)
Raw = msgspec.Raw
#: Routes that start with two fixed words (the others alternate words and parameters).
_FIXED_PREFIXES = {("dead-letters", "replay"), ("console", "history"), ("console", "tail")}
DEFAULT_DEAD_LETTER_PAGE = 100
MAX_DEAD_LETTER_PAGE = 1000
#: Largest id SQLite and PostgreSQL store (64-bit signed).
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class HttpOptions:
    max_request_bytes: int = 16 * 1024**2
    #: Only `POST /api/v1/logs` (the plain-HTTP port of SSL mode).
    ingest_only: bool = False
    #: `security.ingest_token` / `security.consumer_token`, UTF-8 (None: no token asked).
    ingest_token: bytes | None = field(default=None, repr=False)
    consumer_token: bytes | None = field(default=None, repr=False)
    access_log: bool = False
    #: Shared by the listeners of one relay (`server.max_ingest_bytes_in_flight`).
    ingest_budget: ByteBudget = field(default_factory=lambda: ByteBudget(0))


class Request:
    """What a handler needs of a request; the body is read on demand, bounded."""

    __slots__ = ("_receive", "headers", "method", "path", "query", "route", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        #: The route template once routed (metrics label; never the raw path).
        self.route = "unmatched"
        self._receive = receive
        self.headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            self.headers[name] = value  # ASGI names are lower-case

    def header(self, name: bytes) -> str:
        return self.headers.get(name, b"").decode("latin-1")

    async def body(self, limit: int) -> bytes:
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = _JSON,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers or []
        self.content_type = content_type


def _failed(exc: Exception, method: str, path: str) -> Response:
    """The error body for what a handler raised (logged when it is not a refusal)."""
    if isinstance(exc, RelayError):
        return error_response(exc)
    log.exception("unexpected error on %s %s", method, path, exc_info=exc)
    return error_response(StorageUnavailable("internal error; retry shortly"))


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_encode(data), status)


def error_response(error: RelayError) -> Response:
    body = _encode({"data": None, "error": {"code": error.error_code, "message": error.message}})
    headers = []
    if error.retry_after is not None:
        headers.append((b"retry-after", str(error.retry_after).encode()))
    return Response(body, error.status, headers)


Handler = Callable[[Request, list[str]], Awaitable[Response]]


class App:
    """The ASGI application of one listener."""

    def __init__(
        self, relay: Relay, options: HttpOptions | None = None, metrics: Metrics | None = None
    ) -> None:
        self.relay = relay
        self.options = options or HttpOptions()
        #: Shared by every listener of one relay (server.py passes one).
        self.metrics = metrics or Metrics(relay)
        # Here, not at the top: the console's module takes Request and Response from this one.
        from cfylogs.http import console

        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "logs"): self.ingest,
            ("GET", "logs/*"): self.fetch,
            ("DELETE", "logs/*/ack/*"): self.ack,
            ("POST", "registration"): self.register,
            ("GET", "registration"): self.list_registrations,
            ("DELETE", "registration/*"): self.unregister,
            ("GET", "dead-letters"): self.list_dead_letters,
            ("POST", "dead-letters/replay"): self.replay_dead_letters,
            ("DELETE", "dead-letters"): self.purge_dead_letters,
            **console.api_routes(relay),
        }
        #: Routes outside /api/v1, GET (and HEAD) only.
        self._plain: dict[str, Handler] = {
            "health": self.health,
            "metrics": self.prometheus,
            "openapi.json": self.openapi,
        }
        #: The console's page: `/ui/` and its files (GET and HEAD, no token).
        self._console_file: Handler = console.static_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request)
        except ClientGone:
            return
        except Exception as exc:
            response = _failed(exc, request.method, request.path)
        await _send(send, response)
        self._record(
            scope.get("client"),
            request.method,
            request.path,
            request.route,
            response.status,
            started,
        )

    def ingest_allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether an ingest request with these (lower-case) headers passes the token."""
        token = self.options.ingest_token
        if token is None:
            return True
        authorization = next((v for n, v in headers if n == b"authorization"), None)
        try:
            check_bearer(authorization, token, "security.ingest_token")
        except RelayError:
            return False
        return True

    async def ingest_read(
        self, headers: Mapping[bytes, bytes], body: bytes, client: tuple[str, int] | None
    ) -> Response:
        """`POST /api/v1/logs` whose body the server read whole already (the fast path of
        `server.py` for small bodies, which took only requests `ingest_allowed` passes):
        the same answer, metrics and log line as through `__call__`."""
        started = time.perf_counter()
        try:
            response = await self.ingest_body(body, headers)
        except Exception as exc:
            response = _failed(exc, "POST", INGEST_PATH)
        self._record(client, "POST", INGEST_PATH, INGEST_PATH, response.status, started)
        return response

    def _record(
        self,
        client: tuple[str, int] | None,
        method: str,
        path: str,
        route: str,
        status: int,
        started: float,
    ) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.observe(method, route, elapsed)
        if self.options.access_log:
            _log_access(client, method, path, route, status, elapsed)

    async def dispatch(self, request: Request) -> Response:
        if self.options.ingest_only:
            check_ingest_only(request.method, request.path)
        handler, params, request.route = self.route(request.method, request.path)
        self.authorize(request, handler)
        return await handler(request, params)

    def authorize(self, request: Request, handler: Handler) -> None:
        """Tokens: ingest_token for ingest, consumer_token for the rest of /api.

        /health stays open: probes and load balancers call it without
        credentials, and it shows no event, registration or id; so does the
        OpenAPI document, which describes the API and holds no data.
        """
        if handler in (self.health, self.openapi, self._console_file):
            return
        if handler == self.ingest:
            token, setting = self.options.ingest_token, "security.ingest_token"
        else:
            token, setting = self.options.consumer_token, "security.consumer_token"
        check_bearer(request.headers.get(b"authorization"), token, setting)

    def route(self, method: str, path: str) -> tuple[Handler, list[str], str]:
        """The handler, the path parameters and the route template."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"] and len(parts) > 2:
            shape, params = _shape(parts[2:])
            handler = self._routes.get((method, shape))
            if handler is not None:
                return handler, params, _template(shape)
            if any(s == shape for (_, s) in self._routes):
                raise MethodNotAllowed(f"{method} is not allowed on {path}")
        elif len(parts) == 1 and parts[0] in self._plain:
            if method in ("GET", "HEAD"):
                return self._plain[parts[0]], [], "/" + parts[0]
            raise MethodNotAllowed(f"{method} is not allowed on {path}")
        elif parts[:1] == ["ui"] and len(parts) <= 2:
            if method in ("GET", "HEAD"):
                return self._console_file, parts[1:], "/ui/{file}"
            raise MethodNotAllowed(f"{method} is not allowed on {path}")
        raise NotFound(f"No such endpoint: {method} {path}")

    # --- compat endpoints

    async def ingest(self, request: Request, _: list[str]) -> Response:
        limit = self.options.max_request_bytes
        encoding = request.header(b"content-encoding")
        async with self.options.ingest_budget.hold(_memory_share(request, encoding, limit)):
            raw = await request.body(limit)
            return await self.ingest_body(raw, request.headers)

    async def ingest_body(self, raw: bytes, headers: Mapping[bytes, bytes]) -> Response:
        """Decode a whole ingest body, store its events, answer."""
        limit = self.options.max_request_bytes
        encoding = headers.get(b"content-encoding", b"").decode("latin-1")
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if len(raw) < _DECODE_ON_LOOP_BYTES:
            events = _decode_events(raw, encoding, content_type, limit)
        else:
            # gunzip and line splitting let the loop run meanwhile (zlib drops the GIL).
            events = await asyncio.to_thread(_decode_events, raw, encoding, content_type, limit)
        result = await self.relay.ingest(events)
        if self.relay.options.accept == "any":
            return Response(b'{"accepted":%d}' % result.accepted)
        # Logstash drops a refused request: dead letters are answered 200, and counted here.
        return json_response({"accepted": result.accepted, "dead_lettered": result.dead_lettered})

    async def fetch(self, request: Request, params: list[str]) -> Response:
        registration_id = _registration_id(params[0])
        query = request.params()
        wait = _number(query, "wait", 0.0, MAX_WAIT_SEC)
        max_entries = _integer(query, "max", 1, None)
        batch = await self.relay.fetch(registration_id, wait, max_entries)
        return Response(render_batch(batch))

    async def ack(self, request: Request, params: list[str]) -> Response:
        registration_id = _registration_id(params[0])
        if _INTEGER.fullmatch(params[1]) is None:
            raise BadRequest(f"batch id {params[1][:40]!r} is not an integer")
        batch_id = int(params[1])
        result = await self.relay.ack(registration_id, batch_id)
        return json_response({"acknowledged": result.acknowledged, "events": result.events})

    async def register(self, request: Request, _: list[str]) -> Response:
        body = await request.body(_MAX_REGISTRATION_BODY)
        name = _registration_name(body)
        registration_id = await self.relay.register(name, client_subject(request.scope))
        return json_response({"id": registration_id})

    async def unregister(self, request: Request, params: list[str]) -> Response:
        await self.relay.unregister(_registration_id(params[0]))
        return Response(b"{}")

    # --- beyond

    async def list_registrations(self, request: Request, _: list[str]) -> Response:
        regs = await self.relay.registrations()
        return json_response({"registrations": [registration_json(r) for r in regs]})

    # --- dead letters (ingest.accept)

    async def list_dead_letters(self, request: Request, _: list[str]) -> Response:
        query = request.params()
        after = _integer(query, "after", 0, MAX_ID) or 0
        limit = _integer(query, "limit", 1, MAX_DEAD_LETTER_PAGE) or DEFAULT_DEAD_LETTER_PAGE
        total, letters = await self.relay.dead_letters(after, limit)
        page = [
            {"id": d.id, "received": d.received_at, "reason": d.reason, "event": Raw(d.event)}
            for d in letters
        ]
        following = letters[-1].id if len(letters) == limit else None
        return json_response({"total": total, "dead_letters": page, "next_after": following})

    async def replay_dead_letters(self, request: Request, _: list[str]) -> Response:
        selection = _dead_letter_selection(await request.body(_MAX_REGISTRATION_BODY))
        outcome = await self.relay.replay_dead_letters(selection)
        replayed, kept = outcome.stored, outcome.discarded
        return json_response({"replayed": replayed, "kept_no_registration": kept})

    async def purge_dead_letters(self, request: Request, _: list[str]) -> Response:
        query = request.params()
        if query.get("all") == "true":
            purged = await self.relay.purge_dead_letters(None)
        elif "ids" in query:
            purged = await self.relay.purge_dead_letters(_id_list(query["ids"].split(",")))
        else:
            raise BadRequest("name what to purge: ?ids=1,2,3 or ?all=true")
        return json_response({"purged": purged})

    async def health(self, request: Request, _: list[str]) -> Response:
        status = await self.relay.status()
        body = {
            "status": "ok" if status.ok else "unavailable",
            "version": __version__,
            "storage": {
                "backend": status.backend,
                "detail": status.detail,
                "events": status.events_stored,
                "bytes": status.bytes_stored,
                "disk_bytes": status.disk_bytes,
                "free_bytes": status.free_bytes,
            },
            "uptime_sec": round(self.relay.clock() - self.relay.started_at, 3),
        }
        return json_response(body, 200 if status.ok else 503)

    async def openapi(self, request: Request, _: list[str]) -> Response:
        return Response(_OPENAPI_JSON)

    async def prometheus(self, request: Request, _: list[str]) -> Response:
        return Response(await self.metrics.render(), content_type=METRICS_CONTENT_TYPE.encode())


def render_batch(batch: Batch | None) -> bytes:
    """`{"id": N, "entries": [...]}` from the stored bytes, the same every time."""
    if batch is None:
        return _EMPTY_BATCH
    entries = batch.entries
    items = entries.json_items() if isinstance(entries, JoinedEntries) else b",".join(entries)
    return b"".join((b'{"id":%d,"entries":[' % batch.id, items, b"]}"))


def registration_json(reg: Registration) -> dict[str, Any]:
    return {
        "id": reg.id,
        "name": reg.name,
        "created": reg.created_at,
        "last_seen": reg.last_seen,
        "client_subject": reg.client_subject,
        "backlog_events": reg.backlog_events,
        "backlog_bytes": reg.backlog_bytes,
        "oldest_unacked_at": reg.oldest_unacked_at,
        "pending_batch_id": reg.pending_batch_id,
        "pending_deliveries": reg.pending_deliveries,
        "redeliveries": reg.redeliveries,
        "dropped_events": reg.dropped_events,
    }


def client_subject(scope: Scope) -> str | None:
    """The subject of a verified client certificate (mutual TLS), if any."""
    subject = scope.get("extensions", {}).get("tls", {}).get("client_subject")
    return str(subject) if subject else None


#: Route templates by shape, for metrics labels (and the OpenAPI paths).
_TEMPLATES = {
    "logs": "/api/v1/logs",
    "logs/*": "/api/v1/logs/{id}",
    "logs/*/ack/*": "/api/v1/logs/{id}/ack/{batchId}",
    "registration": "/api/v1/registration",
    "registration/*": "/api/v1/registration/{id}",
    "dead-letters": "/api/v1/dead-letters",
    "dead-letters/replay": "/api/v1/dead-letters/replay",
}


def _template(shape: str) -> str:
    # A route added without a template still gets a bounded label.
    return _TEMPLATES.get(shape) or "/api/v1/" + shape.replace("*", "{param}")


def _shape(parts: list[str]) -> tuple[str, list[str]]:
    """`logs/abc/ack/3` -> (`logs/*/ack/*`, [abc, 3])."""
    fixed = {"logs", "registration", "ack", "dead-letters", "console"}
    shape, params = [], []
    for index, part in enumerate(parts):
        if (part in fixed and (index % 2 == 0)) or tuple(parts[: index + 1]) in _FIXED_PREFIXES:
            shape.append(part)
        else:
            shape.append("*")
            params.append(part)
    return "/".join(shape), params


#: Bodies below this are decoded on the event loop: a thread costs more than they do.
_DECODE_ON_LOOP_BYTES = 256 * 1024
#: A compressed body is counted at this many times its size (JSON compresses about 10:1).
_COMPRESSION_ALLOWANCE = 16


def _decode_events(raw: bytes, encoding: str, content_type: str, limit: int) -> list[bytes]:
    return parse_events(decode_body(raw, encoding, limit), content_type)


def _memory_share(request: Request, encoding: str, limit: int) -> int:
    """The body bytes an ingest request may hold, known before its body is read."""
    declared = request.headers.get(b"content-length", b"")
    if not declared.isdigit():
        return limit  # chunked: up to the limit
    size = int(declared)
    if encoding.strip().lower() not in ("", "identity"):
        size *= _COMPRESSION_ALLOWANCE
    return min(size, limit)


def _dead_letter_selection(body: bytes) -> list[int] | None:
    """`{"ids": [1, 2]}` -> [1, 2]; `{"all": true}` -> None (every dead letter)."""
    try:
        data = msgspec.json.decode(body or b"null")
    except JSON_ERRORS as exc:
        raise BadRequest(json_problem(exc)) from None
    if isinstance(data, dict) and data.get("all") is True:
        return None
    if isinstance(data, dict) and isinstance(data.get("ids"), list):
        return _id_list(data["ids"])
    raise BadRequest('send {"ids": [1, 2, ...]} or {"all": true}')


def _id_list(values: list[Any]) -> list[int]:
    ids = [v for v in values if type(v) is int or (isinstance(v, str) and _is_digits(v))]
    if not 0 < len(ids) == len(values) <= MAX_DEAD_LETTER_PAGE:
        raise BadRequest(f"send from 1 to {MAX_DEAD_LETTER_PAGE} integer dead-letter ids")
    if not all(0 <= int(v) <= MAX_ID for v in ids):
        raise BadRequest(f"dead-letter ids are integers from 0 to {MAX_ID}")
    return [int(v) for v in ids]


def _registration_id(raw: str) -> str:
    if len(raw) > _MAX_ID_LENGTH:
        raise NotFound("No registration can be found for that id (too long)")
    return raw


def _registration_name(body: bytes) -> str | None:
    if not body.strip():
        return None
    try:
        data = msgspec.json.decode(body)
    except JSON_ERRORS as exc:
        raise BadRequest(json_problem(exc)) from None
    if not isinstance(data, dict):
        raise BadRequest("the registration body must be a JSON object, such as {}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise BadRequest('"name" must be a string of at most 200 characters')
    return name


def _number(query: dict[str, str], key: str, low: float, high: float) -> float:
    if key not in query:
        return 0.0
    try:
        value = float(query[key])
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also refuses nan
        raise BadRequest(f"?{key}= must be a number of seconds from {low:g} to {high:g}")
    return value


#: An integer as the API takes it: ASCII digits, no spaces, `+` or `_` (which int()
#: would take), few enough that int() never refuses it (it does past 4,300 digits).
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def _is_digits(text: str) -> bool:
    return text[:1] != "-" and _INTEGER.fullmatch(text) is not None


def _integer(query: dict[str, str], key: str, low: int, high: int | None) -> int | None:
    if key not in query:
        return None
    raw = query[key]
    if not _is_digits(raw) or int(raw) < low or (high is not None and int(raw) > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise BadRequest(f"?{key}= must be an integer {bound}")
    return int(raw)


def _log_access(
    client: tuple[str, int] | None,
    method: str,
    path: str,
    route: str,
    status: int,
    elapsed: float,
) -> None:
    """Method, path, status and duration: headers (tokens) and bodies (events) stay out."""
    peer = f"{client[0]}:{client[1]}" if client else "-"
    fields = {
        "client": peer,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
    }
    access_log.info(
        "%s %s %s %d %.1fms", peer, method, path, status, elapsed * 1000, extra={"fields": fields}
    )


async def _send(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """The relay's life is managed by the server runner; acknowledge lifespan events."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
