"""HTTP/1.1 as the relay's own protocol speaks it (http/protocol.py), over raw sockets.

What a client library would hide: pipelining and the order of answers,
framing (Content-Length, chunked bodies, `Expect: 100-continue`), HTTP/1.0
and `Connection: close`, HEAD, keep-alive, half-closed clients. Every answer
carries a Content-Length and, for errors, the spec's body.
"""

from __future__ import annotations

import gzip
import json
import socket
import time

from tests.conftest import ServerFactory
from tests.rawhttp import (
    Reader,
    chunked,
    connect,
    error_of,
    post,
    read_answers,
    request,
    status_of,
)
from tests.support import Api, ServerProcess, cloudify_log


def test_pipelined_requests_are_answered_in_order_and_all_stored(
    server: ServerProcess, api: Api
) -> None:
    registration_id = api.register()
    bodies = [cloudify_log(i) for i in range(5)]
    bodies.insert(2, b'{"no": "closing brace"')  # a 400 in the middle of the pipeline
    bodies.insert(4, json.dumps([{"big": "x" * 70_000}]).encode())  # a large one, queued
    with connect(server) as sock:
        sock.sendall(b"".join(post(body) for body in bodies))
        answers = read_answers(sock, len(bodies))
    assert [status_of(a) for a in answers] == [200, 200, 400, 200, 200, 200, 200]
    assert error_of(answers[2])["code"] == 400
    accepted = [json.loads(body) for _, _, body in answers if body.startswith(b'{"acc')]
    assert accepted == [{"accepted": 1}] * 6
    stored = api.drain(registration_id)
    assert [e.get("seq") for e in stored] == [0, 1, 2, None, 3, 4]  # in request order


def test_pipelined_requests_of_every_route_answer_in_order(server: ServerProcess, api: Api) -> None:
    registration_id = api.register()
    with connect(server) as sock:
        sock.sendall(
            post(cloudify_log(0))
            + request("GET", f"/api/v1/logs/{registration_id}")
            + request("GET", "/health")
            + request("DELETE", f"/api/v1/logs/{registration_id}/ack/0")
            + request("GET", f"/api/v1/logs/{registration_id}")
        )
        answers = read_answers(sock, 5)
    assert [status_of(a) for a in answers] == [200] * 5
    assert json.loads(answers[1][2])["id"] == 0
    assert json.loads(answers[2][2])["status"] == "ok"
    assert json.loads(answers[3][2]) == {"acknowledged": True, "events": 1}
    assert json.loads(answers[4][2]) == {}


def test_answers_carry_length_type_and_date_and_keep_the_connection(server: ServerProcess) -> None:
    with connect(server) as sock:
        reader = Reader(sock)
        for _ in range(3):
            sock.sendall(post(cloudify_log()))
            status, headers, body = reader.answer()
            assert status == b"HTTP/1.1 200 OK"
            assert headers[b"content-type"] == b"application/json"
            assert headers[b"content-length"] == str(len(body)).encode()
            assert b"date" in headers and b"connection" not in headers
            assert json.loads(body) == {"accepted": 1}


def test_connection_close_and_http_1_0_close_after_the_answer(server: ServerProcess) -> None:
    for raw in (post(cloudify_log(), "Connection: close"), post(cloudify_log(), version="1.0")):
        with connect(server) as sock:
            sock.sendall(raw + post(cloudify_log()))  # what follows a close is not read
            reader = Reader(sock)
            status, headers, body = reader.answer()
            assert status.endswith(b"200 OK") and json.loads(body) == {"accepted": 1}
            assert headers[b"connection"] == b"close"
            assert reader.closed()


def test_http_1_0_keep_alive_is_kept_when_asked(server: ServerProcess) -> None:
    with connect(server) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(request("GET", "/health", b"", "Connection: keep-alive", version="1.0"))
            status, headers, _ = reader.answer()
            assert status_of((status, headers, b"")) == 200
            assert headers[b"connection"] == b"keep-alive"


def test_a_wrong_token_is_refused_the_same_way_whatever_the_body(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"security": {"ingest_token": "s3cret"}}).start()
    small = cloudify_log()
    compressed = gzip.compress(small, mtime=0)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(post(small) + post(compressed, "Content-Encoding: gzip"))
        plain, gzipped = reader.answers(2)
        sock.sendall(post(small, "Authorization: Bearer s3cret"))
        accepted = reader.answer()
    assert status_of(plain) == status_of(gzipped) == 401
    assert plain[2] == gzipped[2] and error_of(plain)["code"] == 401
    assert json.loads(accepted[2]) == {"accepted": 1}


def test_keep_alive_closes_idle_connections_only(server_factory: ServerFactory) -> None:
    """One timer per connection, pushed back by each request: a connection busy for
    longer than the keep-alive stays open, an idle one is closed after it."""
    server = server_factory({"server": {"keep_alive_sec": 1}}).start()
    with connect(server) as sock:
        reader = Reader(sock)
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # requests 0.3 s apart, 2.5 s in all
            sock.sendall(post(cloudify_log()))
            assert status_of(reader.answer()) == 200
            time.sleep(0.3)  # the workload's own pace, not a synchronisation
        idle_since = time.monotonic()
        sock.settimeout(10)
        assert reader.closed()
        assert 0.5 < time.monotonic() - idle_since < 5


