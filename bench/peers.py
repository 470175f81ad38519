"""The peers users would otherwise deploy, driven with the same event, batches and consumers.

Redis Streams: `appendonly yes`, `appendfsync always` (an answer means the
AOF was fsync'd), one stream, one consumer group per registration,
`XREADGROUP COUNT 1000` then `XACK`. Producers: `redis-benchmark` (C, like
wrk) for the closed-loop ingest, redis-py (hiredis parser) for the paced
producer and the consumers.

RabbitMQ: a durable fanout exchange, one durable (classic) queue per
registration, persistent messages, publisher confirms (a publish counts once
confirmed, i.e. on disk), consumers with prefetch 1000 acknowledging every
1000 messages (`multiple`). Its Python client (aio-pika) is slower than the
broker: the client CPU column says when it was the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from bench import servers
from bench.pacing import pace, percentile
from bench.system import ensure_commands, measure_cpu
from bench.systems import SEQ, Load, Measure, System, cpu_fields, e2e_fields
from bench.workload import BATCH, FETCH, event

STREAM = "bench"
#: The `bench` extra of pyproject.toml, installed here when missing.
PYTHON_CLIENTS = {"redis": "redis[hiredis]>=5", "aio_pika": "aio-pika>=9"}


def available_peers(base: Path, notes: list[str]) -> list[System]:
    """Install what is missing (Debian packages, Python clients); return the peers that run."""
    missing_py = [pkg for mod, pkg in PYTHON_CLIENTS.items() if not importlib.util.find_spec(mod)]
    if missing_py:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing_py], check=False)
    missing = ensure_commands(
        {"redis-server": "redis-server", "redis-benchmark": "redis-tools", "epmd": "erlang-base"}
    )
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        ensure_commands({"rabbitmqctl": "rabbitmq-server"})
    peers: list[System] = []
    if {"redis-server", "redis-benchmark"} & set(missing) or not importlib.util.find_spec("redis"):
        notes.append("Redis Streams skipped: redis-server/redis-benchmark or redis-py missing")
    else:
        peers.append(RedisStreams("redis", base / "redis"))
    rabbit = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    if not rabbit.exists() or not importlib.util.find_spec("aio_pika"):
        notes.append("RabbitMQ skipped: rabbitmq-server or aio-pika missing")
    else:
        peers.append(RabbitMq("rabbitmq", base / "rabbitmq"))
    return peers


class RedisStreams(System):
    kinds: ClassVar[tuple[str, ...]] = ("ingest", "drain", "e2e", "fanout")

    async def start(self, fanout: int = 1) -> None:
        import redis.asyncio as aioredis

        self.server = servers.start_redis(self.workdir)
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.client = aioredis.Redis(port=self.port)
        for i in range(fanout):  # like a registration: sees only what comes after it
            await self.client.xgroup_create(STREAM, f"g{i}", id="$", mkstream=True)

    async def halt(self) -> None:
        if self.server is not None:
            await self.client.aclose()
        await super().halt()

    def _benchmark(self, connections: int, pipeline: int, count: int) -> tuple[Measure, float]:
        cmd = [
            "redis-benchmark", "-h", "127.0.0.1", "-p", str(self.port),
            "-c", str(connections), "-n", str(count), "-P", str(pipeline), "--csv",
            "XADD", STREAM, "*", "e", event(0).decode(),
        ]  # fmt: skip
        with measure_cpu(self.cpu_pids, in_process_client=False) as cpu:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        numbers = [float(x) for x in re.findall(r'"([\d.]+)"', out.splitlines()[-1])[-7:]]
        rps, _avg, _min, p50, _p95, p99, _max = numbers
        measure = {"events_per_sec": rps, "events": count, "p50_ms": p50, "p99_ms": p99}
        return {**measure, "errors": 0, **cpu_fields(cpu, count)}, rps

    async def ingest(self, load: Load, batched: bool) -> Measure:
        """redis-benchmark has counts, not durations: a short probe sizes the timed run."""
        conns = load.batch_connections if batched else load.single_connections
        pipeline = BATCH if batched else 1
        _, rate = self._benchmark(conns, pipeline, conns * pipeline * 10)
        count = max(conns * pipeline, int(rate * load.duration))
        measure, _ = self._benchmark(conns, pipeline, count)
        measure["stored_events"] = int(await self.client.xlen(STREAM))  # the probe's too
        return measure

    async def fill(self, count: int, load: Load, time_limit: float) -> Measure:
        started = time.monotonic()
        self._benchmark(load.fill_connections, BATCH, count)
        stored = int(await self.client.xlen(STREAM))
        return {"events": stored, "fill_events_per_sec": stored / (time.monotonic() - started)}

    async def drain(self, count: int, time_limit: float) -> Measure:
        received = 0
        deadline = time.monotonic() + time_limit
        with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
            while received < count and time.monotonic() < deadline:
                answer: Any = await self.client.xreadgroup("g0", "c", {STREAM: ">"}, count=FETCH)
                if not answer:
                    break
                entries = answer[0][1]
                received += len(entries)
                await self.client.xack(STREAM, "g0", *(entry_id for entry_id, _ in entries))
        return {
            "events_per_sec": round(received / cpu.wall_sec, 1),
            "events": received,
            **cpu_fields(cpu, received),
        }

    async def e2e(self, rate: float, duration: float) -> Measure:
        import redis.asyncio as aioredis

        consumer = aioredis.Redis(port=self.port)
        sent_at: dict[int, float] = {}
        e2e_ms: list[float] = []
        total = int(rate * duration)

        async def send(seq: int) -> None:
            sent_at[seq] = time.perf_counter()
            await self.client.xadd(STREAM, {"e": event(seq)})

        async def consume() -> None:
            while len(e2e_ms) < total:
                answer: Any = await consumer.xreadgroup(
                    "g0", "c", {STREAM: ">"}, count=FETCH, block=5000
                )
                if not answer:
                    return
                now = time.perf_counter()
                entries = answer[0][1]
                e2e_ms.extend((now - sent_at[SEQ.decode(f[b"e"]).seq]) * 1000 for _, f in entries)
                await consumer.xack(STREAM, "g0", *(entry_id for entry_id, _ in entries))

        with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
            reader = asyncio.create_task(consume())
            result = await pace(rate, duration, send)
            await asyncio.wait_for(reader, 30)
        await consumer.aclose()
        return e2e_fields(result, e2e_ms, cpu)


class RabbitMq(System):
    kinds: ClassVar[tuple[str, ...]] = ("ingest", "drain", "e2e", "fanout")

    async def start(self, fanout: int = 1) -> None:
        import aio_pika

        self.server = servers.start_rabbitmq(self.workdir)
        self.conn = await aio_pika.connect(self.server.url)
        channel = await self.conn.channel()
        exchange = await channel.declare_exchange(
            "bench", aio_pika.ExchangeType.FANOUT, durable=True
        )
        for i in range(fanout):
            queue = await channel.declare_queue(f"q{i}", durable=True)
            await queue.bind(exchange)
        await channel.close()

    async def halt(self) -> None:
        if self.server is not None:
            await self.conn.close()
            servers.stop_rabbitmq(self.server)
            self.server = None

    async def _exchange(self) -> Any:
        channel = await self.conn.channel(publisher_confirms=True)
        return channel, await channel.get_exchange("bench")

    async def _publish(self, exchange: Any, body: bytes) -> None:
        import aio_pika

        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(message, routing_key="")

    async def ingest(self, load: Load, batched: bool) -> Measure:
        """Each producer (a channel of its own) waits for the confirms of its request."""
        conns = load.batch_connections if batched else load.single_connections
        size = BATCH if batched else 1
        latencies: list[float] = []
        deadline = time.monotonic() + load.duration
        bodies = [event(i) for i in range(size)]

        async def producer() -> None:
            channel, exchange = await self._exchange()
            while time.monotonic() < deadline:
                began = time.perf_counter()
                await asyncio.gather(*(self._publish(exchange, b) for b in bodies))
                latencies.append((time.perf_counter() - began) * 1000)
            await channel.close()

        with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
            await asyncio.gather(*(producer() for _ in range(conns)))
        events = len(latencies) * size
        return {
            "events_per_sec": round(events / cpu.wall_sec, 1),
            "events": events,
            "p50_ms": round(percentile(latencies, 50), 3),
            "p99_ms": round(percentile(latencies, 99), 3),
            "errors": 0,
            **cpu_fields(cpu, events),
        }

    async def fill(self, count: int, load: Load, time_limit: float) -> Measure:
        deadline = time.monotonic() + time_limit
        batches = iter(range(0, count, BATCH))
        stored = 0

        async def producer() -> None:
            nonlocal stored
            channel, exchange = await self._exchange()
            for first in batches:
                if time.monotonic() > deadline:
                    break
                size = min(BATCH, count - first)
                await asyncio.gather(
                    *(self._publish(exchange, event(first + i)) for i in range(size))
                )
                stored += size
            await channel.close()

        started = time.monotonic()
        await asyncio.gather(*(producer() for _ in range(load.fill_connections)))
        return {"events": stored, "fill_events_per_sec": stored / (time.monotonic() - started)}

    async def _consume(
        self, total: int, on_body: Any, time_limit: float, ack_every: int = FETCH
    ) -> int:
        """Consume with prefetch 1000, acknowledging every `ack_every` (and the last) at once."""
        channel = await self.conn.channel()
        await channel.set_qos(prefetch_count=FETCH)
        queue = await channel.get_queue("q0")
        received = 0
        done = asyncio.Event()

        async def on_message(message: Any) -> None:
            nonlocal received
            received += 1
            on_body(message.body)
            if received % ack_every == 0 or received >= total:
                await message.ack(multiple=True)
            if received >= total:
                done.set()

        await queue.consume(on_message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), time_limit)
        await channel.close()
        return received

    async def drain(self, count: int, time_limit: float) -> Measure:
        with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
            received = await self._consume(count, lambda body: None, time_limit)
        return {
            "events_per_sec": round(received / cpu.wall_sec, 1),
            "events": received,
            **cpu_fields(cpu, received),
        }

    async def e2e(self, rate: float, duration: float) -> Measure:
        sent_at: dict[int, float] = {}
        e2e_ms: list[float] = []
        channel, exchange = await self._exchange()

        async def send(seq: int) -> None:
            sent_at[seq] = time.perf_counter()
            await self._publish(exchange, event(seq))

        def on_body(body: bytes) -> None:
            e2e_ms.append((time.perf_counter() - sent_at[SEQ.decode(body).seq]) * 1000)

        with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
            # Per-message acks here: waiting for 1000 would hold the last events of a burst.
            total = int(rate * duration)
            reader = asyncio.create_task(self._consume(total, on_body, duration + 30, ack_every=1))
            result = await pace(rate, duration, send)
            await asyncio.wait_for(reader, 30)
        await channel.close()
        return e2e_fields(result, e2e_ms, cpu)
