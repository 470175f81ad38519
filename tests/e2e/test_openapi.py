"""The OpenAPI document is true: schemathesis checks a live server against it.

Bounded (few examples per operation, no shrinking) so that it costs seconds.
One registration with a long backlog and `buffer.size: 1` lets generated
fetches and acks hit a real registration without draining it (a drained one
would hold every `?wait=` long poll open).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from cfylogs.config import Settings
from cfylogs.http.app import App
from cfylogs.http.server import http_options
from cfylogs.openapi import OPENAPI
from cfylogs.relay import Relay
from cfylogs.storage.sqlite import SqliteStorage
from tests.support import Api, ServerProcess

schema = schemathesis.openapi.from_dict(OPENAPI)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, events: Any) -> bytes | None:
    if not isinstance(events, list):  # no body, or a deliberately wrong one
        return None if events is None else json.dumps(events).encode()
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("openapi"), {"buffer": {"size": 1}}).start()
    try:
        with server.client() as client:
            api = Api(client)
            reg = api.register("schemathesis")
            assert api.push(*({"n": n} for n in range(2000))).status_code == 200
        yield server, reg
    finally:
        server.kill()


def test_the_served_document_is_the_module_one(live: tuple[ServerProcess, str]) -> None:
    server, _ = live
    r = httpx.get(server.url + "/openapi.json")
    assert r.status_code == 200
    assert r.json() == OPENAPI
    served = {(m.upper(), p) for p, ops in r.json()["paths"].items() for m in ops}
    assert ("POST", "/api/v1/logs") in served and ("GET", "/metrics") in served


def test_every_route_is_documented(tmp_path: Path) -> None:
    # Never opened: only its routing table is read.
    app = App(Relay(SqliteStorage(tmp_path)), http_options(Settings()))
    # The console's page (/ui/) is files for a browser, not API.
    served = {(r.method, r.template) for r in app.routes if not r.template.startswith("/ui/")}
    documented = {(m.upper(), p) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert served == documented


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_the_api_matches_its_document(case: Any, live: tuple[ServerProcess, str]) -> None:
    server, reg = live
    ids = case.path_parameters or {}
    # half of the fetches and acks name the real registration
    if "id" in ids and case.method != "DELETE" and len(ids["id"]) % 2:
        ids["id"] = reg
    # Nothing is ingested meanwhile: a tail poll would hold for all of its ?wait=.
    if (
        case.path == "/api/v1/console/tail"
        and isinstance(case.query, dict)
        and "wait" in case.query
    ):
        case.query["wait"] = 0
    case.call_and_validate(base_url=server.url, checks=CHECKS)
