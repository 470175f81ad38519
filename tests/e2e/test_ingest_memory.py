"""Large ingest requests arriving together take turns for memory instead of piling up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import ServerFactory
from tests.support import Api, cloudify_log, memory_bytes

REQUESTS = 12
EVENTS_PER_REQUEST = 12_000  # about 10 MiB of Cloudify logs each
BUDGET = 16 * 1024**2
#: Twelve such requests held at once cost ~450 MB; taking turns, a few tens of MB.
PEAK_GROWTH_BOUND = 200 * 1024**2


def test_concurrent_large_batches_are_all_taken_within_the_memory_budget(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(config={"server": {"max_ingest_bytes_in_flight": BUDGET}}).start()
    assert server.proc is not None
    with server.client() as client:
        registration_id = Api(client).register()
    before = memory_bytes(server.proc.pid, "VmHWM")
    bodies = [
        b"["
        + b",".join(cloudify_log(r * EVENTS_PER_REQUEST + i) for i in range(EVENTS_PER_REQUEST))
        + b"]"
        for r in range(REQUESTS)
    ]

    def post(body: bytes) -> int:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return client.post("/api/v1/logs", content=body).status_code

    with ThreadPoolExecutor(REQUESTS) as pool:
        statuses = list(pool.map(post, bodies))
    assert statuses == [200] * REQUESTS  # waiting is not refusing
    growth = memory_bytes(server.proc.pid, "VmHWM") - before
    assert growth < PEAK_GROWTH_BOUND, f"peak RSS grew by {growth / 1024**2:.0f} MiB"
    with server.client(timeout=60) as client:
        batch = client.get(f"/api/v1/logs/{registration_id}?max=1").json()
    assert batch["entries"]
