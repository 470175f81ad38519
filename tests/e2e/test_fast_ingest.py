"""The fast path for small ingest requests (server.py) behaves as HTTP/1.1 and as the API.

A plain `POST /api/v1/logs` with a small Content-Length body is read and
answered by the protocol itself, without an ASGI cycle: these tests speak raw
HTTP to check what a library client would hide (pipelining, HTTP/1.0,
`Connection: close`, one head per answer) and that the answers are those of
the ASGI path (larger or compressed bodies).
"""

from __future__ import annotations

import gzip
import json
import socket
import time

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, cloudify_log


def _connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _post(body: bytes, *headers: str, version: str = "1.1") -> bytes:
    head = [f"POST /api/v1/logs HTTP/{version}", "Host: relay", f"Content-Length: {len(body)}"]
    head += ["Content-Type: application/json", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _read_answers(sock: socket.socket, count: int) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """`count` answers (status line, headers, body), each read by its Content-Length."""
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers: {buffer!r}"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in a body"
            buffer += chunk
        answers.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return answers


def _closed(sock: socket.socket) -> bool:
    return sock.recv(1) == b""


def test_pipelined_requests_are_answered_in_order_and_all_stored(
    server: ServerProcess, api: Api
) -> None:
    registration_id = api.register()
    bodies = [cloudify_log(i) for i in range(5)]
    bodies.insert(2, b'{"no": "closing brace"')  # a 400 in the middle of the pipeline
    bodies.insert(4, json.dumps([{"big": "x" * 70_000}]).encode())  # the ASGI path, queued
    with _connect(server) as sock:
        sock.sendall(b"".join(_post(body) for body in bodies))
        answers = _read_answers(sock, len(bodies))
    statuses = [status.split(b" ")[1] for status, _, _ in answers]
    assert statuses == [b"200", b"200", b"400", b"200", b"200", b"200", b"200"]
    assert json.loads(answers[2][2])["error"]["code"] == 400
    assert [json.loads(body) for _, _, body in answers if body.startswith(b'{"acc')] == [
        {"accepted": 1}
    ] * 6
    stored = api.drain(registration_id)
    assert [e.get("seq") for e in stored] == [0, 1, 2, None, 3, 4]  # in request order


def test_answers_carry_length_type_and_date_and_keep_the_connection(server: ServerProcess) -> None:
    with _connect(server) as sock:
        for _ in range(3):
            sock.sendall(_post(cloudify_log()))
            [(status, headers, body)] = _read_answers(sock, 1)
            assert status == b"HTTP/1.1 200 OK"
            assert headers[b"content-type"] == b"application/json"
            assert headers[b"content-length"] == str(len(body)).encode()
            assert b"date" in headers and b"connection" not in headers
            assert json.loads(body) == {"accepted": 1}


def test_connection_close_and_http_1_0_close_after_the_answer(server: ServerProcess) -> None:
    for request in (
        _post(cloudify_log(), "Connection: close"),
        _post(cloudify_log(), version="1.0"),
    ):
        with _connect(server) as sock:
            sock.sendall(request)
            [(status, headers, body)] = _read_answers(sock, 1)
            assert status.endswith(b"200 OK") and json.loads(body) == {"accepted": 1}
            assert headers[b"connection"] == b"close"
            assert _closed(sock)


def test_a_wrong_token_is_refused_the_same_way_on_both_paths(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"security": {"ingest_token": "s3cret"}}).start()
    small = cloudify_log()
    compressed = gzip.compress(small, mtime=0)  # Content-Encoding: the ASGI path
    with _connect(server) as sock:
        sock.sendall(_post(small) + _post(compressed, "Content-Encoding: gzip"))
        answers = _read_answers(sock, 2)
        sock.sendall(_post(small, "Authorization: Bearer s3cret"))
        [accepted] = _read_answers(sock, 1)
    (fast_status, fast_headers, fast_body), (asgi_status, _, asgi_body) = answers
    assert fast_status == asgi_status == b"HTTP/1.1 401 Unauthorized"
    assert fast_body == asgi_body and json.loads(fast_body)["error"]["code"] == 401
    assert fast_headers[b"content-type"] == b"application/json"
    assert json.loads(accepted[2]) == {"accepted": 1}


def test_keep_alive_closes_idle_connections_only(server_factory: ServerFactory) -> None:
    """One keep-alive timer per connection, pushed back by each request: a connection
    busy for longer than the timeout stays open, an idle one is closed after it."""
    server = server_factory({"server": {"keep_alive_sec": 1}}).start()
    with _connect(server) as sock:
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # requests 0.3 s apart, 2.5 s in all
            sock.sendall(_post(cloudify_log()))
            [(status, _, _)] = _read_answers(sock, 1)
            assert status.endswith(b"200 OK")
            time.sleep(0.3)  # the workload's own pace, not a synchronisation
        idle_since = time.monotonic()
        sock.settimeout(10)
        assert _closed(sock)
        assert 0.5 < time.monotonic() - idle_since < 5


def test_requests_abandoned_mid_body_give_their_memory_share_back(
    server_factory: ServerFactory,
) -> None:
    """A small ingest takes its share of server.max_ingest_bytes_in_flight when its
    headers arrive; clients that disconnect (or time out) before the body is whole
    must not keep it, or every later ingest would wait for ever."""
    budget = 200_000
    server = server_factory(
        {"server": {"max_ingest_bytes_in_flight": budget, "request_timeout_sec": 1}}
    ).start()
    declared = 60_000  # four of these leaked would be more than the whole budget
    for _ in range(4):
        with _connect(server) as sock:
            sock.sendall(_post(b"{" + b" " * declared + b"}")[: -declared // 2])
    with _connect(server) as sock:  # and one that stalls until the request timeout
        sock.sendall(_post(b"{" + b" " * declared + b"}")[: -declared // 2])
        sock.settimeout(10)
        assert b" 408 " in sock.recv(65536)
    with server.client(timeout=10) as client:
        for body in (cloudify_log(), json.dumps([{"n": i} for i in range(10_000)]).encode()):
            response = client.post("/api/v1/logs", content=body)
            assert response.status_code == 200, response.text
