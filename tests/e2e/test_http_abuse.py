"""Hostile and broken clients against the HTTP core, each answered as docs/SECURITY.md says.

One test per finding of the adversarial probe (issue 12) and per limit:
what a client declares but never sends, bodies that decompress slowly,
headers without end, desync through `Upgrade`, junk after a valid request,
connections kept open by bare CRLFs, two `Authorization` headers, and a
client that goes away. Time bounds here are failure modes (a stall until the
request timeout, a quadratic decoder), far from what a healthy server takes.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.rawhttp import Reader, chunked, connect, error_of, post, read_answers, request, status_of
from tests.support import Api, ServerProcess, cloudify_log, memory_bytes, wait_until

TIMEOUT_SEC = 30  # the request timeout of these servers: a stall would last this long


@pytest.fixture
def guarded(server_factory: ServerFactory) -> ServerProcess:
    return server_factory({"server": {"request_timeout_sec": TIMEOUT_SEC}}).start()


def _pid(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def _timed_pushes(server: ServerProcess, count: int = 20) -> float:
    """Seconds that `count` single-event pushes take, each answered 200."""
    started = time.monotonic()
    with server.client(timeout=TIMEOUT_SEC * 2) as client:
        for i in range(count):
            assert client.post("/api/v1/logs", content=cloudify_log(i)).status_code == 200
    return time.monotonic() - started


@pytest.fixture
def held_sockets() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


# 1. What a client declares costs nothing until it sends it.


def test_declared_but_unsent_bodies_do_not_stall_other_ingest(
    guarded: ServerProcess, api: Api, held_sockets: list[socket.socket]
) -> None:
    api.register()
    head = post(b"x" * 16 * 1024**2)[: -16 * 1024**2]  # declares 16 MiB, sends none of it
    for _ in range(4):
        held_sockets.append(connect(guarded))
        held_sockets[-1].sendall(head)
    small = post(b"x" * 65536)[:-65536]
    for _ in range(1100):
        held_sockets.append(connect(guarded))
        held_sockets[-1].sendall(small)
    # Were the declared bytes booked (64 MiB budget), every push below would wait for
    # the request timeout of the holders.
    assert _timed_pushes(guarded) < TIMEOUT_SEC / 3


def test_bodies_really_sent_beyond_the_budget_wait_their_turn_and_all_complete(
    server_factory: ServerFactory, api: Api
) -> None:
    server = server_factory({"server": {"max_ingest_bytes_in_flight": "1MiB"}}).start()
    with server.client() as client:
        registration_id = Api(client).register()
    batch = json.dumps([{"n": n, "pad": "x" * 1000} for n in range(600)]).encode()  # 0.6 MB
    results: list[int] = []

    def push() -> None:
        with server.client(timeout=60) as client:
            results.append(client.post("/api/v1/logs", content=batch).status_code)

    threads = [threading.Thread(target=push) for _ in range(8)]  # 4.8 MB through 1 MiB
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    with server.client() as client:
        assert len(Api(client).drain(registration_id)) == 8 * 600


# 2. Decompression is linear and bounded.


def test_a_body_of_many_empty_gzip_members_is_answered_quickly(guarded: ServerProcess) -> None:
    member = gzip.compress(b"", mtime=0)  # 20 bytes each
    body = member * (15 * 1024**2 // len(member))  # 15 MiB of them: quadratic, minutes
    answered: list[httpx.Response] = []

    def push() -> None:
        with guarded.client(timeout=TIMEOUT_SEC * 2) as client:
            headers = {"Content-Encoding": "gzip"}
            answered.append(client.post("/api/v1/logs", content=body, headers=headers))

    started = time.monotonic()
    thread = threading.Thread(target=push)
    thread.start()
    with guarded.client(timeout=TIMEOUT_SEC) as client:  # the loop stays free meanwhile
        assert client.get("/health").status_code == 200
    thread.join()
    assert time.monotonic() - started < TIMEOUT_SEC / 2
    [response] = answered
    assert response.status_code == 400 and "empty" in response.json()["error"]["message"]


# 3. Heads are bounded: the URL (414), the header block and the header count (431).


def _send_and_read(server: ServerProcess, raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Send `raw` from a thread (the server may stop reading it) and read the answer."""
    sock = connect(server)

    def send() -> None:
        with contextlib.suppress(OSError):  # refused and closed midway: as expected
            sock.sendall(raw)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return Reader(sock).answer()
    finally:
        sock.close()
        sender.join(timeout=10)


