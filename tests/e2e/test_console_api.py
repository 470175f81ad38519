"""The console over HTTP, without a browser: its files and headers, the tail and the
history endpoints, tokens, and a graceful stop with a tail poll open."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from cfylogs.http.console import STATIC
from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, cloudify_log, wait_for_gauge

TOKEN = "console-token-5e1b"
CONSOLE_ENDPOINTS = ["/api/v1/console", "/api/v1/console/history", "/api/v1/console/tail"]


def log(text: str, level: str = "info", deployment: str = "dep-1") -> dict[str, Any]:
    event: dict[str, Any] = json.loads(cloudify_log())
    event["message"]["text"] = text
    event["level"] = level
    event["context"]["deployment_id"] = deployment
    return event


def tail(client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/console/tail", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    data: dict[str, Any] = r.json()
    return data


def test_every_console_file_is_served_with_its_type_and_the_page_headers(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        for name, (_, content_type) in STATIC.items():
            r = client.get(f"/ui/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"] == content_type.decode()
            csp = r.headers["content-security-policy"]
            assert "script-src 'self';" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.content
        assert client.get("/ui").content == client.get("/ui/").content
        head = client.head("/ui/app.js")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(client.get("/ui/app.js").content)


@pytest.mark.parametrize(
    "path",
    ["/ui/index.htm", "/ui/../health", "/ui/..%2Fhealth", "/ui/static/app.js", "/ui/a/b", "/ui/.."],
)
def test_nothing_outside_the_list_is_served(server: ServerProcess, path: str) -> None:
    # On a raw socket: an HTTP client would resolve the dots itself.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 "), head
    assert json.loads(body)["error"]["code"] == 504


def test_console_files_are_read_only(server: ServerProcess) -> None:
    assert httpx.post(server.url + "/ui/", content=b"x").status_code == 405


def test_the_info_says_what_the_page_needs(server: ServerProcess) -> None:
    info = httpx.get(server.url + "/api/v1/console").json()
    assert info["accept"] == "any" and info["history"] == {"interval_sec": 5.0, "capacity": 720}
    assert info["tail"]["max_events"] == 2000 and abs(info["now"] - time.time()) < 5
    assert info["marks"] == {"behind_sec": 60, "unseen_sec": 120}


def test_the_tail_follows_ingest_with_a_cursor_and_filters(api: Api) -> None:
    client = api.http
    first = tail(client)  # the first poll starts the ring
    assert first == {"events": [], "last": 0, "missed": 0}
    pushed = api.push(log("one"), log("two <b>", "error"), log("three", deployment="dep-2"))
    assert pushed.is_success
    page = tail(client, after=first["last"])
    assert [e["event"]["message"]["text"] for e in page["events"]] == ["one", "two <b>", "three"]
    assert [e["seq"] for e in page["events"]] == [1, 2, 3] and page["last"] == 3
    raw = json.dumps(log("one")).encode()
    assert page["events"][0]["size"] == len(raw)
    assert abs(page["events"][0]["received"] - time.time()) < 5
    assert tail(client, after=3) == {"events": [], "last": 3, "missed": 0}
    only = tail(client, after=0, level="error")
    assert [e["seq"] for e in only["events"]] == [2]
    assert [e["seq"] for e in tail(client, after=0, deployment="dep-2")["events"]] == [3]
    assert [e["seq"] for e in tail(client, after=0, q="THREE")["events"]] == [3]


def test_a_long_poll_answers_when_an_event_arrives(api: Api, server: ServerProcess) -> None:
    cursor = tail(api.http)["last"]
    with httpx.Client(base_url=server.url, timeout=30) as viewer:
        answer: dict[str, Any] = {}

        def poll() -> None:
            started = time.monotonic()
            answer.update(tail(viewer, after=cursor, wait=20))
            answer["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=poll)
        thread.start()
        wait_for_gauge(server.url, "cfylogs_console_tail_polls_waiting", 1)
        assert api.push(log("arrived")).is_success
        thread.join(10)
    assert [e["event"]["message"]["text"] for e in answer["events"]] == ["arrived"]
    assert answer["seconds"] < 5


def test_a_slow_viewer_is_told_what_it_missed_and_nothing_is_consumed(api: Api) -> None:
    reg = api.register("orchestrator")
    cursor = tail(api.http)["last"]
    for start in range(0, 3000, 500):
        assert api.push(*(log(f"e{n}") for n in range(start, start + 500))).is_success
    page = tail(api.http, after=cursor, limit=1000)
    # 3000 accepted; the ring holds 2000 and one answer 1000: the newest.
    assert page["last"] == cursor + 3000 and page["missed"] == 2000
    assert page["events"][-1]["event"]["message"]["text"] == "e2999"
    (registration,) = api.http.get("/api/v1/registration").json()["registrations"]
    assert registration["id"] == reg and registration["backlog_events"] == 3000
    assert registration["pending_batch_id"] is None


def test_dead_letters_are_not_in_the_tail(server_factory: ServerFactory) -> None:
    server = server_factory({"ingest": {"accept": "cloudify"}}).start()
    with server.client() as client:
        api = Api(client)
        tail(client)
        assert api.push(log("kept"), {"not": "cloudify"}).is_success
        page = tail(client, after=0)
    assert [e["event"]["message"]["text"] for e in page["events"]] == ["kept"]


def test_the_history_has_a_sample_from_the_start(api: Api) -> None:
    data = api.http.get("/api/v1/console/history").json()
    assert len(data["time"]) >= 1 and data["interval_sec"] == 5.0
    for key in ("received_per_sec", "delivered_per_sec", "acknowledged_per_sec", "backlog_events"):
        assert len(data[key]) == len(data["time"])
    later = api.http.get("/api/v1/console/history", params={"after": data["time"][-1]}).json()
    assert later["time"] == [] or later["time"][0] > data["time"][-1]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/console/tail", {"after": "-1"}),
        ("/api/v1/console/tail", {"wait": "26"}),
        ("/api/v1/console/tail", {"wait": "nan"}),
        ("/api/v1/console/tail", {"limit": "0"}),
        ("/api/v1/console/tail", {"limit": "1001"}),
        ("/api/v1/console/tail", {"q": "x" * 201}),
        ("/api/v1/console/history", {"after": "soon"}),
    ],
)
def test_bad_parameters_are_400(server: ServerProcess, path: str, params: dict[str, str]) -> None:
    r = httpx.get(server.url + path, params=params)
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_with_a_consumer_token_console_data_needs_it_and_files_do_not(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"security": {"consumer_token": TOKEN}}).start()
    for path in CONSOLE_ENDPOINTS:
        refused = httpx.get(server.url + path)
        assert refused.status_code == 401 and TOKEN not in refused.text
        wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = httpx.get(server.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, path
    assert httpx.get(server.url + "/ui/").status_code == 200


def test_with_the_console_off_its_page_and_api_are_not_found_and_the_rest_serves(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"console": {"enabled": False}}).start()
    for path in [*CONSOLE_ENDPOINTS, "/ui/", "/ui/app.js", "/ui"]:
        r = httpx.get(server.url + path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/json"), path
    with server.client() as client:
        api = Api(client)
        registration = api.register()
        assert api.push(json.loads(cloudify_log())).status_code == 200
        assert len(api.fetch(registration)["entries"]) == 1


def test_a_graceful_stop_answers_an_open_tail_poll_at_once(server: ServerProcess) -> None:
    statuses: list[int] = []

    def poll() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            statuses.append(client.get("/api/v1/console/tail", params={"wait": 25}).status_code)

    thread = threading.Thread(target=poll)
    thread.start()
    wait_for_gauge(server.url, "cfylogs_console_tail_polls_waiting", 1)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    thread.join(5)
    assert statuses == [200]
