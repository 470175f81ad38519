"""Several relay processes sharing one PostgreSQL database (storage.backend: postgres)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.e2e.test_crash import Consumer, Producer
from tests.e2e.test_import_legacy import A as LEGACY_A
from tests.e2e.test_import_legacy import build_legacy_home, run_import
from tests.pgserver import PgServer, free_port, running_server
from tests.support import Api, ServerProcess, wait_until

SECRET = "pw-never-in-logs"


def postgres_config(dsn: str, **extra: Any) -> dict[str, Any]:
    return {
        "storage": {"backend": "postgres", "postgres": {"dsn": f"{dsn} password={SECRET}"}},
        "buffer": {"size": 10},
        **extra,
    }


@pytest.fixture
def relays(pg_server: PgServer, server_factory: ServerFactory) -> list[ServerProcess]:
    """Three relays on one fresh schema, started together (they migrate it together)."""
    config = postgres_config(pg_server.create_schema())
    made = [server_factory(config) for _ in range(3)]
    for relay in made:
        relay.start(expect_ready=False)
    for relay in made:
        relay.wait_ready()
    return made


@pytest.fixture
def apis(relays: list[ServerProcess]) -> Iterator[list[Api]]:
    clients = [relay.client() for relay in relays]
    yield [Api(client) for client in clients]
    for client in clients:
        client.close()


def test_register_on_a_fetch_on_b_ack_on_c(relays: list[ServerProcess], apis: list[Api]) -> None:
    a, b, c = apis
    registration_id = a.register("orchestrator")
    assert b.push(*({"n": i} for i in range(15))).status_code == 200
    first = b.fetch(registration_id)
    assert first["id"] == 0 and first["entries"] == [{"n": i} for i in range(10)]
    # The pending batch is the same batch from any instance, byte for byte.
    raw_b = b.http.get(f"/api/v1/logs/{registration_id}").content
    raw_c = c.http.get(f"/api/v1/logs/{registration_id}").content
    assert raw_b == raw_c
    assert c.ack(registration_id, 0).status_code == 200
    assert a.ack(registration_id, 0).status_code == 200  # idempotent on another instance
    assert a.fetch(registration_id) == {"id": 1, "entries": [{"n": i} for i in range(10, 15)]}
    [listed] = c.http.get("/api/v1/registration").json()["registrations"]
    assert listed["id"] == registration_id and listed["name"] == "orchestrator"
    assert c.http.delete(f"/api/v1/registration/{registration_id}").status_code == 200
    assert a.http.get(f"/api/v1/logs/{registration_id}").status_code == 404
    assert all(SECRET not in relay.run_log() for relay in relays)


def test_concurrent_fetches_on_three_instances_never_overlap(apis: list[Api]) -> None:
    registration_id = apis[0].register()
    total = 95
    assert apis[1].push(*({"n": i} for i in range(total))).status_code == 200
    received: list[dict[str, Any]] = []
    rng = random.Random(8)
    while True:
        answers: list[dict[str, Any]] = [{}] * len(apis)

        def fetch(index: int) -> None:
            answers[index] = apis[index].fetch(registration_id)  # noqa: B023

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(apis))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Fetched at once from three instances: one batch, handed out three times.
        assert all(answer == answers[0] for answer in answers)
        if not answers[0]:
            break
        received.extend(answers[0]["entries"])
        assert rng.choice(apis).ack(registration_id, answers[0]["id"]).status_code == 200
    assert received == [{"n": i} for i in range(total)]


def test_long_poll_on_a_wakes_when_b_ingests(relays: list[ServerProcess], apis: list[Api]) -> None:
    a, b, _ = apis
    registration_id = a.register()
    result: dict[str, Any] = {}

    def poll() -> None:
        with relays[0].client() as client:
            t0 = time.monotonic()
            r = client.get(f"/api/v1/logs/{registration_id}", params={"wait": 30})
            result.update(body=r.json(), elapsed=time.monotonic() - t0)

    thread = threading.Thread(target=poll)
    thread.start()
    # Held by A (another instance's ingest is the only thing that can answer it).
    thread.join(timeout=0.5)
    assert thread.is_alive()
    assert b.push({"n": 1}).status_code == 200
    thread.join(20)
    assert result["body"] == {"id": 0, "entries": [{"n": 1}]}
    assert result["elapsed"] < 15  # woken by B's NOTIFY, not by the timeout


def test_fail_over_mid_batch_loses_nothing(relays: list[ServerProcess], apis: list[Api]) -> None:
    a, b, c = apis
    registration_id = a.register()
    assert c.push(*({"n": i} for i in range(25))).status_code == 200
    first = a.fetch(registration_id)
    assert a.ack(registration_id, first["id"]).status_code == 200
    in_flight = a.fetch(registration_id)  # handled but never acknowledged: A dies
    relays[0].kill()
    assert c.push(*({"n": i} for i in range(25, 30))).status_code == 200
    again = b.fetch(registration_id)
    assert again == in_flight  # the same registration, the same batch, on another instance
    received = first["entries"] + b.drain(registration_id)
    assert received == [{"n": i} for i in range(30)]


def test_database_restart_answers_503_then_recovers_by_itself(
    server_factory: ServerFactory,
) -> None:
    with running_server() as database:
        relay = server_factory(postgres_config(database.dsn())).start()
        with relay.client(timeout=30) as client:
            api = Api(client)
            registration_id = api.register()
            assert api.push({"n": 0}).status_code == 200
            database.stop()
            refused = api.push({"n": 1})
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert client.get("/health").status_code == 503
            database.start()
            wait_until(lambda: client.get("/health").status_code == 200, timeout=30)
            assert api.push({"n": 2}).status_code == 200
            assert api.drain(registration_id) == [{"n": 0}, {"n": 2}]
        assert "password" not in relay.run_log() and SECRET not in relay.run_log()


def test_a_relay_without_its_database_exits_1_so_that_it_is_restarted(
    server_factory: ServerFactory,
) -> None:
    nothing_there = f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres"
    relay = server_factory(postgres_config(nothing_there))
    relay.start(expect_ready=False)
    assert relay.wait_exit(30) == 1
    assert "storage.postgres.dsn" in relay.run_log() and SECRET not in relay.run_log()


def test_a_database_that_does_not_exist_is_a_configuration_error(
    server_factory: ServerFactory, pg_server: PgServer
) -> None:
    relay = server_factory(postgres_config(pg_server.dsn("no_such_database")))
    relay.start(expect_ready=False)
    assert relay.wait_exit(30) == 2
    assert "no_such_database" in relay.run_log()


def test_fail_over_under_load_loses_nothing_acknowledged(relays: list[ServerProcess]) -> None:
    """Producers push to B and C while a consumer works on A; A is killed mid-flight."""
    a, b, c = relays
    with a.client() as client:
        registration_id = Api(client).register()
    stop = threading.Event()
    producers = [Producer(target, p, stop) for p, target in enumerate((b, c, b, c))]
    consumer = Consumer(a, registration_id, stop)
    for thread in [*producers, consumer]:
        thread.start()
    wait_until(lambda: len(consumer.handled) >= 200, timeout=60)
    a.kill()  # SIGKILL, mid-batch for the consumer
    consumer.join(10)
    stop.set()
    for producer in producers:
        producer.join(10)
    with b.client() as client:
        rest = Api(client).drain(registration_id)  # the same registration, on another instance
    received = consumer.handled + rest
    may_repeat = {(e["p"], e["i"]) for e in consumer.unconfirmed}
    for producer in producers:
        got = [e["i"] for e in received if e["p"] == producer.p]
        assert not set(producer.acked) - set(got), f"producer {producer.p} lost events"
        repeated = {i for i in got if got.count(i) > 1}
        assert all((producer.p, i) in may_repeat for i in repeated), "an acked batch came again"
        first_seen = list(dict.fromkeys(got))
        assert first_seen == sorted(first_seen), f"producer {producer.p}: order broken"


def test_import_legacy_into_the_shared_database_while_relays_serve_it(
    relays: list[ServerProcess], apis: list[Api], tmp_path: Path
) -> None:
    legacy = tmp_path / "a4ccfylogs"
    legacy.mkdir()
    batches = build_legacy_home(legacy)
    done = run_import(relays[0], legacy)  # relays[0]'s config file: the same database
    assert "adopted 3 registrations (4 batches, 7 events)" in done.stdout, done.stderr
    a, b, _ = apis
    for batch_id, entries in batches[LEGACY_A]:
        batch = a.fetch(LEGACY_A)  # adopted batches are served by every relay
        assert (batch["id"], batch["entries"]) == (batch_id, entries)
        assert b.ack(LEGACY_A, batch_id).status_code == 200
    assert b.fetch(LEGACY_A) == {}