def test_a_header_without_end_is_431_and_costs_no_memory(guarded: ServerProcess) -> None:
    rss_before = memory_bytes(_pid(guarded))
    raw = b"GET /health HTTP/1.1\r\nHost: relay\r\nX-Big: " + b"a" * 40 * 1024**2 + b"\r\n\r\n"
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(_send_and_read(guarded, raw)))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status_of(a) for a in answers] == [431] * 16
    assert all(error_of(a)["code"] == 431 for a in answers)
    # 16 heads of 40 MiB read whole would be 640 MB; a limit checked while reading, kB.
    assert memory_bytes(_pid(guarded)) - rss_before < 64 * 1024**2


def test_too_many_headers_is_431(guarded: ServerProcess) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(200_000))
    answer = _send_and_read(guarded, b"GET /health HTTP/1.1\r\n" + headers + b"\r\n")
    assert status_of(answer) == 431 and error_of(answer)["code"] == 431


def test_limits_are_settings_and_a_long_url_is_414(server_factory: ServerFactory) -> None:
    server = server_factory(
        {"server": {"max_url_bytes": 1024, "max_header_bytes": 2048, "max_headers": 10}}
    ).start()
    url = "/api/v1/logs/" + "a" * 2000
    assert status_of(_send_and_read(server, request("GET", url))) == 414
    ten = [f"X-{i}: v" for i in range(9)]  # and Host: ten headers pass, eleven do not
    assert status_of(_send_and_read(server, request("GET", "/health", b"", *ten))) == 200
    eleven = [*ten, "X-last: v"]
    assert status_of(_send_and_read(server, request("GET", "/health", b"", *eleven))) == 431
    big = ["X-big: " + "b" * 3000]
    answer = _send_and_read(server, request("GET", "/health", b"", *big))
    assert status_of(answer) == 431 and "server.max_header_bytes" in error_of(answer)["message"]


# 4. Upgrade is ignored: the bytes stay one stream of requests.


def test_an_upgrade_request_is_answered_and_what_follows_is_read_as_requests(
    server: ServerProcess, api: Api
) -> None:
    registration_id = api.register()
    upgrade = request("GET", "/health", b"", "Connection: Upgrade", "Upgrade: foo")
    with connect(server) as sock:
        sock.sendall(upgrade + post(cloudify_log(1)) + upgrade + post(cloudify_log(2)))
        answers = read_answers(sock, 4)
    assert [status_of(a) for a in answers] == [200, 200, 200, 200]
    assert [e["seq"] for e in api.drain(registration_id)] == [1, 2]


def test_the_body_of_an_upgrade_request_is_its_body_not_a_request(
    server: ServerProcess, api: Api
) -> None:
    registration_id = api.register()
    smuggled = b"GET /api/v1/registration HTTP/1.1\r\nHost: relay\r\n\r\n"
    for framing in ("length", "chunked"):
        if framing == "length":
            raw = post(smuggled, "Connection: Upgrade", "Upgrade: foo")
        else:
            raw = (
                b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: Upgrade\r\nUpgrade: foo\r\n\r\n" + chunked(smuggled)
            )
        with connect(server) as sock:
            sock.sendall(raw + post(cloudify_log(3)))
            reader = Reader(sock)
            refused, stored = reader.answers(2)
            # The smuggled GET is the POST's (invalid) body: a 400, and nothing more.
            assert status_of(refused) == 400 and error_of(refused)["code"] == 400
            assert json.loads(stored[2]) == {"accepted": 1}
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(1)  # no third answer: the GET was never run
    assert [e["seq"] for e in api.drain(registration_id)] == [3, 3]


# 5. What was processed is answered, in order, before the error of what follows.


def test_junk_after_a_valid_request_gets_the_answer_then_a_400(
    server: ServerProcess, api: Api
) -> None:
    registration_id = api.register()
    with connect(server) as sock:
        sock.sendall(post(cloudify_log(5)) + b"\x16\x03\x01 not HTTP at all\r\n\r\n")
        reader = Reader(sock)
        stored, refused = reader.answers(2)
        assert json.loads(stored[2]) == {"accepted": 1}
        assert status_of(refused) == 400 and error_of(refused)["code"] == 400
        assert refused[1][b"connection"] == b"close" and reader.closed()
    assert [e["seq"] for e in api.drain(registration_id)] == [5]  # once: no retry to dedupe


def test_a_malformed_request_is_400_and_a_foreign_version_505_with_the_error_body(
    server: ServerProcess,
) -> None:
    for raw, status in (
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"NOT-A-METHOD / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (post(b"{}", "Content-Length: 2"), 400),  # two Content-Length headers
    ):
        answer = _send_and_read(server, raw)
        assert status_of(answer) == status, raw
        error_of(answer)


# 6. Idle means no complete request: bare CRLFs do not keep a connection open.


