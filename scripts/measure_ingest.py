"""Batched ingest on both backends in one run: the figure quoted in docs/HA.md.

Starts a real relay per backend (SQLite under a temporary home; PostgreSQL
on a throw-away server from tests/pgserver.py), registers one consumer so
that events are stored, then POSTs arrays of events from concurrent
clients over loopback and prints events/s and request latencies.

    .venv/bin/python scripts/measure_ingest.py [--requests 200] [--batch 500] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pgserver import running_server
from tests.support import Api, ServerProcess, cloudify_log


@contextlib.contextmanager
def relay(config: dict[str, Any]) -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory(prefix="cfylogs-measure-") as workdir:
        server = ServerProcess(Path(workdir), config).start()
        try:
            yield server
        finally:
            server.kill()


def measure(server: ServerProcess, requests: int, batch: int, clients: int) -> dict[str, float]:
    with server.client() as client:
        Api(client).register("measure")
    event = json.loads(cloudify_log())
    body = json.dumps([{**event, "seq": i} for i in range(batch)]).encode()
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(count: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(count):
                t0 = time.perf_counter()
                r = client.post(
                    "/api/v1/logs", content=body, headers={"content-type": "application/json"}
                )
                elapsed = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"ingest answered {r.status_code}: {r.text}")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker, args=(requests // clients,)) for _ in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "events_per_s": len(latencies) * batch / wall,
        "mib_per_s": len(latencies) * len(body) / wall / 1024**2,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the backends this often")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
    with (
        running_server() as database,
        relay({}) as sqlite,
        relay({"storage": {"backend": "postgres", "postgres": {"dsn": database.dsn()}}}) as pg,
    ):
        # Alternated, so that whatever else the machine does weighs on both alike.
        for _ in range(args.rounds):
            for name, server in (("sqlite", sqlite), ("postgres", pg)):
                results[name].append(measure(server, args.requests, args.batch, args.clients))
    print(
        f"{args.requests} requests of {args.batch} events ({len(cloudify_log())} bytes each), "
        f"{args.clients} clients, median of {args.rounds} alternated rounds"
    )
    for name, rounds in results.items():
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        each = ", ".join(f"{r['events_per_s']:.0f}" for r in rounds)
        print(
            f"{name:9} {median['events_per_s']:>9.0f} events/s  {median['mib_per_s']:6.1f} MiB/s"
            f"  p50 {median['p50_ms']:6.1f} ms  p99 {median['p99_ms']:6.1f} ms  (rounds: {each})"
        )


if __name__ == "__main__":
    main()