def test_expect_100_continue_gets_its_interim_answer_then_the_final_one(
    server: ServerProcess, api: Api
) -> None:
    registration_id = api.register()
    body = cloudify_log(7)
    head = post(body, "Expect: 100-continue")[: -len(body)]
    with connect(server) as sock:
        sock.sendall(head)
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert status_of(Reader(sock).answer()) == 200
    assert [e["seq"] for e in api.drain(registration_id)] == [7]


def test_expect_100_continue_refused_from_the_head_gets_the_refusal_only(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"security": {"ingest_token": "s3cret"}}).start()
    body = cloudify_log()
    with connect(server) as sock:
        sock.sendall(post(body, "Expect: 100-continue")[: -len(body)])
        reader = Reader(sock)
        answer = reader.answer()  # no 100 Continue before it: the body is not wanted
        assert status_of(answer) == 401 and error_of(answer)["code"] == 401
        assert answer[1][b"connection"] == b"close" and reader.closed()


def test_chunked_bodies_are_read_and_stored(server: ServerProcess, api: Api) -> None:
    registration_id = api.register()
    events = b"".join(cloudify_log(i) + b"\n" for i in range(3))
    raw = (
        b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-ndjson\r\n\r\n" + chunked(events)
    )
    with connect(server) as sock:
        sock.sendall(raw + raw)  # two pipelined, then the client goes
        answers = read_answers(sock, 2)
    assert [json.loads(a[2]) for a in answers] == [{"accepted": 3}] * 2
    assert [e["seq"] for e in api.drain(registration_id)] == [0, 1, 2, 0, 1, 2]
    assert "Traceback" not in server.run_log() and "ERROR" not in server.run_log()


def test_a_chunked_body_over_the_limit_is_413_and_the_connection_closed(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"server": {"max_request_bytes": 4096}}).start()
    raw = b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(raw + chunked(b"[" + b" " * 10_000 + b"]", size=1000))
        reader = Reader(sock)
        answer = reader.answer()
        assert status_of(answer) == 413 and error_of(answer)["code"] == 413
        assert reader.closed()


def test_head_answers_the_length_of_get_without_the_body(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request("HEAD", "/openapi.json") + request("GET", "/health"))
        reader = Reader(sock)
        # HEAD's body is not sent: read its head alone, then the next answer
        while b"\r\n\r\n" not in reader.buffer:
            reader.buffer += sock.recv(65536)
        head, reader.buffer = reader.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: " in head
        assert int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) > 1000
        assert json.loads(reader.answer()[2])["status"] == "ok"


def test_a_known_path_with_another_method_is_405_with_allow(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            request("PUT", "/api/v1/logs", b"{}")
            + request("POST", "/health", b"{}")
            + request("POST", "/api/v1/logs/some-id", b"{}")  # a fetch is not safe: no HEAD
        )
        answers = read_answers(sock, 3)
    assert [status_of(a) for a in answers] == [405] * 3
    assert [a[1][b"allow"] for a in answers] == [b"POST", b"GET, HEAD", b"GET"]
    for answer in answers:
        assert error_of(answer)["code"] == 405


def test_a_half_closed_client_still_gets_its_answers(server: ServerProcess, api: Api) -> None:
    registration_id = api.register()
    with connect(server) as sock:
        sock.sendall(post(cloudify_log(1)) + post(cloudify_log(2)))
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        assert [status_of(a) for a in reader.answers(2)] == [200, 200]
        assert reader.closed()
    assert [e["seq"] for e in api.drain(registration_id)] == [1, 2]


def test_requests_abandoned_mid_body_hold_nothing(server_factory: ServerFactory) -> None:
    """Bytes a client sent count in server.max_ingest_bytes_in_flight until it is
    answered or goes away: clients that leave mid-body (or time out) give them back."""
    budget = 200_000
    server = server_factory(
        {"server": {"max_ingest_bytes_in_flight": budget, "request_timeout_sec": 1}}
    ).start()
    declared = 60_000  # four of these leaked would be more than the whole budget
    for _ in range(4):
        with connect(server) as sock:
            sock.sendall(post(b"{" + b" " * declared + b"}")[: -declared // 2])
    with connect(server) as sock:  # and one that stalls until the request timeout
        sock.sendall(post(b"{" + b" " * declared + b"}")[: -declared // 2])
        sock.settimeout(10)
        answer = Reader(sock).answer()
        assert status_of(answer) == 408 and error_of(answer)["code"] == 408
    with server.client(timeout=10) as client:
        for body in (cloudify_log(), json.dumps([{"n": i} for i in range(10_000)]).encode()):
            response = client.post("/api/v1/logs", content=body)
            assert response.status_code == 200, response.text
