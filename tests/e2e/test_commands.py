"""The client commands as a user runs them: real processes against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from cfylogs.client import Client
from tests.conftest import ServerFactory
from tests.support import FIXTURES, ServerProcess, wait_until


def cfylogs(
    *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cfylogs", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def lines(data: bytes) -> list[bytes]:
    return data.splitlines()


def saved_registration(state: Path) -> str | None:
    if not state.exists():
        return None
    entries = json.loads(state.read_text())["registrations"]
    return next(iter(entries.values()))["id"] if entries else None


@pytest.mark.slow
def test_tail_killed_mid_batch_then_restarted_misses_nothing_and_repeats_no_acked_event(
    server: ServerProcess, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    first = subprocess.Popen(
        [sys.executable, "-m", "cfylogs", "tail", server.url, "--state", str(state), "--wait", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        registration = wait_until(lambda: saved_registration(state), timeout=20)
        # ~1 KiB events: one batch of 300 is far more than a pipe holds, so tail
        # blocks in the middle of writing it, which is where it gets killed.
        sent = [b'{"seq":%d,"pad":"%s"}' % (seq, b"x" * 1000) for seq in range(300)]
        with Client(server.url) as client:
            assert client.push(sent) == 300
            wait_until(lambda: client.registrations()[0].pending_batch_id is not None)
            assert first.stdout is not None
            printed = [first.stdout.readline().rstrip(b"\n") for _ in range(20)]
            first.kill()
            first.wait(10)
            printed += complete_lines(first.stdout)
            unacked = client.registrations()[0].backlog_events
    finally:
        first.kill()
    acked = len(sent) - unacked
    assert printed == sent[: len(printed)]  # in order, nothing made up
    assert len(printed) >= acked  # whatever was acknowledged had been printed
    assert len(printed) < len(sent)  # it really was killed mid-way

    second = cfylogs("tail", server.url, "--state", str(state), "--once")
    assert second.returncode == 0, second.stderr
    assert f"resuming registration {registration}".encode() in second.stderr
    assert lines(second.stdout) == sent[acked:]  # the rest, and no acknowledged event again
    third = cfylogs("tail", server.url, "--state", str(state), "--once")
    assert (third.returncode, third.stdout) == (0, b"")


def complete_lines(stream: IO[bytes] | None) -> list[bytes]:
    assert stream is not None
    data = stream.read()
    return lines(data[: data.rfind(b"\n") + 1]) if b"\n" in data else []


def test_tail_formats_json_and_pretty(server: ServerProcess, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert cfylogs("tail", server.url, "--state", str(state), "--once").returncode == 0
    log_event = (FIXTURES / "cloudify_log.json").read_bytes()
    workflow_event = (FIXTURES / "cloudify_event.json").read_bytes()
    pushed = cfylogs("push", server.url, stdin=log_event + b"\n" + workflow_event + b'\n{"x": 1}\n')
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith(b"pushed 3 events in 1 requests")

    pretty = cfylogs("tail", server.url, "--state", str(state), "--once", "--format", "pretty")
    assert pretty.returncode == 0, pretty.stderr
    log_line, event_line, other = pretty.stdout.decode().splitlines()
    assert log_line.split() == [
        "2017-09-14T14:06:50.296Z",
        "DEBUG",
        "simple_compute-Environment",
        "Compute_onj8qq",
        *["Applying", "function:setter", "on", "Attribute", "<service_name>"],
    ]
    assert "WORKFLOW_STARTED" in event_line and "Starting 'a4c_uninstall'" in event_line
    assert json.loads(other) == {"x": 1}
    assert "\x1b[" not in pretty.stdout.decode()  # no colour when not on a terminal

    cfylogs("push", server.url, stdin=log_event)
    as_json = cfylogs("tail", server.url, "--state", str(state), "--once")
    [line] = lines(as_json.stdout)
    assert json.loads(line) == json.loads(log_event)  # compacted to one line, same content


@pytest.mark.slow
def test_push_of_100k_ndjson_lines_arrives_complete_and_in_order(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(config={"buffer": {"size": 100_000}}).start()
    count = 100_000
    source = tmp_path / "events.ndjson"
    source.write_bytes(
        b"".join(b'{"seq":%d,"message":"event %d"}\n' % (n, n) for n in range(count))
    )
    with Client(server.url) as client:
        registration = client.register("bulk")
        pushed = cfylogs("push", server.url, str(source), "--batch-size", "25000", "--gzip")
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.startswith(b"pushed 100000 events in 4 requests")
        received: list[int] = []
        while batch := client.fetch(registration, max_entries=count):
            received.extend(event["seq"] for event in batch.entries)
            client.ack(registration, batch.id)
    assert received == list(range(count))


def test_push_refused_or_bad_input_exits_1_saying_why(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(config={"server": {"max_request_bytes": 2048}}).start()
    big = b"".join(b'{"seq": %d, "pad": "%s"}\n' % (n, b"x" * 100) for n in range(40))
    refused = cfylogs("push", server.url, "--batch-size", "40", stdin=big)
    assert refused.returncode == 1
    message = refused.stderr.decode()
    assert "refused" in message and "HTTP 413" in message
    assert "0 events before that batch were accepted" in message

    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(b'{"seq": 1}\n{"seq": \n')
    invalid = cfylogs("push", server.url, str(bad))
    assert invalid.returncode == 1
    assert "bad.ndjson: line 2: invalid or incomplete JSON" in invalid.stderr.decode()


def test_registrations_status_and_unregister(server: ServerProcess, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Client(server.url) as client:
        registration = client.register("orchestrator-a")
        client.push([{"seq": n} for n in range(3)])
    state.write_text(json.dumps({"registrations": {server.url: {"id": registration}}}))

    table = cfylogs("registrations", server.url)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.decode().splitlines()
    assert header.split()[:3] == ["ID", "NAME", "CREATED"]
    assert row.split()[:2] == [registration, "orchestrator-a"] and " 3 " in row

    listed = json.loads(cfylogs("registrations", server.url, "--json").stdout)
    [entry] = listed["registrations"]
    assert (entry["id"], entry["backlog_events"]) == (registration, 3)

    status = cfylogs("status", server.url)
    assert status.returncode == 0
    assert status.stdout.decode().splitlines()[0].split() == ["status", "ok"]
    summary = json.loads(cfylogs("status", server.url, "--json").stdout)
    assert summary["health"]["status"] == "ok" and summary["backlog_events"] == 3

    removed = cfylogs("unregister", server.url, registration, "--state", str(state))
    assert removed.returncode == 0
    assert saved_registration(state) is None  # forgotten by tail's state too
    again = cfylogs("unregister", server.url, registration, "--state", str(state))
    assert again.returncode == 1
    assert f"No registration can be found for id {registration} (HTTP 404)" in again.stderr.decode()


def test_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    status = cfylogs("status", "http://127.0.0.1:9", "--timeout", "2")
    assert status.returncode == 1
    assert status.stderr.startswith(b"Error: GET /health failed")


@pytest.mark.parametrize(
    "args",
    [
        ["tail", "not-a-url"],
        ["push", "ftp://x"],
        ["status", "http://x", "--key", __file__],
        ["tail", "http://x", "--format", "xml"],
        ["unregister", "http://x"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = cfylogs(*args)
    assert result.returncode == 2
    assert b"Usage: " in result.stderr


@pytest.mark.parametrize("command", ["tail", "push", "registrations", "status", "unregister"])
def test_every_command_has_help_with_examples_and_tls_options(command: str) -> None:
    result = cfylogs(command, "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "Examples:" in text and f"cfylogs {command} http" in text
    for option in ("--cacert", "--cert", "--key", "--token"):
        assert option in text