def test_crlf_alone_does_not_keep_an_idle_connection_open(server_factory: ServerFactory) -> None:
    server = server_factory({"server": {"keep_alive_sec": 1}}).start()
    with connect(server) as sock:
        sock.sendall(request("GET", "/health"))
        reader = Reader(sock)
        assert status_of(reader.answer()) == 200
        started = time.monotonic()
        sock.settimeout(0.3)
        closed = False
        while not closed and time.monotonic() - started < 10:
            try:
                sock.sendall(b"\r\n")
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue  # nothing yet: the keep-alive has not passed
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed and time.monotonic() - started < 5


# 7. One rule for two Authorization headers: refused.


def test_two_authorization_headers_are_refused_on_every_route(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"security": {"ingest_token": "in", "consumer_token": "out"}}).start()
    for token in ("in", "out"):
        twice = [f"Authorization: Bearer {token}", "Authorization: Bearer other"]
        for raw in (
            post(cloudify_log(), *twice),
            request("POST", "/api/v1/registration", b"{}", *twice),
            request("GET", "/metrics", b"", *twice),
        ):
            answer = _send_and_read(server, raw)
            assert status_of(answer) == 400, raw
            assert "authorization" in error_of(answer)["message"]


# 8. A client going away is not an error of ours.


def test_clients_that_leave_mid_answer_leave_no_error_in_the_log(
    server: ServerProcess, api: Api
) -> None:
    api.register()
    raw = (
        b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(cloudify_log())
    )
    for _ in range(20):
        sock = connect(server)
        sock.sendall(raw + raw)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # at once, with a reset: the answers have nowhere to go
    with connect(server) as sock:  # a long poll whose client leaves
        reg = api.register()
        sock.sendall(request("GET", f"/api/v1/logs/{reg}?wait=30"))
    wait_until(lambda: api.push(cloudify_log()).status_code == 200)
    log = server.run_log()
    assert "ERROR" not in log and "Traceback" not in log and "Exception" not in log


def test_a_client_that_never_reads_is_not_read_either(server: ServerProcess) -> None:
    """Pipelined requests from a client that reads no answer: the server stops reading
    it once its answers back up, instead of buffering both ways without end."""
    rss_before = memory_bytes(_pid(server))
    with connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(1)
        one = request("GET", "/openapi.json")
        sent = 0
        try:
            while sent < 200 * 1024**2:
                sent += sock.send(one * 1000)
        except TimeoutError:
            pass  # the server stopped reading: sending blocks
        assert sent < 200 * 1024**2
    assert memory_bytes(_pid(server)) - rss_before < 100 * 1024**2
    with server.client() as client:
        assert client.get("/health").status_code == 200


# Found by a review of the core: each reproduced against the server before the fix.


def test_a_trailer_without_end_is_431_and_stalls_nobody(guarded: ServerProcess) -> None:
    raw = (
        b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\nX-Long: " + b"a" * 8 * 1024**2
    )
    answers: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    sender = threading.Thread(target=lambda: answers.append(_send_and_read(guarded, raw)))
    sender.start()
    with guarded.client(timeout=TIMEOUT_SEC) as client:  # the loop is not held meanwhile
        started = time.monotonic()
        assert client.get("/health").status_code == 200
        assert time.monotonic() - started < TIMEOUT_SEC / 3
    sender.join()
    [answer] = answers
    assert status_of(answer) == 431 and error_of(answer)["code"] == 431


def test_trailers_are_not_taken_for_headers(server: ServerProcess, api: Api) -> None:
    """A trailer `Content-Encoding` (judged after the head) changes nothing."""
    registration_id = api.register()
    raw = (
        b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(cloudify_log(8))[:-2]
        + b"Content-Encoding: gzip\r\nAuthorization: Bearer x\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(raw)
        answer = Reader(sock).answer()
    assert json.loads(answer[2]) == {"accepted": 1}
    assert [e["seq"] for e in api.drain(registration_id)] == [8]


def test_clients_that_never_read_are_cut_off_and_hold_no_budget(
    server_factory: ServerFactory, api: Api, held_sockets: list[socket.socket]
) -> None:
    server = server_factory(
        {"server": {"request_timeout_sec": 2, "max_ingest_bytes_in_flight": "1MiB"}}
    ).start()
    filler = request("GET", "/health", b" " * 60_000)  # GET bodies: read past, never kept
    for _ in range(2):
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request("GET", "/openapi.json") * 200 + filler * 40)
        held_sockets.append(sock)
    with server.client(timeout=TIMEOUT_SEC) as client:
        batch = json.dumps([{"n": n, "pad": "x" * 1000} for n in range(300)]).encode()
        started = time.monotonic()
        assert client.post("/api/v1/logs", content=batch).status_code == 200
        assert time.monotonic() - started < 1.5  # not after the 2 s request timeout

    def cut_off(sock: socket.socket) -> bool:
        sock.settimeout(0.2)
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            return False  # still open, answers still coming or pending
        except ConnectionResetError:
            pass
        return True

    # Its answers unread for request_timeout_sec: the connection is aborted.
    wait_until(lambda: all(cut_off(sock) for sock in held_sockets), timeout=TIMEOUT_SEC)


