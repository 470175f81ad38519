"""The HTTP ceiling: a bare ASGI app on cfylogs's stack (uvicorn, uvloop, httptools).

It reads the body, splits it into events with cfylogs's own parser and
answers 200 with a small JSON body, storing nothing: what cfylogs could
reach if storage cost nothing. Run as `python -m bench.asgi_ceiling PORT`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from cfylogs.payload import parse_events

Message = MutableMapping[str, Any]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    events = parse_events(b"".join(parts), "application/json")
    body = b'{"accepted":%d}' % len(events)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
