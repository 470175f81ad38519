"""The client library against a real `cfylogs serve` process."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import pytest

from cfylogs.client import (
    AsyncClient,
    AsyncConsumer,
    Backoff,
    Batch,
    Client,
    Conflict,
    Consumer,
    ConsumerOptions,
    NotFound,
    TransportError,
    Unauthorized,
    push_batches,
)
from tests.conftest import ServerFactory
from tests.support import ServerProcess, wait_until

FAST = Backoff(initial=0.05, maximum=0.3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def seqs(batch: Batch) -> list[int]:
    return [int(event["seq"]) for event in batch.entries]


def test_every_call_returns_typed_results(server: ServerProcess) -> None:
    with Client(server.url) as client:
        health = client.health()
        assert health.ok and health.storage.backend == "sqlite" and health.version
        registration = client.register("typed")
        assert client.fetch(registration) is None
        raw = b'{"seq": 0,\n "kept": "as posted"}'
        assert client.push([raw, {"seq": 1}], gzip=True) == 2
        batch = client.fetch(registration, wait=5, max_entries=1)
        assert batch is not None
        assert (batch.id, batch.raw_entries, seqs(batch)) == (0, (raw,), [0])
        assert client.fetch(registration) == batch  # the same until acknowledged
        with pytest.raises(Conflict) as conflict:
            client.ack(registration, 7)
        assert conflict.value.status == 409
        ack = client.ack(registration, 0)
        assert (ack.acknowledged, ack.events) == (True, 1)
        assert client.ack(registration, 0).acknowledged is False  # idempotent
        [listed] = client.registrations()
        assert (listed.id, listed.name, listed.backlog_events) == (registration, "typed", 1)
        client.unregister(registration)
        with pytest.raises(NotFound) as missing:
            client.fetch(registration)
        assert (missing.value.status, missing.value.code) == (404, 504)
        assert registration in missing.value.message


def test_an_unreachable_server_is_a_transport_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(TransportError) as failure,
    ):
        client.health()
    assert failure.value.retryable


def test_a_failed_handler_gets_the_same_batch_again(server: ServerProcess) -> None:
    with Client(server.url) as client:
        registration = client.register()
        client.push([{"seq": n} for n in range(5)])
        handled: list[tuple[int, list[int]]] = []

        def handler(batch: Batch) -> None:
            handled.append((batch.id, seqs(batch)))
            if len(handled) == 1:
                raise RuntimeError("downstream is down")

        options = ConsumerOptions(registration_id=registration, once=True, wait=0, backoff=FAST)
        stats = Consumer(client, handler, options).run()
        assert handled == [(0, [0, 1, 2, 3, 4]), (0, [0, 1, 2, 3, 4])]
        assert (stats.handler_failures, stats.batches) == (1, 1)
        assert client.fetch(registration) is None  # acknowledged once handled


def test_a_removed_registration_is_replaced_and_said_loudly(
    server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(server.url) as client:
        old = client.register()
        client.unregister(old)
        replaced: list[str] = []
        options = ConsumerOptions(registration_id=old, reregister=True, once=True, wait=0)
        with caplog.at_level(logging.WARNING, "cfylogs.client"):
            Consumer(client, lambda _: None, options, on_registered=replaced.append).run()
        assert len(replaced) == 1 and replaced[0] != old
        assert f"registration {old} is unknown" in caplog.text
        assert "NOT delivered" in caplog.text
        assert [r.id for r in client.registrations()] == replaced


@pytest.mark.slow
def test_the_consumer_loses_nothing_across_server_crashes(server_factory: ServerFactory) -> None:
    server = server_factory(config={"server": {"port": free_port()}, "buffer": {"size": 40}})
    server.start()
    with Client(server.url) as setup:
        registration = setup.register("crash-proof")
    received: list[int] = []
    client = Client(server.url, timeout=5)
    options = ConsumerOptions(registration_id=registration, wait=1, backoff=FAST)
    consumer = Consumer(client, lambda batch: received.extend(seqs(batch)), options)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    total = 0
    with Client(server.url, timeout=5) as producer:
        for _ in range(3):
            events = [b'{"seq": %d}' % (total + n) for n in range(300)]
            push_batches(producer, [events[:150], events[150:]], backoff=FAST)
            total += 300
            # Crash while the consumer is part-way through what was pushed.
            wait_until(lambda goal=total - 250: len(received) > goal, timeout=20)
            server.kill()
            server.start()
        push_batches(producer, [[b'{"seq": %d}' % (total + n) for n in range(100)]], backoff=FAST)
        total += 100
    wait_until(lambda: set(received) >= set(range(total)), timeout=30)
    consumer.stop()
    thread.join(10)
    client.close()
    assert not thread.is_alive()
    assert list(dict.fromkeys(received)) == list(range(total))  # in order, no gap
    assert consumer.stats.retries > 0  # it did see the crashes


async def test_the_async_consumer_drains_and_stops_a_long_poll_at_once(
    server: ServerProcess,
) -> None:
    async with AsyncClient(server.url) as client:
        registration = await client.register("async")
        assert await client.push([{"seq": n} for n in range(30)]) == 30
        received: list[int] = []

        async def handler(batch: Batch) -> None:
            received.extend(seqs(batch))

        options = ConsumerOptions(registration_id=registration, once=True, wait=0, max_entries=7)
        stats = await AsyncConsumer(client, handler, options).run()
        assert received == list(range(30)) and stats.batches == 5

        waiting = AsyncConsumer(client, handler, ConsumerOptions(registration_id=registration))
        before = await last_seen(client)
        task = asyncio.create_task(waiting.run())
        while await last_seen(client) == before:  # noqa: ASYNC110 - polls the server
            await asyncio.sleep(0.02)  # until the consumer sits in its 30 s long-poll
        started = time.monotonic()
        waiting.stop()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 2


async def last_seen(client: AsyncClient) -> float | None:
    return (await client.registrations())[0].last_seen


def test_long_poll_returns_as_soon_as_events_arrive(server: ServerProcess) -> None:
    with Client(server.url) as client, Client(server.url) as producer:
        registration = client.register()
        result: dict[str, Any] = {}

        def poll() -> None:
            started = time.monotonic()
            result["batch"] = client.fetch(registration, wait=30)
            result["took"] = time.monotonic() - started

        thread = threading.Thread(target=poll)
        before = producer.registrations()[0].last_seen
        thread.start()
        wait_until(lambda: producer.registrations()[0].last_seen != before)  # it is polling
        producer.push([{"seq": 1}])
        thread.join(10)
        assert result["batch"] is not None and seqs(result["batch"]) == [1]
        assert result["took"] < 10


def test_the_token_is_sent_and_a_refusal_is_unauthorized(server_factory: ServerFactory) -> None:
    config = {"security": {"consumer_token": "c0nsumer", "ingest_token": "1ngest"}}
    server = server_factory(config=config).start()
    with Client(server.url, token="c0nsumer") as consumer:
        registration = consumer.register()
        with Client(server.url, token="1ngest") as producer:
            assert producer.push([{"seq": 1}]) == 1
        batch = consumer.fetch(registration)
        assert batch is not None and seqs(batch) == [1]
    with Client(server.url, token="wrong") as stranger, pytest.raises(Unauthorized) as refused:
        stranger.registrations()
    assert refused.value.status == 401 and not refused.value.retryable
