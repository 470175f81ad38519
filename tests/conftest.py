from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support import Api, ServerProcess

# The suite runs on shared 2-core machines: property tests are bounded by their example
# counts, not by wall-clock deadlines that a busy neighbour would turn into failures.
settings.register_profile("cfylogs", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("cfylogs")

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """`server_factory(config={...})` makes a server (not started); all die after the test."""
    made: list[ServerProcess] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server{len(made)}", config, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory().start()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(client)


# The session's PostgreSQL server (`pg_server`) for the postgres backend's tests.
pytest_plugins = ["tests.pgserver"]
