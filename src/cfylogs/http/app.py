"""The HTTP API: route, check, call the domain, render.

No framework and no ASGI: the protocol (`http.protocol`) hands over a
`Request` whose head it has parsed; `App.prepare` routes it and decides
from the head alone whatever it can (403 on the ingest-only port, 404,
405 with `Allow`, 401, the body limit), before a byte of its body is read;
`App.handle` runs the handler on the whole request and returns a
`Response`. Every error leaves through `render.error_response`, which
writes the spec's body; an unexpected exception is logged and answered 503
(retryable), never with a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cfylogs import __version__
from cfylogs.errors import BadRequest, MethodNotAllowed, NotFound, RelayError, StorageUnavailable
from cfylogs.http import console, params
from cfylogs.http.auth import check_bearer, check_ingest_only
from cfylogs.http.render import BatchBodies, error_response, json_response, registration_json
from cfylogs.http.wire import Request, Response
from cfylogs.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cfylogs.metrics import Metrics
from cfylogs.openapi import OPENAPI
from cfylogs.payload import decode_body, parse_events
from cfylogs.relay import MAX_WAIT_SEC, Relay

log = logging.getLogger(__name__)
#: `server.access_log`: one line per request (method, path, status, duration; no header).
access_log = logging.getLogger("cfylogs.access")

INGEST_PATH = "/api/v1/logs"
#: Bodies of every route but ingest: a registration name, a list of dead-letter ids.
SMALL_BODY_BYTES = 64 * 1024
_OPENAPI_JSON = msgspec.json.Encoder().encode(OPENAPI)
#: Bodies below this are decoded on the event loop: a thread costs more than they do.
_DECODE_ON_LOOP_BYTES = 256 * 1024

Handler = Callable[[Request, list[str]], Awaitable[Response]]


@dataclass(frozen=True)
class HttpOptions:
    """What the app of one listener needs from the settings (server.py builds it)."""

    max_request_bytes: int
    #: Only `POST /api/v1/logs` (the plain-HTTP port of SSL mode).
    ingest_only: bool
    #: `security.ingest_token` / `security.consumer_token`, UTF-8 (None: no token asked).
    ingest_token: bytes | None = field(repr=False)
    consumer_token: bytes | None = field(repr=False)
    access_log: bool
    #: `console.enabled`: the console's page and API are routed.
    console: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    #: The path as the OpenAPI document has it; also the metrics label.
    template: str
    handler: Handler
    #: Which token it asks for: "ingest", "consumer", or None (open).
    token: str | None
    body_limit: int
    #: Free of side effects, so HEAD may call it too (a fetch is not: it hands a batch out).
    safe: bool = True

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(p for p in self.template.split("/") if p)


def console_routes(relay: Relay) -> list[Route]:
    """The console: its API behind the consumer token, its page's files open (they hold no
    data, and a browser cannot send a token with a navigation)."""
    return [
        *(
            Route("GET", path, handler, "consumer", SMALL_BODY_BYTES)
            for path, handler in console.api_routes(relay)
        ),
        Route("GET", "/ui/", console.static_file, None, SMALL_BODY_BYTES),
        Route("GET", "/ui/{file}", console.static_file, None, SMALL_BODY_BYTES),
    ]


class App:
    """The API of one listener (the HTTPS one and, in SSL mode, the plain ingest one)."""

    def __init__(self, relay: Relay, options: HttpOptions, metrics: Metrics | None = None) -> None:
        self.relay = relay
        self.options = options
        #: Shared by every listener of one relay (server.py passes one).
        self.metrics = metrics or Metrics(relay)
        self.batches = BatchBodies()
        small = SMALL_BODY_BYTES
        consumer = "consumer"
        self.routes = [
            Route("POST", INGEST_PATH, self.ingest, "ingest", options.max_request_bytes),
            Route("GET", "/api/v1/logs/{id}", self.fetch, consumer, small, safe=False),
            Route("DELETE", "/api/v1/logs/{id}/ack/{batchId}", self.ack, consumer, small),
            Route("POST", "/api/v1/registration", self.register, consumer, small),
            Route("GET", "/api/v1/registration", self.list_registrations, consumer, small),
            Route("DELETE", "/api/v1/registration/{id}", self.unregister, consumer, small),
            Route("GET", "/api/v1/dead-letters", self.list_dead_letters, consumer, small),
            Route("POST", "/api/v1/dead-letters/replay", self.replay_dead_letters, consumer, small),
            Route("DELETE", "/api/v1/dead-letters", self.purge_dead_letters, consumer, small),
            # /health stays open: probes and load balancers call it without credentials, and
            # it shows no event, registration or id; so does the OpenAPI document.
            Route("GET", "/health", self.health, None, small),
            Route("GET", "/metrics", self.prometheus, consumer, small),
            Route("GET", "/openapi.json", self.openapi, None, small),
        ]
        if options.console:
            self.routes += console_routes(relay)
        self._router = _Router(self.routes)

    # --- what the protocol calls

    def prepare(self, request: Request) -> RelayError | None:
        """Route `request` and check what its head alone tells; the refusal, if any."""
        try:
            if self.options.ingest_only:
                check_ingest_only(request.method, request.path)
            route, request.params = self._router.find(request.method, request.path)
            request.route = route
            request.body_limit = route.body_limit
            if route.token == "ingest":
                check_bearer(
                    request.headers.get(b"authorization"),
                    self.options.ingest_token,
                    "security.ingest_token",
                )
            elif route.token is not None:
                check_bearer(
                    request.headers.get(b"authorization"),
                    self.options.consumer_token,
                    "security.consumer_token",
                )
        except RelayError as exc:
            return exc
        return None

    async def handle(self, request: Request) -> Response:
        """The answer to a prepared request whose body is read; never raises."""
        started = time.perf_counter()
        route = request.route
        assert isinstance(route, Route)
        try:
            response = await route.handler(request, request.params)
        except Exception as exc:
            response = _failed(exc, request)
        self._record(request, response.status, started)
        return response

    def refusal(self, request: Request, error: RelayError) -> Response:
        """The answer to a request refused before its handler (by `prepare` or the
        protocol: malformed, too large, too slow)."""
        response = error_response(error)
        self._record(request, response.status, time.perf_counter())
        return response

    def _record(self, request: Request, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = request.route
        template = route.template if isinstance(route, Route) else "unmatched"
        self.metrics.observe(request.method, template, elapsed)
        if self.options.access_log:
            _log_access(request, template, status, elapsed)

    # --- compat endpoints

    async def ingest(self, request: Request, _: list[str]) -> Response:
        body = request.body
        headers = request.headers
        encoding = headers.get(b"content-encoding", b"").decode("latin-1")
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        limit = self.options.max_request_bytes
        if len(body) < _DECODE_ON_LOOP_BYTES:
            events = _decode_events(body, encoding, content_type, limit)
        else:
            # gunzip and line splitting let the loop run meanwhile (zlib drops the GIL).
            events = await asyncio.to_thread(_decode_events, body, encoding, content_type, limit)
            request.hold(sum(map(len, events)))  # the events are copies of the body's bytes
        result = await self.relay.ingest(events)
        if self.relay.options.accept == "any":
            return Response(b'{"accepted":%d}' % result.accepted)
        # Logstash drops a refused request: dead letters are answered 200, and counted here.
        return json_response({"accepted": result.accepted, "dead_lettered": result.dead_lettered})

    async def fetch(self, request: Request, path: list[str]) -> Response:
        registration_id = params.registration_id(path[0])
        query = request.query_params()
        wait = params.number(query, "wait", 0.0, MAX_WAIT_SEC)
        max_entries = params.integer(query, "max", 1, None)
        batch = await self.relay.fetch(registration_id, wait, max_entries)
        return Response(self.batches.render(batch))

    async def ack(self, request: Request, path: list[str]) -> Response:
        registration_id = params.registration_id(path[0])
        result = await self.relay.ack(registration_id, params.batch_id(path[1]))
        if result.acknowledged:
            self.batches.forget(registration_id)
        return json_response({"acknowledged": result.acknowledged, "events": result.events})

    async def register(self, request: Request, _: list[str]) -> Response:
        name = params.registration_name(request.body)
        registration_id = await self.relay.register(name, request.tls_subject)
        return json_response({"id": registration_id})

    async def unregister(self, request: Request, path: list[str]) -> Response:
        registration_id = params.registration_id(path[0])
        await self.relay.unregister(registration_id)
        self.batches.forget(registration_id)
        return Response(b"{}")

    # --- beyond

    async def list_registrations(self, request: Request, _: list[str]) -> Response:
        regs = await self.relay.registrations()
        return json_response({"registrations": [registration_json(r) for r in regs]})

    async def list_dead_letters(self, request: Request, _: list[str]) -> Response:
        query = request.query_params()
        after = params.integer(query, "after", 0, params.MAX_ID) or 0
        limit = (
            params.integer(query, "limit", 1, params.MAX_DEAD_LETTER_PAGE)
            or params.DEFAULT_DEAD_LETTER_PAGE
        )
        total, letters = await self.relay.dead_letters(after, limit)
        page = [
            {
                "id": d.id,
                "received": d.received_at,
                "reason": d.reason,
                "event": msgspec.Raw(d.event),
            }
            for d in letters
        ]
        following = letters[-1].id if len(letters) == limit else None
        return json_response({"total": total, "dead_letters": page, "next_after": following})

    async def replay_dead_letters(self, request: Request, _: list[str]) -> Response:
        selection = params.dead_letter_selection(request.body)
        outcome = await self.relay.replay_dead_letters(selection)
        replayed, kept = outcome.stored, outcome.discarded
        return json_response({"replayed": replayed, "kept_no_registration": kept})

    async def purge_dead_letters(self, request: Request, _: list[str]) -> Response:
        query = request.query_params()
        if query.get("all") == "true":
            purged = await self.relay.purge_dead_letters(None)
        elif "ids" in query:
            purged = await self.relay.purge_dead_letters(params.id_list(query["ids"].split(",")))
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
        if status.ok:
            return json_response(body)
        unavailable = json_response(body, 503)
        unavailable.headers.append((b"retry-after", str(StorageUnavailable.retry_after).encode()))
        return unavailable

    async def openapi(self, request: Request, _: list[str]) -> Response:
        return Response(_OPENAPI_JSON)

    async def prometheus(self, request: Request, _: list[str]) -> Response:
        return Response(await self.metrics.render(), content_type=METRICS_CONTENT_TYPE.encode())


class _Router:
    """Paths to routes. Empty segments do not count (`/api/v1/logs/` is the ingest
    path); safe GET routes take HEAD too; a known path with another method is a 405."""

    def __init__(self, routes: list[Route]) -> None:
        #: Paths without parameters, by their exact text (the hot ones: a dict lookup).
        self._exact: dict[str, dict[str, Route]] = {}
        #: Every path by its segments; "{...}" segments match any one segment.
        self._shapes: dict[tuple[str, ...], dict[str, Route]] = {}
        for route in routes:
            self._shapes.setdefault(route.segments, {})[route.method] = route
            if "{" not in route.template:
                self._exact[route.template] = self._shapes[route.segments]
        for by_method in self._shapes.values():
            if "GET" in by_method and by_method["GET"].safe:
                by_method.setdefault("HEAD", by_method["GET"])

    def find(self, method: str, path: str) -> tuple[Route, list[str]]:
        by_method = self._exact.get(path)
        values: list[str] = []
        if by_method is None:
            parts = [p for p in path.split("/") if p]
            for shape, candidates in self._shapes.items():
                found = _match(shape, parts)
                if found is not None:
                    by_method, values = candidates, found
                    break
            else:
                raise NotFound(f"No such endpoint: {method} {path}")
        route = by_method.get(method)
        if route is None:
            allow = tuple(sorted(by_method))
            raise MethodNotAllowed(f"{method} is not allowed on {path}", allow)
        return route, values


def _match(shape: tuple[str, ...], parts: list[str]) -> list[str] | None:
    if len(shape) != len(parts):
        return None
    values = []
    for expected, part in zip(shape, parts, strict=True):
        if expected[0] == "{":
            values.append(part)
        elif expected != part:
            return None
    return values


def _failed(exc: Exception, request: Request) -> Response:
    """The error body for what a handler raised (logged when it is not a refusal)."""
    if isinstance(exc, RelayError):
        return error_response(exc)
    log.exception("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(StorageUnavailable("internal error; retry shortly"))


def _decode_events(raw: bytes, encoding: str, content_type: str, limit: int) -> list[bytes]:
    return parse_events(decode_body(raw, encoding, limit), content_type)


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def _log_access(request: Request, route: str, status: int, elapsed: float) -> None:
    """Method, path, status and duration: headers (tokens) and bodies (events) stay out."""
    client = request.client
    peer = f"{client[0]}:{client[1]}" if client else "-"
    # The path is the client's, decoded: no line break or control byte of it reaches a
    # text log line as such (it could forge one).
    path = (
        request.path.translate(_CONTROL_ESCAPES) if not request.path.isprintable() else request.path
    )
    fields: dict[str, Any] = {
        "client": peer,
        "method": request.method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
    }
    access_log.info(
        "%s %s %s %d %.1fms",
        peer,
        request.method,
        path,
        status,
        elapsed * 1000,
        extra={"fields": fields},
    )
