"""ingest.accept: cloudify: junk goes to the dead letters, listable, replayable, purgeable."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from cfylogs.client import AsyncClient, Client, DeadLetter, ReplayResult
from tests.conftest import ServerFactory
from tests.support import FIXTURES, Api, ServerProcess

TOKEN = "consumer-secret"
LOG = json.loads((FIXTURES / "cloudify_log.json").read_text())
EVENT = json.loads((FIXTURES / "cloudify_event.json").read_text())
JUNK: list[dict[str, Any]] = [
    {"GET /wp-login.php": "scanner"},
    {**LOG, "type": "syslog"},
    {**EVENT, "event_type": ""},
    {**LOG, "message": "a string, not an object"},
]


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    config = {"ingest": {"accept": "cloudify"}, "security": {"consumer_token": TOKEN}}
    return server_factory(config).start()


def _client(server: ServerProcess) -> httpx.Client:
    return server.client(headers={"authorization": f"Bearer {TOKEN}"})


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cfylogs", "dead-letters", args[0], server.url, *args[1:]]
    return subprocess.run(
        [*command, "--token", TOKEN], capture_output=True, text=True, timeout=60, check=False
    )


def test_only_cloudify_events_reach_consumers_and_the_rest_is_answered_200(
    server: ServerProcess,
) -> None:
    with _client(server) as client:
        api = Api(client)
        registration_id = api.register()
        r = api.push(LOG, *JUNK, EVENT)
        assert r.status_code == 200
        assert r.json() == {"accepted": 2, "dead_lettered": len(JUNK)}
        assert api.drain(registration_id) == [LOG, EVENT]

        page = client.get("/api/v1/dead-letters").json()
        assert page["total"] == len(JUNK) and page["next_after"] is None
        assert [d["event"] for d in page["dead_letters"]] == JUNK  # as posted, in order
        reasons = [d["reason"] for d in page["dead_letters"]]
        assert reasons == [
            'type is not "cloudify_log" or "cloudify_event"',
            'type is not "cloudify_log" or "cloudify_event"',
            "event_type of a cloudify_event is not a string",
            "message.text is not a string",
        ]


def test_dead_letters_are_counted_in_metrics(server: ServerProcess) -> None:
    with _client(server) as client:
        Api(client).push(LOG, *JUNK)
        metrics = client.get("/metrics").text
    assert f"cfylogs_events_dead_lettered_total {len(JUNK)}.0" in metrics


def test_dead_letters_are_behind_the_consumer_token(server: ServerProcess) -> None:
    with server.client() as client:
        assert client.get("/api/v1/dead-letters").status_code == 401
        assert client.delete("/api/v1/dead-letters?all=true").status_code == 401


def test_replay_by_id_sends_to_consumers_and_purge_deletes(server: ServerProcess) -> None:
    with _client(server) as client:
        api = Api(client)
        registration_id = api.register()
        api.push(*JUNK)
        ids = [d["id"] for d in client.get("/api/v1/dead-letters").json()["dead_letters"]]
        r = client.post("/api/v1/dead-letters/replay", json={"ids": ids[:2]})
        assert r.json() == {"replayed": 2, "kept_no_registration": 0}
        assert api.drain(registration_id) == JUNK[:2]
        assert client.delete("/api/v1/dead-letters").status_code == 400  # says what to purge
        assert client.delete(f"/api/v1/dead-letters?ids={ids[2]}").json() == {"purged": 1}
        assert client.get("/api/v1/dead-letters").json()["total"] == 1
        assert client.delete("/api/v1/dead-letters?all=true").json() == {"purged": 1}
        assert client.post("/api/v1/dead-letters/replay", json={"ids": "x"}).status_code == 400


def test_dead_letters_are_kept_without_registrations_and_across_restarts(
    server: ServerProcess,
) -> None:
    with _client(server) as client:
        assert Api(client).push(*JUNK).json()["dead_lettered"] == len(JUNK)
    server.kill()  # kill -9: the 200 meant durable, dead letters included
    server.start()
    with _client(server) as client:
        assert client.get("/api/v1/dead-letters").json()["total"] == len(JUNK)


def test_the_cli_lists_replays_and_purges(server: ServerProcess) -> None:
    with _client(server) as client:
        api = Api(client)
        registration_id = api.register()
        api.push(*JUNK)
        listed = _cli(server, "list")
        assert listed.returncode == 0, listed.stderr
        assert f"{len(JUNK)} dead letter(s)" in listed.stdout and "scanner" in listed.stdout
        page = json.loads(_cli(server, "list", "--json", "--limit", "2").stdout)
        assert len(page["dead_letters"]) == 2 and page["next_after"] is not None
        first = str(page["dead_letters"][0]["id"])
        assert "replayed 1 " in _cli(server, "replay", first).stdout
        assert api.drain(registration_id) == JUNK[:1]
        assert _cli(server, "replay").returncode == 2  # neither ids nor --all
        assert "purged 3 " in _cli(server, "purge", "--all").stdout
        assert "0 dead letter(s)" in _cli(server, "list").stdout


def test_the_client_lists_replays_and_purges_with_typed_results(server: ServerProcess) -> None:
    with Client(server.url, token=TOKEN) as client:
        registration_id = client.register()
        client.push(JUNK)
        page = client.dead_letters(limit=3)
        assert page.total == len(JUNK) and len(page.dead_letters) == 3
        assert all(isinstance(letter, DeadLetter) for letter in page.dead_letters)
        assert [letter.event for letter in page.dead_letters] == JUNK[:3]
        rest = client.dead_letters(after=page.next_after or 0)
        assert [letter.event for letter in rest.dead_letters] == JUNK[3:]
        assert rest.next_after is None
        first = page.dead_letters[0].id
        assert client.replay_dead_letters([first]) == ReplayResult(1, 0)
        batch = client.fetch(registration_id)
        assert batch is not None and batch.entries == JUNK[:1]
        assert client.purge_dead_letters([page.dead_letters[1].id]) == 1
        assert client.purge_dead_letters(None) == len(JUNK) - 2


async def test_the_async_client_has_the_same_dead_letter_calls(server: ServerProcess) -> None:
    async with AsyncClient(server.url, token=TOKEN) as client:
        await client.push(JUNK[:2])
        page = await client.dead_letters()
        assert [letter.reason for letter in page.dead_letters] == [
            'type is not "cloudify_log" or "cloudify_event"'
        ] * 2
        assert await client.replay_dead_letters(None) == ReplayResult(0, 2)  # nobody registered
        assert await client.purge_dead_letters(None) == 2


def test_replay_all_with_nobody_registered_keeps_them(server: ServerProcess) -> None:
    with _client(server) as client:
        Api(client).push(*JUNK)
        r = client.post("/api/v1/dead-letters/replay", json={"all": True})
        assert r.json() == {"replayed": 0, "kept_no_registration": len(JUNK)}
        assert client.get("/api/v1/dead-letters").json()["total"] == len(JUNK)


def test_accept_any_is_the_default_and_passes_everything(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    with server.client() as client:
        api = Api(client)
        registration_id = api.register()
        assert api.push(*JUNK).json() == {"accepted": len(JUNK)}
        assert api.drain(registration_id) == JUNK
