"""The web console over HTTP: its page under `/ui/` and the API it reads (docs/CONSOLE.md).

Handlers have the app's shape (`async def handler(request, params) -> Response`)
and are mounted from the two tables at the end: `api_routes` (under
`/api/v1/`, behind `security.consumer_token` like the rest of the consumer
API) and `STATIC` (the page's files, open: they hold no data, and a browser
cannot send a token with a navigation). The page reads the existing API
too: `/health`, the registration list, the dead letters.

The page's files are a fixed list read from the package, never a path taken
from the request. Every file is served with a Content-Security-Policy
that allows scripts and styles from the relay only (no inline script, no
eval), no framing, and `nosniff`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec

from cfylogs import __version__
from cfylogs.console import history, tail
from cfylogs.console.tail import TailFilter, TailPage
from cfylogs.errors import BadRequest, NotFound
from cfylogs.http.wire import Request, Response
from cfylogs.relay import Relay

Handler = Callable[[Request, list[str]], Awaitable[Response]]

#: The registrations page marks one whose oldest unacknowledged event is older
#: than this (falling behind), or that made no request for this long (not seen).
BEHIND_SEC = 60
UNSEEN_SEC = 120

CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: On every console answer, page or data.
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]
_PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    *_HEADERS,
]

_JS = b"text/javascript; charset=utf-8"
#: `/ui/<name>` -> (file under cfylogs/console/static, content type); "" is `/ui/`.
STATIC: dict[str, tuple[str, bytes]] = {
    "": ("index.html", b"text/html; charset=utf-8"),
    "console.css": ("console.css", b"text/css; charset=utf-8"),
    "favicon.svg": ("favicon.svg", b"image/svg+xml"),
    "app.js": ("app.js", _JS),
    "api.js": ("api.js", _JS),
    "chart.js": ("chart.js", _JS),
    "format.js": ("format.js", _JS),
    "overview.js": ("overview.js", _JS),
    "registrations.js": ("registrations.js", _JS),
    "deadletters.js": ("deadletters.js", _JS),
    "tail.js": ("tail.js", _JS),
}

_encode = msgspec.json.Encoder().encode
Raw = msgspec.Raw


@functools.cache
def _static_bytes(name: str) -> bytes:
    return resources.files("cfylogs.console").joinpath("static", name).read_bytes()


async def static_file(request: Request, params: list[str]) -> Response:
    """`GET /ui/` and `GET /ui/<file>` (HEAD too), from the fixed list only."""
    name = params[0] if params else ""
    entry = STATIC.get(name)
    if entry is None:
        raise NotFound(f"No such console file: /ui/{name[:80]}")
    filename, content_type = entry
    return Response(_static_bytes(filename), headers=_PAGE_HEADERS, content_type=content_type)


class ConsoleApi:
    """`/api/v1/console`, `/api/v1/console/history`, `/api/v1/console/tail`."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def info(self, request: Request, _: list[str]) -> Response:
        """What the page needs to start (and, behind the token, whether it was right)."""
        options = self.relay.options
        body = {
            "version": __version__,
            "now": self.relay.clock(),
            "accept": options.accept,
            "leased": options.leased,
            "lease_duration_sec": options.lease_duration_sec,
            "history": {"interval_sec": self.relay.history.interval, "capacity": history.CAPACITY},
            "tail": {
                "max_events": tail.MAX_EVENTS,
                "max_bytes": tail.MAX_BYTES,
                "max_event_bytes": tail.MAX_EVENT_BYTES,
                "max_wait_sec": tail.MAX_WAIT_SEC,
                "max_limit": tail.MAX_LIMIT,
            },
            "marks": {"behind_sec": BEHIND_SEC, "unseen_sec": UNSEEN_SEC},
        }
        return _json(body)

    async def history(self, request: Request, _: list[str]) -> Response:
        after = _seconds(request.query_params(), "after", 0.0, _MAX_UNIX_TIME)
        window = self.relay.history.window(after)
        samples = window.samples
        body = {
            "now": self.relay.clock(),
            "interval_sec": self.relay.history.interval,
            "time": [s.at for s in samples],
            "received_per_sec": [s.received_per_sec for s in samples],
            "delivered_per_sec": [s.delivered_per_sec for s in samples],
            "acknowledged_per_sec": [s.acknowledged_per_sec for s in samples],
            "backlog_events": [s.backlog_events for s in samples],
            "backlog_bytes": [s.backlog_bytes for s in samples],
            "registrations": window.backlogs,
        }
        return _json(body)

    async def tail(self, request: Request, _: list[str]) -> Response:
        query = request.query_params()
        after = _whole(query, "after", 0, 2**63 - 1)
        limit = _whole(query, "limit", 1, tail.MAX_LIMIT) or tail.DEFAULT_LIMIT
        wait = _seconds(query, "wait", 0.0, tail.MAX_WAIT_SEC) or 0.0
        wanted = TailFilter(
            type=_text(query, "type"),
            level=_text(query, "level"),
            deployment=_text(query, "deployment"),
            text=_text(query, "q"),
        )
        page = await self.relay.tail.poll(after, limit, wanted, wait)
        return Response(render_tail(page), headers=_HEADERS)


def render_tail(page: TailPage) -> bytes:
    events = [
        {
            "seq": e.seq,
            "received": round(e.received_at, 3),
            "size": e.size,
            "event": None if e.raw is None else Raw(e.raw),
        }
        for e in page.events
    ]
    return _encode({"events": events, "last": page.last, "missed": page.missed})


def api_routes(relay: Relay) -> list[tuple[str, Handler]]:
    """The console's API, (path, handler) of GET routes, for the app to mount."""
    api = ConsoleApi(relay)
    return [
        ("/api/v1/console", api.info),
        ("/api/v1/console/history", api.history),
        ("/api/v1/console/tail", api.tail),
    ]


def _json(data: Any) -> Response:
    return Response(_encode(data), headers=_HEADERS)


_DIGITS = re.compile(r"[0-9]{1,19}")
#: `?after=` of the history: a Unix time (this is the year 5138).
_MAX_UNIX_TIME = 1e11
_MAX_FILTER_CHARS = 200


def _whole(query: dict[str, str], key: str, low: int, high: int) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    if _DIGITS.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise BadRequest(f"?{key}= must be an integer from {low} to {high}")
    return int(raw)


def _seconds(query: dict[str, str], key: str, low: float, high: float) -> float | None:
    raw = query.get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also refuses nan
        raise BadRequest(f"?{key}= must be a number from {low:g} to {high:g}")
    return value


def _text(query: dict[str, str], key: str) -> str | None:
    value = query.get(key, "").strip()
    if len(value) > _MAX_FILTER_CHARS:
        raise BadRequest(f"?{key}= is longer than {_MAX_FILTER_CHARS} characters")
    return value or None
