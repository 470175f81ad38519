"""Every kind of body Logstash and other shippers send, and the bad-input table."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.support import Api


@pytest.fixture
def small_api(server_factory: ServerFactory) -> Any:
    server = server_factory(config={"server": {"max_request_bytes": 4096}}).start()
    with server.client() as client:
        yield Api(client)


def post(api: Api, body: bytes, **headers: str) -> Any:
    return api.http.post("/api/v1/logs", content=body, headers=headers)


def test_object_array_ndjson_and_gzip(api: Api) -> None:
    registration_id = api.register()
    assert post(api, b'{"k":1}').json() == {"accepted": 1}
    assert post(api, b'[{"k":2},{"k":3}]').json() == {"accepted": 2}
    assert post(api, b'{"k":4}\n\n{"k":5}\r\n').json() == {"accepted": 2}
    assert post(api, b'{"k":6}\n', **{"content-type": "application/x-ndjson"}).json() == {
        "accepted": 1
    }
    assert post(api, gzip.compress(b'[{"k":7}]'), **{"content-encoding": "gzip"}).status_code == 200
    assert (
        post(api, zlib.compress(b'{"k":8}'), **{"content-encoding": "deflate"}).status_code == 200
    )
    assert post(api, b"[]").json() == {"accepted": 0}
    assert post(api, b'{"k":9}', **{"content-type": "text/plain"}).status_code == 200
    assert [e["k"] for e in api.drain(registration_id)] == list(range(1, 10))


# gzip with mtime=0: test ids are made from the bytes and must match on every xdist worker.
BAD_INPUT = [
    (b'{"k":', {}, 400),
    (b"not json", {}, 400),
    (b"", {}, 400),
    (b"[1,2]", {}, 400),
    (b'[{"k":1},"x"]', {}, 400),
    (b'{"k":1}\n[1]\n', {}, 400),
    (b'{"k":1}\n{"k":\n', {}, 400),
    (b'{"k":NaN}', {}, 400),
    (b'{"k":"\xff"}', {}, 400),
    (b'"just a string"', {}, 400),
    (b'{"k":1}', {"content-encoding": "br"}, 415),
    (b"\x1f\x8b garbage", {"content-encoding": "gzip"}, 400),
    (gzip.compress(b'{"k":1}', mtime=0)[:-6], {"content-encoding": "gzip"}, 400),
    (b'[{"k":"' + b"x" * 5000 + b'"}]', {}, 413),
    (
        gzip.compress(b'[{"k":"' + b"x" * 50_000 + b'"}]', mtime=0),
        {"content-encoding": "gzip"},
        413,
    ),
]


@pytest.mark.parametrize(("body", "headers", "status"), BAD_INPUT)
def test_bad_input_is_refused_whole_and_costs_nothing(
    small_api: Api, body: bytes, headers: dict[str, str], status: int
) -> None:
    api = small_api
    registration_id = api.register()
    assert post(api, b'{"before":1}').status_code == 200
    r = post(api, body, **headers)
    assert r.status_code == status
    error = r.json()
    assert error["data"] is None and error["error"]["code"] == status
    assert error["error"]["message"]
    assert post(api, b'{"after":1}').status_code == 200
    assert api.drain(registration_id) == [{"before": 1}, {"after": 1}]


def test_a_body_within_the_limit_is_taken_whole(small_api: Api) -> None:
    registration_id = small_api.register()
    body = b'[{"k":"' + b"x" * 3000 + b'"}]'
    assert post(small_api, body).status_code == 200
    assert small_api.drain(registration_id)[0]["k"] == "x" * 3000


def test_bad_query_parameters_are_400(api: Api) -> None:
    registration_id = api.register()
    for query in ("wait=61", "wait=-1", "wait=abc", "wait=nan", "max=0", "max=x"):
        r = api.http.get(f"/api/v1/logs/{registration_id}?{query}")
        assert r.status_code == 400, query
        assert r.json()["error"]["code"] == 400


def _nested(depth: int) -> bytes:
    return b'{"k":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api/v1/logs", _nested(5000), {}),
        ("/api/v1/logs", b"[" + _nested(5000) + b"]", {}),
        ("/api/v1/logs", b'{"k":1}\n' + _nested(5000) + b"\n", {}),
        ("/api/v1/logs", gzip.compress(_nested(5000), mtime=0), {"content-encoding": "gzip"}),
        ("/api/v1/registration", _nested(5000), {}),
    ],
)
def test_json_nested_too_deeply_is_400_not_a_server_error(
    api: Api, path: str, body: bytes, headers: dict[str, str]
) -> None:
    """Valid JSON deeper than the parser's recursion limit: a clear 400, never a 503 that
    Logstash would retry forever."""
    registration_id = api.register()
    r = api.http.post(path, content=body, headers=headers)
    assert r.status_code == 400
    assert "nested too deeply" in r.json()["error"]["message"]
    assert post(api, b'{"after":1}').status_code == 200
    assert api.drain(registration_id) == [{"after": 1}]


def test_integers_in_paths_and_queries_are_strict(api: Api) -> None:
    """What int() would take but is not a plain integer, and integers too long for int()."""
    registration_id = api.register()
    api.push({"n": 1})
    batch = api.fetch(registration_id)
    for query in ("max=" + "1" * 5000, "max=1_0", "max=+1", "max=%201", "max=%C2%B2"):
        r = api.http.get(f"/api/v1/logs/{registration_id}?{query}")
        assert r.status_code == 400, query
    for batch_id in ("1" * 5000, "0_0", "+0", "%200", "%C2%B2", "0.0"):
        r = api.http.delete(f"/api/v1/logs/{registration_id}/ack/{batch_id}")
        assert r.status_code == 400, batch_id
    assert api.fetch(registration_id) == batch  # nothing was acknowledged
    assert api.ack(registration_id, batch["id"]).status_code == 200