def test_a_declared_body_over_the_limit_is_413_from_the_head(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"server": {"max_request_bytes": 4096}}).start()
    head = b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Length: 1000000000\r\n"
    for extra in (b"Expect: 100-continue\r\n", b""):
        with connect(server, timeout=TIMEOUT_SEC / 3) as sock:
            sock.sendall(head + extra + b"\r\n")  # and not a byte of the body
            reader = Reader(sock)
            answer = reader.answer()  # no 100 Continue before it
            assert status_of(answer) == 413 and error_of(answer)["code"] == 413
            assert reader.closed()


def test_a_refusal_decided_from_the_head_is_answered_at_eof_or_stop(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"server": {"request_timeout_sec": TIMEOUT_SEC}}).start()
    unfinished = request("POST", "/nope", b"0123456789" * 10)[:-90]
    with connect(server, timeout=TIMEOUT_SEC / 3) as sock:
        sock.sendall(unfinished)
        sock.shutdown(socket.SHUT_WR)
        assert status_of(Reader(sock).answer()) == 404  # at once, not at the timeout
    sock = connect(server, timeout=TIMEOUT_SEC / 3)
    # Read in one go with the GET before it: once the GET is answered, the head is read.
    sock.sendall(request("GET", "/health") + unfinished)
    reader = Reader(sock)
    try:
        assert status_of(reader.answer()) == 200
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert status_of(reader.answer()) == 404  # answered, not held until the timeout
    finally:
        sock.close()
    assert server.wait_exit() == 0


def test_a_413_found_mid_body_is_not_turned_into_a_408(
    server_factory: ServerFactory, api: Api
) -> None:
    server = server_factory(
        {"server": {"max_request_bytes": 4096, "request_timeout_sec": 2}}
    ).start()
    with server.client() as client:
        registration_id = Api(client).register()
    with connect(server, timeout=10) as sock:
        sock.sendall(
            request("GET", f"/api/v1/logs/{registration_id}?wait=4")
            + b"POST /api/v1/logs HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%b\r\n" % (5000, b" " * 5000)
        )
        waited, refused = Reader(sock).answers(2)
    assert json.loads(waited[2]) == {}
    assert status_of(refused) == 413  # after the long poll's answer, not a 408


def test_a_body_being_read_at_sigterm_is_read_whole_stored_and_answered(
    server: ServerProcess, api: Api
) -> None:
    registration_id = api.register()
    raw = post(cloudify_log(9))
    with connect(server) as sock:
        # Read in one go with the GET before it: once the GET is answered, the head is read.
        sock.sendall(request("GET", "/health") + raw[:-100])
        reader = Reader(sock)
        assert status_of(reader.answer()) == 200
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "finishing requests in flight" in server.run_log())
        sock.sendall(raw[-100:])
        answer = reader.answer()
        assert json.loads(answer[2]) == {"accepted": 1}
        assert answer[1][b"connection"] == b"close"
    assert server.wait_exit() == 0
    server.start()
    with server.client() as client:
        assert [e["seq"] for e in Api(client).drain(registration_id)] == [9]


def test_a_path_cannot_forge_a_line_of_the_access_log(server_factory: ServerFactory) -> None:
    server = server_factory({"server": {"access_log": True}}).start()
    forged = "/x%0a2026-12-02%2017:00:00,000%20ERROR%20cfylogs:%20forged"
    with connect(server) as sock:
        sock.sendall(request("GET", forged))
        assert status_of(Reader(sock).answer()) == 404
    wait_until(lambda: "forged" in server.run_log())
    assert not any(line.startswith("2026-12-02 17:00:00") for line in server.run_log().splitlines())
    assert "\\x0a2026-12-02" in server.run_log()


def test_other_versions_are_505_and_absolute_urls_are_served(server: ServerProcess) -> None:
    for raw in (b"GET /health HTTP/2.0\r\n\r\n", b"GET /health HTTP/0.9\r\n\r\n"):
        answer = _send_and_read(server, raw)
        assert status_of(answer) == 505 and error_of(answer)["code"] == 505
    answer = _send_and_read(server, b"GET http://relay:8200/health HTTP/1.1\r\nHost: r\r\n\r\n")
    assert status_of(answer) == 200 and json.loads(answer[2])["status"] == "ok"
