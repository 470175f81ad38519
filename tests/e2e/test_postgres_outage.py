"""Relays on a PostgreSQL that does not answer (docs/HA.md, "When the database fails").

The database is stopped with SIGSTOP (`PgServer.frozen`: TCP stays up, nothing
answers) or its commits stall (`PgServer.commits_stalled`: a commit is sent and
not answered, then carried out). Every request must be answered 503 with
Retry-After within `storage.postgres.timeout_sec`, the relays must recover by
themselves, and nothing acknowledged may be lost. Each test has a private
cluster: stopping it stops no other test.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.e2e.test_postgres_ha import postgres_config
from tests.pgserver import PgServer, running_server
from tests.support import Api, ServerProcess, wait_until

#: storage.postgres.timeout_sec of these relays.
BOUND = 1
#: What a shared 2-core machine may add to it (HTTP, scheduling, the test's own threads).
SLACK = 1.5
SHUTDOWN_TIMEOUT = 3
#: The relay's warning for a commit in doubt, with the events it held.
IN_DOUBT = re.compile(r"did not confirm the commit of (\d+) append\(s\) \((\d+) events\)")


def outage_config(dsn: str) -> dict[str, Any]:
    config = postgres_config(dsn, server={"shutdown_timeout_sec": SHUTDOWN_TIMEOUT})
    config["storage"]["postgres"]["timeout_sec"] = BOUND
    return config


@pytest.fixture
def database() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


def start_relays(
    server_factory: ServerFactory, database: PgServer, count: int
) -> list[ServerProcess]:
    config = outage_config(database.create_schema())
    return [server_factory(config).start() for _ in range(count)]


@pytest.fixture
def relay(database: PgServer, server_factory: ServerFactory) -> ServerProcess:
    [started] = start_relays(server_factory, database, 1)
    return started


@pytest.fixture
def relay_api(relay: ServerProcess) -> Iterator[Api]:
    """A client of `relay` that waits long enough to show a request that hangs."""
    with relay.client(timeout=BOUND + 30) as client:
        yield Api(client)


def timed(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    start = time.monotonic()
    response = call()
    return time.monotonic() - start, response


def assert_refused_in_time(answers: list[tuple[float, httpx.Response]]) -> None:
    for elapsed, response in answers:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
        assert elapsed < BOUND + SLACK, f"{response.request.url} took {elapsed:.2f} s"


def test_one_relay_answers_503_within_the_bound_and_recovers_by_itself(
    database: PgServer, relay: ServerProcess, relay_api: Api
) -> None:
    api, client = relay_api, relay_api.http
    registration_id = api.register()
    assert api.push({"n": 0}).status_code == 200
    pending = api.fetch(registration_id)
    calls: list[Callable[[], httpx.Response]] = [
        lambda: api.push({"n": 1}),
        lambda: api.push({"n": 2}),
        lambda: client.get(f"/api/v1/logs/{registration_id}"),
        lambda: client.get(f"/api/v1/logs/{registration_id}", params={"wait": 1}),
        lambda: api.ack(registration_id, pending["id"]),
        lambda: client.post("/api/v1/registration", json={}),
        lambda: client.get("/health"),
    ]
    with database.frozen(), ThreadPoolExecutor(len(calls)) as pool:
        frozen_at = time.monotonic()
        first = list(pool.map(timed, calls))
        # Longer than the bound: the relay now knows, and still answers in time.
        again = list(pool.map(timed, calls))
    resumed = time.monotonic()
    assert_refused_in_time(first + again)
    wait_until(lambda: api.push({"n": 3}).status_code == 200, timeout=30)
    recovered_in = time.monotonic() - resumed
    assert client.get("/health").status_code == 200
    # Every 200 is delivered; what was refused before its commit was sent is not
    # stored (the server rolls it back on resuming): no commit was in doubt.
    assert api.drain(registration_id) == [{"n": 0}, {"n": 3}]
    assert "did not confirm the commit" not in relay.run_log()
    latencies = sorted(round(e, 2) for e, _ in first + again)
    print(
        f"\nfrozen {resumed - frozen_at:.1f} s (bound {BOUND} s): {len(latencies)} requests"
        f" answered 503 in {latencies[0]}-{latencies[-1]} s; recovered {recovered_in:.2f} s"
        " after SIGCONT"
    )


def test_a_relay_stops_within_its_shutdown_timeout_while_the_database_is_silent(
    database: PgServer, relay: ServerProcess, relay_api: Api
) -> None:
    api, client = relay_api, relay_api.http
    registration_id = api.register()
    with database.frozen(), ThreadPoolExecutor(3) as pool:
        in_flight = [
            pool.submit(timed, lambda: api.push({"n": 1})),
            pool.submit(timed, lambda: api.push({"n": 2})),
            pool.submit(timed, lambda: client.get(f"/api/v1/logs/{registration_id}?wait=30")),
        ]
        time.sleep(0.3)  # the requests reach the relay (they wait for the bound)
        start = time.monotonic()
        status = relay.stop(timeout=SHUTDOWN_TIMEOUT + 30)
        took = time.monotonic() - start
        answers = [future.result() for future in in_flight]
    assert status == 0 and took < SHUTDOWN_TIMEOUT + SLACK, f"stopped in {took:.2f} s"
    for elapsed, response in answers:  # a long poll answers at once on a stop
        assert response.status_code in (200, 503) and elapsed < BOUND + SLACK
    print(f"\nstopped in {took:.2f} s with the database silent (timeout {SHUTDOWN_TIMEOUT} s)")


class Logstash(threading.Thread):
    """Pushes {"p", "i"} events one per request and retries each until it gets a 200,
    as Logstash's http output does."""

    def __init__(self, relay: ServerProcess, p: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.relay, self.p, self.stop = relay, p, stop
        self.acked: list[int] = []
        #: Events that got a 503 before their 200: the only ones that may come twice.
        self.refused: set[int] = set()
        self.refusals = 0
        self.latencies: list[float] = []

    def run(self) -> None:
        with self.relay.client(timeout=BOUND + 30) as client:
            i = 0
            while not self.stop.is_set():
                start = time.monotonic()
                r = client.post("/api/v1/logs", content=json.dumps({"p": self.p, "i": i}))
                self.latencies.append(time.monotonic() - start)
                if r.status_code == 200:
                    self.acked.append(i)
                    i += 1
                else:
                    assert r.status_code == 503 and r.headers["retry-after"], r.text
                    self.refused.add(i)
                    self.refusals += 1
                    time.sleep(0.05)  # Logstash backs off; a short pace keeps the test short


class Orchestrator(threading.Thread):
    """Fetches, handles and acknowledges, retrying each call on a 503."""

    def __init__(self, relay: ServerProcess, registration_id: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.relay, self.registration_id, self.stop = relay, registration_id, stop
        self.handled: list[dict[str, Any]] = []
        self.latencies: list[float] = []

    def call(self, client: httpx.Client, method: str, url: str) -> httpx.Response:
        while True:
            start = time.monotonic()
            r = client.request(method, url)
            self.latencies.append(time.monotonic() - start)
            if r.status_code != 503:
                assert r.status_code == 200, r.text
                return r
            time.sleep(0.05)

    def run(self) -> None:
        url = f"/api/v1/logs/{self.registration_id}"
        with self.relay.client(timeout=BOUND + 30) as client:
            while not self.stop.is_set():
                batch = self.call(client, "GET", f"{url}?wait=1").json()
                if batch:
                    self.handled.extend(batch["entries"])
                    self.call(client, "DELETE", f"{url}/ack/{batch['id']}")


def test_two_relays_under_load_lose_nothing_acknowledged_through_a_silent_period(
    database: PgServer,
    server_factory: ServerFactory,  # in this order: relays stop first
) -> None:
    a, b = start_relays(server_factory, database, 2)
    with a.client() as client:
        registration_id = Api(client).register()
    stop = threading.Event()
    producers = [Logstash(relay, p, stop) for p, relay in enumerate((a, b, a, b))]
    consumer = Orchestrator(b, registration_id, stop)
    threads: list[threading.Thread] = [*producers, consumer]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(consumer.handled) >= 20, timeout=30)
        with database.frozen():
            time.sleep(3 * BOUND)  # the outage: its length is the point
        resumed = time.monotonic()
        acked, handled = [len(p.acked) for p in producers], len(consumer.handled)
        wait_until(
            lambda: (
                all(len(p.acked) > n + 10 for p, n in zip(producers, acked, strict=True))
                and len(consumer.handled) > handled + 20
            ),
            timeout=30,
        )
        recovered_in = time.monotonic() - resumed
    finally:
        stop.set()
        for thread in threads:
            thread.join(BOUND + 30)
    with a.client() as client:
        received = consumer.handled + Api(client).drain(registration_id)
    latencies = [t for thread in [*producers, consumer] for t in thread.latencies]
    assert max(latencies) < BOUND + SLACK, f"a request took {max(latencies):.2f} s"
    duplicates = 0
    for producer in producers:
        got = [e["i"] for e in received if e["p"] == producer.p]
        assert set(producer.acked) <= set(got), f"producer {producer.p} lost events"
        assert producer.refused, "the outage refused nothing: it did not happen"
        repeated = {i for i in got if got.count(i) > 1}
        assert repeated <= producer.refused, "an event acknowledged at once came twice"
        assert all(got.count(i) == 2 for i in repeated)
        duplicates += len(repeated)
        first_seen = list(dict.fromkeys(got))
        assert first_seen == sorted(first_seen), f"producer {producer.p}: order broken"
    # A duplicate comes only from a commit in doubt, and each relay says which.
    in_doubt = sum(int(events) for _, events in IN_DOUBT.findall(a.run_log() + b.run_log()))
    assert duplicates <= in_doubt
    for relay in (a, b):
        with relay.client() as client:
            assert client.get("/health").status_code == 200
    refusals = sum(p.refusals for p in producers)
    print(
        f"\n{len(latencies)} requests, {refusals} pushes refused (503) and retried, slowest"
        f" {max(latencies):.2f} s (bound {BOUND} s); recovered {recovered_in:.2f} s after"
        f" SIGCONT; {len(received)} events delivered, {duplicates} twice"
        f" ({in_doubt} in commits reported in doubt)"
    )


def test_a_commit_in_doubt_is_at_least_once_as_documented(
    database: PgServer, relay: ServerProcess, relay_api: Api
) -> None:
    """docs/HA.md: a push whose commit went unanswered may be stored although answered
    503: retried, it is stored twice. A fetch's cut in doubt hands out the same batch
    next; an acknowledgement in doubt is retried harmlessly."""
    api, client = relay_api, relay_api.http
    registration_id = api.register()
    url = f"/api/v1/logs/{registration_id}"
    # A push in doubt, then Logstash's retry.
    with database.commits_stalled():
        assert_refused_in_time([timed(lambda: api.push({"n": 1}))])
    assert api.push({"n": 1}).status_code == 200
    [(appends, events)] = IN_DOUBT.findall(relay.run_log())
    assert (appends, events) == ("1", "1")
    assert api.drain(registration_id) == [{"n": 1}, {"n": 1}]
    # A cut in doubt: the next fetch hands out that batch.
    assert api.push({"n": 2}).status_code == 200
    with database.commits_stalled():
        assert_refused_in_time([timed(lambda: client.get(url))])
    batch = api.fetch(registration_id)
    assert batch["entries"] == [{"n": 2}] and api.fetch(registration_id) == batch
    # An acknowledgement in doubt: its retry answers 200, and the batch is gone.
    with database.commits_stalled():
        assert_refused_in_time([timed(lambda: api.ack(registration_id, batch["id"]))])
    assert api.ack(registration_id, batch["id"]).status_code == 200
    assert api.fetch(registration_id) == {}
