"""The five compat endpoints, as the Alien4Cloud plugin and Logstash use them."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, cloudify_log


def test_alien4cloud_plugin_sequence(api: Api) -> None:
    r = api.http.post(
        "/api/v1/registration", content=b"{}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 200
    registration_id = r.json()["id"]
    assert uuid.UUID(registration_id).version == 4
    assert api.http.get(f"/api/v1/logs/{registration_id}").content == b"{}"

    events = [cloudify_log(i) for i in range(3)]
    for event in events:
        assert api.push(event).status_code == 200
    first = api.http.get(f"/api/v1/logs/{registration_id}")
    assert first.status_code == 200
    body = first.json()
    assert body["id"] == 0
    assert [json.dumps(e, separators=(",", ":")).encode() for e in body["entries"]] == events
    again = api.http.get(f"/api/v1/logs/{registration_id}")
    assert again.content == first.content  # the same batch, byte for byte

    assert api.ack(registration_id, 0).status_code == 200
    assert api.http.get(f"/api/v1/logs/{registration_id}").content == b"{}"
    api.push(cloudify_log(3))
    assert api.fetch(registration_id)["id"] == 1


def test_ingest_answers_200_with_content_length_and_a_json_body(api: Api) -> None:
    api.register()
    r = api.push({"a": 1}, {"b": 2})
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(r.content))
    assert "transfer-encoding" not in r.headers
    assert r.json() == {"accepted": 2}


def test_entries_are_delivered_exactly_as_posted(api: Api) -> None:
    registration_id = api.register()
    raw = b'{"z": 1, "a": [1.50, "\\u00e9", null], "big": 123456789012345678901234567890}'
    assert api.http.post("/api/v1/logs", content=raw).status_code == 200
    r = api.http.get(f"/api/v1/logs/{registration_id}")
    assert r.content == b'{"id":0,"entries":[' + raw + b"]}"


def test_batches_hold_at_most_buffer_size_entries(server_factory: ServerFactory) -> None:
    server = server_factory(config={"buffer": {"size": 3}}).start()
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        api.push(*[{"n": i} for i in range(7)])
        sizes, ids = [], []
        while batch := api.fetch(registration_id):
            sizes.append(len(batch["entries"]))
            ids.append(batch["id"])
            api.ack(registration_id, batch["id"])
        assert (sizes, ids) == ([3, 3, 1], [0, 1, 2])
        api.push(*[{"n": i} for i in range(5)])
        assert len(api.fetch(registration_id, max=2)["entries"]) == 2


def test_fan_out_to_several_registrations(api: Api) -> None:
    regs = [api.register(name=f"orchestrator-{i}") for i in range(3)]
    api.push(*[{"n": i} for i in range(10)])
    for registration_id in regs:
        assert [e["n"] for e in api.drain(registration_id)] == list(range(10))
    listed = api.http.get("/api/v1/registration").json()["registrations"]
    assert sorted(r["name"] for r in listed) == [
        "orchestrator-0",
        "orchestrator-1",
        "orchestrator-2",
    ]
    assert all(r["backlog_events"] == 0 for r in listed)
    assert api.http.get("/health").json()["storage"]["events"] == 0


def test_events_before_any_registration_are_dropped(api: Api) -> None:
    assert api.push({"early": True}).status_code == 200
    registration_id = api.register()
    assert api.fetch(registration_id) == {}
    api.push({"late": True})
    assert api.drain(registration_id) == [{"late": True}]


def test_unknown_registration_is_404_with_code_504(api: Api) -> None:
    for method, path in [
        ("GET", "/api/v1/logs/nope"),
        ("DELETE", "/api/v1/logs/nope/ack/0"),
        ("DELETE", "/api/v1/registration/nope"),
    ]:
        r = api.http.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json() == {
            "data": None,
            "error": {"code": 504, "message": "No registration can be found for id nope"},
        }


def test_acks_are_idempotent_and_a_never_delivered_batch_is_409(api: Api) -> None:
    registration_id = api.register()
    r = api.ack(registration_id, 0)
    assert r.status_code == 409 and r.json()["error"]["code"] == 409
    api.push({"n": 1}, {"n": 2})
    batch = api.fetch(registration_id)
    assert api.ack(registration_id, 1).status_code == 409
    assert api.fetch(registration_id) == batch  # nothing was skipped
    assert api.ack(registration_id, 0).status_code == 200
    assert api.ack(registration_id, 0).status_code == 200
    r = api.http.delete(f"/api/v1/logs/{registration_id}/ack/abc")
    assert r.status_code == 400 and r.json()["error"]["code"] == 400


def test_removed_registration_is_gone(api: Api) -> None:
    registration_id = api.register()
    assert api.http.delete(f"/api/v1/registration/{registration_id}").status_code == 200
    assert api.http.get(f"/api/v1/logs/{registration_id}").status_code == 404
    assert api.http.get("/api/v1/registration").json() == {"registrations": []}


def test_unknown_paths_and_methods(api: Api) -> None:
    assert api.http.get("/nope").status_code == 404
    r = api.http.put("/api/v1/logs")
    assert r.status_code == 405 and r.json()["error"]["code"] == 405


def test_pending_batch_survives_a_restart(server: ServerProcess) -> None:
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        api.push(*[{"n": i} for i in range(5)])
        before = client.get(f"/api/v1/logs/{registration_id}").content
    assert server.stop() == 0
    server.start()
    with server.client() as client:
        api = Api(client)
        assert client.get(f"/api/v1/logs/{registration_id}").content == before
        assert api.ack(registration_id, 0).status_code == 200
        api.push({"n": 5})
        assert api.fetch(registration_id) == {"id": 1, "entries": [{"n": 5}]}


def test_health(api: Api) -> None:
    r = api.http.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["storage"]["backend"] == "sqlite"


def test_registration_body_may_be_empty_or_named_but_not_junk(api: Api) -> None:
    assert api.http.post("/api/v1/registration").status_code == 200
    assert api.http.post("/api/v1/registration", content=b"[1]").status_code == 400
    assert api.http.post("/api/v1/registration", content=b"{").status_code == 400
    r = api.http.post("/api/v1/registration", json={"name": 5})
    assert r.status_code == 400
    assert isinstance(httpx.Response(200, content=b"{}").json(), dict)
