"""Long polling and leases (expiry as the original, revival beyond it)."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, wait_until


def test_long_poll_wakes_up_when_an_event_arrives(server: ServerProcess, api: Api) -> None:
    registration_id = api.register()
    result: dict[str, Any] = {}
    started = threading.Event()

    def poll() -> None:
        with server.client() as client:
            started.set()
            t0 = time.monotonic()
            r = client.get(f"/api/v1/logs/{registration_id}", params={"wait": 30})
            result.update(body=r.json(), elapsed=time.monotonic() - t0)

    thread = threading.Thread(target=poll)
    thread.start()
    started.wait()
    # Push until the poller has its answer: no assumption on when it started waiting.
    wait_until(lambda: api.push({"n": 1}) and not thread.is_alive(), timeout=20, interval=0.2)
    thread.join()
    assert result["body"]["id"] == 0 and result["body"]["entries"][0] == {"n": 1}
    assert result["elapsed"] < 25  # answered by the event, not by the timeout


def test_without_wait_the_answer_is_immediate_and_wait_times_out(api: Api) -> None:
    registration_id = api.register()
    t0 = time.monotonic()
    assert api.fetch(registration_id) == {}
    assert api.fetch(registration_id, wait=0.3) == {}
    assert time.monotonic() - t0 >= 0.3


def test_sigterm_answers_long_polls_and_exits_0(server: ServerProcess, api: Api) -> None:
    regs = [api.register() for _ in range(5)]
    answers: list[int] = []

    def poll(registration_id: str) -> None:
        with server.client() as client:
            r = client.get(f"/api/v1/logs/{registration_id}", params={"wait": 60})
            answers.append(r.status_code)

    threads = [threading.Thread(target=poll, args=(r,)) for r in regs]
    for thread in threads:
        thread.start()

    def all_polling() -> bool:
        listed = api.http.get("/api/v1/registration").json()["registrations"]
        return all(r["last_seen"] > r["created"] for r in listed)

    wait_until(all_polling)
    t0 = time.monotonic()
    assert server.stop() == 0
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - t0 < 10  # the polls were answered, not waited out
    assert answers == [200] * 5


def _leased(server_factory: ServerFactory, **extra: Any) -> ServerProcess:
    config = {
        "alien_registration": {
            "is_leased": True,
            "lease_duration_sec": 1,
            "lease_expiration_frequency_sec": 1,
            **extra,
        }
    }
    return server_factory(config=config).start()


def _listed(api: Api) -> list[str]:
    return [r["id"] for r in api.http.get("/api/v1/registration").json()["registrations"]]


def test_idle_registration_expires_and_is_revived_under_its_id(
    server_factory: ServerFactory,
) -> None:
    server = _leased(server_factory)
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        wait_until(lambda: registration_id not in _listed(api), timeout=15)
        api.push({"missed": True})  # nobody active: dropped
        assert api.fetch(registration_id) == {}  # revived, same id, empty backlog
        assert registration_id in _listed(api)
        assert "revived" in server.run_log()
        api.push({"after": True})
        assert api.drain(registration_id) == [{"after": True}]


def test_without_revival_an_expired_registration_is_404(server_factory: ServerFactory) -> None:
    server = _leased(server_factory, revive_expired=False)
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        wait_until(lambda: registration_id not in _listed(api), timeout=15)
        r = client.get(f"/api/v1/logs/{registration_id}")
        assert r.status_code == 404 and r.json()["error"]["code"] == 504


def test_polling_keeps_a_lease_alive(server_factory: ServerFactory) -> None:
    server = _leased(server_factory)
    with server.client() as client:
        api = Api(client)
        polled, idle = api.register(), api.register()
        deadline = time.monotonic() + 15
        while idle in _listed(api) and time.monotonic() < deadline:
            api.fetch(polled, wait=0.2)
        assert idle not in _listed(api)
        assert polled in _listed(api)


def test_unleased_registrations_never_expire(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        assert api.fetch(registration_id, wait=1.5) == {}
        assert registration_id in _listed(api)
