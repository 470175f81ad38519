"""The HTTP ceiling of cfylogs's own core: its protocol (http/protocol.py) and parser, no storage.

Every request is parsed, its body read and split into events with cfylogs's
own parser, and answered 200 with a small JSON body, storing nothing: what
cfylogs could reach if storage and the relay cost nothing. Run as
`python -m bench.http_ceiling PORT`.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from cfylogs.config import Settings
from cfylogs.errors import RelayError
from cfylogs.http.budget import ByteBudget
from cfylogs.http.render import error_response
from cfylogs.http.server import bind, http_limits
from cfylogs.http.site import Site
from cfylogs.http.wire import Request, Response
from cfylogs.payload import parse_events


class CeilingApp:
    """What the protocol needs of an app: prepare, handle, refusal."""

    def prepare(self, request: Request) -> RelayError | None:
        request.body_limit = 16 * 1024**2
        return None

    async def handle(self, request: Request) -> Response:
        events = parse_events(request.body, "application/json")
        return Response(b'{"accepted":%d}' % len(events))

    def refusal(self, request: Request, error: RelayError) -> Response:
        return error_response(error)


async def serve(port: int) -> None:
    settings = Settings()
    site = Site(CeilingApp(), http_limits(settings), ByteBudget(64 * 1024**2))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(site.connection, sock=bind("127.0.0.1", port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
