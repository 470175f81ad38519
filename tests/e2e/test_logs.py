"""Logs: one line per notable event, text or JSON, optional access log, no secret."""

from __future__ import annotations

import json

from tests.conftest import ServerFactory
from tests.support import Api

SECRETS = {
    "security": {"ingest_token": "INGEST-SECRET-1", "consumer_token": "CONSUMER-SECRET-2"},
    "storage": {"postgres": {"dsn": "postgresql://relay:DSN-SECRET-3@db.example/cfylogs"}},
}


def test_json_log_has_the_notable_events_and_no_secret(server_factory: ServerFactory) -> None:
    config = {**SECRETS, "server": {"port": 0, "address": "127.0.0.1", "access_log": True}}
    server = server_factory(config=config, args=["--log-format", "json"]).start()
    consumer = {"authorization": "Bearer CONSUMER-SECRET-2"}
    with server.client(headers=consumer) as client:
        api = Api(client)
        reg = api.register("orchestrator-a")
        ingest = {"authorization": "Bearer INGEST-SECRET-1"}
        assert client.post("/api/v1/logs", json={"n": 1}, headers=ingest).status_code == 200
        wrong = {"authorization": "Bearer WRONG-SECRET-4"}
        assert client.post("/api/v1/logs", json={"n": 2}, headers=wrong).status_code == 401
        batch = api.fetch(reg)
        assert api.ack(reg, batch["id"]).status_code == 200
        assert client.delete(f"/api/v1/registration/{reg}").status_code == 200
    assert server.stop() == 0

    text = server.run_log()
    for secret in ("INGEST-SECRET-1", "CONSUMER-SECRET-2", "DSN-SECRET-3", "WRONG-SECRET-4"):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert any("starting" in m for m in messages)
    assert any(m.startswith("storage sqlite ready") for m in messages)
    assert any(m.startswith("listening on http://127.0.0.1:") for m in messages)
    assert any(f"registration {reg} created" in m and "orchestrator-a" in m for m in messages)
    assert any(f"registration {reg} removed" in m for m in messages)
    assert messages[-1] == "stopped"
    access = [line for line in lines if line["logger"] == "cfylogs.access"]
    assert {(a["method"], a["route"], a["status"]) for a in access} >= {
        ("POST", "/api/v1/registration", 200),
        ("POST", "/api/v1/logs", 200),
        ("POST", "/api/v1/logs", 401),
        ("GET", "/api/v1/logs/{id}", 200),
        ("DELETE", "/api/v1/logs/{id}/ack/{batchId}", 200),
    }
    assert all(a["duration_ms"] >= 0 for a in access)


def test_no_access_log_by_default(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    with server.client() as client:
        Api(client).register()
    server.stop()
    assert "cfylogs.access" not in server.run_log()


def test_a_bad_secret_value_is_not_echoed(server_factory: ServerFactory) -> None:
    server = server_factory(config={"security": {"ingest_token": ["LIST-SECRET-5"]}})
    server.start(expect_ready=False)
    assert server.wait_exit() == 2
    log = server.run_log()
    assert "security.ingest_token" in log and "LIST-SECRET-5" not in log


def test_back_pressure_is_logged_when_it_starts_and_ends(server_factory: ServerFactory) -> None:
    limits = {"max_backlog_events": 2, "backlog_policy": "reject"}
    server = server_factory(config={"storage": limits}).start()
    with server.client() as client:
        api = Api(client)
        reg = api.register()
        assert api.push({"n": 1}, {"n": 2}).status_code == 200
        assert api.push({"n": 3}).status_code == 503
        assert api.push({"n": 3}).status_code == 503  # still on: logged once
        batch = api.fetch(reg)
        assert api.ack(reg, batch["id"]).status_code == 200
        assert api.push({"n": 3}).status_code == 200
    log = server.run_log()
    assert log.count("back-pressure on") == 1
    assert log.count("back-pressure off") == 1
    assert log.index("back-pressure on") < log.index("back-pressure off")
