"""kill -9 while producers push and a consumer acknowledges: nothing acknowledged is lost."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, wait_until

PRODUCERS = 4


class Producer(threading.Thread):
    """Pushes {"p", "i"} events, alternately alone and in arrays; records the 2xx'd ones."""

    def __init__(self, server: ServerProcess, p: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.p, self.stop = server, p, stop
        self.acked: list[int] = []
        self.next = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=5) as client:
            while not self.stop.is_set():
                count = 1 if self.next % 2 == 0 else 7
                seqs = list(range(self.next, self.next + count))
                events = [{"p": self.p, "i": i} for i in seqs]
                body = json.dumps(events[0] if count == 1 else events)
                self.next += count  # sent: maybe stored, even if the answer is lost
                try:
                    r = client.post("/api/v1/logs", content=body)
                except httpx.HTTPError:
                    return  # the server died under us: this request is not acknowledged
                if r.status_code == 200:
                    self.acked.extend(seqs)


class Consumer(threading.Thread):
    """Fetches, handles (records) and acknowledges, like a real orchestrator."""

    def __init__(self, server: ServerProcess, registration_id: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.registration_id, self.stop = server, registration_id, stop
        self.handled: list[dict[str, Any]] = []
        #: Events of batches whose ack got no 200: they may legitimately come again.
        self.unconfirmed: list[dict[str, Any]] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=5) as client:
            while not self.stop.is_set():
                try:
                    batch = client.get(f"/api/v1/logs/{self.registration_id}?wait=1").json()
                except (httpx.HTTPError, ValueError):
                    return
                if not batch:
                    continue
                self.handled.extend(batch["entries"])
                try:
                    r = client.delete(f"/api/v1/logs/{self.registration_id}/ack/{batch['id']}")
                    confirmed = r.status_code == 200
                except httpx.HTTPError:
                    confirmed = False
                if not confirmed:
                    self.unconfirmed.extend(batch["entries"])
                    return


def test_kill_9_under_load_loses_nothing_acknowledged(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    with server.client() as client:
        registration_id = Api(client).register()
    received: list[dict[str, Any]] = []
    may_repeat: set[tuple[int, int]] = set()
    acked_by_producers: dict[int, list[int]] = defaultdict(list)
    next_seq = dict.fromkeys(range(PRODUCERS), 0)

    for _cycle in range(3):
        stop = threading.Event()
        producers = [Producer(server, p, stop) for p in range(PRODUCERS)]
        for producer in producers:
            producer.next = next_seq[producer.p]
        consumer = Consumer(server, registration_id, stop)
        for thread in [*producers, consumer]:
            thread.start()
        wait_until(lambda: sum(len(p.acked) for p in producers) >= 300, timeout=60)  # noqa: B023
        server.kill()  # SIGKILL, mid-flight
        stop.set()
        for thread in [*producers, consumer]:
            thread.join(10)
        for producer in producers:
            acked_by_producers[producer.p].extend(producer.acked)
            next_seq[producer.p] = producer.next
        received.extend(consumer.handled)
        may_repeat.update((e["p"], e["i"]) for e in consumer.unconfirmed)
        server.start()

    with server.client() as client:
        received.extend(Api(client).drain(registration_id))

    by_producer: dict[int, list[int]] = defaultdict(list)
    for event in received:
        assert set(event) == {"p", "i"} and 0 <= event["p"] < PRODUCERS  # nothing foreign
        by_producer[event["p"]].append(event["i"])
    for p in range(PRODUCERS):
        got = by_producer[p]
        missing = set(acked_by_producers[p]) - set(got)
        assert not missing, f"producer {p} lost {len(missing)} acknowledged events"
        repeated = [i for i in got if got.count(i) > 1]
        assert all((p, i) in may_repeat for i in repeated), "an acknowledged batch came again"
        first_seen = list(dict.fromkeys(got))
        assert first_seen == sorted(first_seen), f"producer {p}: order broken"
