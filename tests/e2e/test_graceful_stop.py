"""SIGTERM under full load: requests in flight finish, every 2xx'd event survives, exit 0."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess

CLIENTS = 300
LONG_POLLS = 20


class Load:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.busy = asyncio.Event()  # every client has had answers: all are sending
        self.stop = asyncio.Event()


async def _producer(http: httpx.AsyncClient, p: int, load: Load) -> None:
    acked = load.acked
    i = 0
    while not load.stop.is_set():
        seqs = [p * 1_000_000 + i + k for k in range(3)]
        i += 3
        body = json.dumps([{"s": s} for s in seqs])
        try:
            r = await http.post("/api/v1/logs", content=body)
        except httpx.HTTPError:
            return  # the listener closed: not acknowledged
        if r.status_code == 200:
            acked.extend(seqs)
            if len(acked) >= 3 * CLIENTS:
                load.busy.set()
        elif r.status_code != 503:  # 503 while stopping is back-pressure, retried by Logstash
            raise AssertionError(f"unexpected {r.status_code}: {r.text}")


async def _long_poll(http: httpx.AsyncClient, registration_id: str) -> int:
    try:
        r = await http.get(f"/api/v1/logs/{registration_id}", params={"wait": 60})
    except httpx.HTTPError:
        return 0
    return r.status_code


async def _load_then_sigterm(server: ServerProcess, waiter: str) -> tuple[list[int], int]:
    load = Load()
    limits = httpx.Limits(max_connections=CLIENTS + LONG_POLLS)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        polls = [asyncio.create_task(_long_poll(http, waiter)) for _ in range(LONG_POLLS)]
        tasks = [asyncio.create_task(_producer(http, p, load)) for p in range(CLIENTS)]
        await asyncio.wait_for(load.busy.wait(), 60)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)  # hundreds of requests in flight right now
        exit_code = await asyncio.to_thread(server.wait_exit, 60)
        load.stop.set()
        await asyncio.gather(*tasks, *polls)
    return load.acked, exit_code


def test_sigterm_under_load_keeps_every_acknowledged_event_and_exits_0(
    server_factory: ServerFactory,
) -> None:
    server = server_factory().start()
    with server.client() as client:
        api = Api(client)
        registration_id, waiter = api.register(), api.register()
        api.drain(waiter)
    acked, exit_code = asyncio.run(_load_then_sigterm(server, waiter))
    assert exit_code == 0, server.run_log()[-3000:]
    assert "finishing requests in flight" in server.run_log()
    server.start()
    with server.client() as client:
        got = [e["s"] for e in Api(client).drain(registration_id, limit=100_000)]
    assert set(acked) <= set(got), f"{len(set(acked) - set(got))} acknowledged events lost"
    assert len(got) == len(set(got))  # nothing stored twice
