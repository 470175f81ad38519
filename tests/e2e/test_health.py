"""Version from one place, and `/health` with the store's state and free disk."""

from __future__ import annotations

from importlib.metadata import version

from cfylogs import __version__
from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess


def test_package_metadata_takes_its_version_from_the_package() -> None:
    # pyproject's version is dynamic (hatch reads cfylogs/__init__.py): one place only.
    assert version("cfylogs") == __version__


def test_health_shows_version_store_state_and_free_disk(server: ServerProcess, api: Api) -> None:
    api.register()
    assert api.push({"message": "x"}).status_code == 200
    r = api.http.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    storage = body["storage"]
    assert storage["backend"] == "sqlite" and storage["detail"] == "ok"
    assert storage["events"] == 1 and storage["bytes"] > 0
    assert storage["disk_bytes"] > 0 and storage["free_bytes"] > 0
    assert body["uptime_sec"] >= 0


def test_health_stays_open_when_tokens_are_set(server_factory: ServerFactory) -> None:
    server = server_factory(config={"security": {"consumer_token": "c-secret"}}).start()
    with server.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/api/v1/registration").status_code == 401
