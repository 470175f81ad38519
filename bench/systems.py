"""The systems under test behind one interface, so every scenario drives each the same way.

A system is started fresh (empty data directory) for every measurement and
stopped after it. cfylogs takes its storage backend as extra config keys
(`storage.backend`, `storage.postgres.dsn`, ...), so another backend is one
more `Cfylogs(...)` in the plan, not new code.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from bench import servers
from bench.httpc import Conn
from bench.pacing import Paced, pace, percentile
from bench.system import CpuUse, disk_bytes, measure_cpu
from bench.workload import BATCH, FETCH, batch_body, event
from bench.wrk import run_wrk

Measure = dict[str, Any]


@dataclass
class Load:
    """What a scenario asks of a system; the same for every system of a run."""

    files: dict[str, Path]
    duration: float
    single_connections: int = 50
    batch_connections: int = 8
    fill_connections: int = 4


class _Batch(msgspec.Struct):
    id: int
    entries: list[msgspec.Raw]


class _Seq(msgspec.Struct):
    seq: int


class _SeqBatch(msgspec.Struct):
    id: int
    entries: list[_Seq]


_BATCH = msgspec.json.Decoder(_Batch)
_SEQ_BATCH = msgspec.json.Decoder(_SeqBatch)
SEQ = msgspec.json.Decoder(_Seq)


def cpu_fields(cpu: CpuUse, events: int = 0) -> Measure:
    """CPU figures; with `events`, also the server's CPU time per event, which (unlike a
    rate) hardly moves when other work shares the cores: the figure to compare versions."""
    per_event = {}
    if events:
        loop_us = cpu.main_thread_pct / 100 * cpu.wall_sec * 1e6
        per_event = {"server_cpu_us_per_event": round(cpu.server_us / events, 1)}
        if loop_us > 0:  # 0: a launcher script whose children do the work (RabbitMQ)
            # The event loop's share; the rest is other threads (the SQLite writer, readers).
            per_event["main_thread_us_per_event"] = round(loop_us / events, 1)
    return {
        **per_event,
        "server_cpu_pct": round(cpu.server_pct, 1),
        "client_cpu_pct": round(cpu.client_pct, 1),
        "others_cpu_pct": round(cpu.others_pct, 1),
        # One thread of load generator near a whole core: it, not the server, set the pace.
        "client_bound": cpu.client_pct >= 90.0,
        # The generator spent more CPU than the server: its figure is a floor for the server.
        "client_heavy": cpu.client_pct > max(cpu.server_pct, 30.0),
    }


#: A paced send starting later than this after its schedule: the generator fell behind.
LATE_MS = 2.0


def late(result: Paced) -> bool:
    """A paced run whose generator did not keep its schedule counts as generator-bound."""
    return percentile(result.lags_ms, 99) > LATE_MS


def paced_fields(result: Paced) -> Measure:
    return {
        "target_rate": result.target_rate,
        "achieved_rate": round(result.achieved_rate, 1),
        "p50_ms": round(percentile(result.latencies_ms, 50), 3),
        "p99_ms": round(percentile(result.latencies_ms, 99), 3),
        "max_ms": round(max(result.latencies_ms, default=float("nan")), 3),
        "send_lag_p99_ms": round(percentile(result.lags_ms, 99), 3),
        "errors": result.errors,
    }


@dataclass
class System:
    name: str
    workdir: Path
    server: servers.Managed | None = field(default=None, repr=False)

    #: Which scenarios it takes part in.
    kinds: ClassVar[tuple[str, ...]] = ("ingest", "drain", "e2e", "paced")

    async def start(self, fanout: int = 1) -> None:
        raise NotImplementedError

    async def halt(self) -> None:
        """Stop the server, keeping its data (to measure it on disk)."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    async def stop(self) -> None:
        await self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def data_dir(self) -> Path:
        """Everything this system keeps on disk."""
        return self.workdir

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server else None

    @property
    def cpu_pids(self) -> list[int]:
        """The processes (with their children) whose CPU is the system's."""
        return [self.server.pid] if self.server else []


@dataclass
class Ceiling(System):
    """Ceiling (a): an HTTP server running cfylogs's body parser, no storage: `module` is
    `bench.http_ceiling` (cfylogs's own HTTP core) or `bench.asgi_ceiling` (uvicorn)."""

    module: str = "bench.http_ceiling"
    kinds: ClassVar[tuple[str, ...]] = ("ingest",)

    async def start(self, fanout: int = 1) -> None:
        self.server = servers.start_ceiling(self.workdir, self.module)

    async def ingest(self, load: Load, batched: bool) -> Measure:
        return http_ingest(self, load, batched, "/")


def http_ingest(system: System, load: Load, batched: bool, path: str) -> Measure:
    assert system.server is not None
    conns = load.batch_connections if batched else load.single_connections
    body = load.files["batch" if batched else "single"]
    result = run_wrk(
        system.server.url + path, load.files["lua"], body, conns, load.duration, system.cpu_pids
    )
    per_request = BATCH if batched else 1
    return {
        "events_per_sec": round(result.requests_per_sec * per_request, 1),
        "requests_per_sec": round(result.requests_per_sec, 1),
        "events": result.requests * per_request,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        **cpu_fields(result.cpu, result.requests * per_request),
    }


class Cfylogs(System):
    """cfylogs as shipped (`storage.sync: full`), on the backend its `config` names."""

    kinds: ClassVar[tuple[str, ...]] = ("ingest", "drain", "e2e", "paced", "fanout", "restart")

    @property
    def data_dir(self) -> Path:
        return self.home

    def __init__(
        self,
        name: str,
        workdir: Path,
        config: dict[str, Any] | None = None,
        source: Path | None = None,
    ) -> None:
        super().__init__(name, workdir)
        self.config = dict(config or {})
        #: The `src` of another checkout to run (`--code`), else the installed cfylogs.
        self.source = source
        self.registrations: list[str] = []

    async def start(self, fanout: int = 1) -> None:
        self.server = servers.start_cfylogs(self.workdir, self.config, source=self.source)
        conn = await Conn.open(self.server.url)
        try:
            self.registrations = [
                msgspec.json.decode(await conn.ok("POST", "/api/v1/registration", b"{}"))["id"]
                for _ in range(fanout)
            ]
        finally:
            await conn.close()

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    async def ingest(self, load: Load, batched: bool) -> Measure:
        return http_ingest(self, load, batched, "/api/v1/logs")

    async def fill(self, count: int, load: Load, time_limit: float) -> Measure:
        """Post `count` events in 500-event arrays on a few connections (bounded in time)."""
        assert self.server is not None
        url = self.server.url
        deadline = time.monotonic() + time_limit
        batches = iter(range(0, count, BATCH))
        stored = 0

        async def worker() -> None:
            nonlocal stored
            conn = await Conn.open(url)
            try:
                for first in batches:
                    if time.monotonic() > deadline:
                        return
                    size = min(BATCH, count - first)
                    await conn.ok("POST", "/api/v1/logs", batch_body(first, size))
                    stored += size
            finally:
                await conn.close()

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(load.fill_connections)))
        return {"events": stored, "fill_events_per_sec": stored / (time.monotonic() - started)}

    async def drain(self, count: int, time_limit: float) -> Measure:
        """GET a batch of up to 1000, ACK it, again, until `count` events or the time limit."""
        assert self.server is not None
        reg = self.registrations[0]
        conn = await Conn.open(self.server.url)
        received = 0
        deadline = time.monotonic() + time_limit
        try:
            with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
                while received < count and time.monotonic() < deadline:
                    body = await conn.ok("GET", f"/api/v1/logs/{reg}?max={FETCH}")
                    if body == b"{}":
                        break
                    batch = _BATCH.decode(body)
                    received += len(batch.entries)
                    await conn.ok("DELETE", f"/api/v1/logs/{reg}/ack/{batch.id}")
        finally:
            await conn.close()
        return {
            "events_per_sec": round(received / cpu.wall_sec, 1),
            "events": received,
            **cpu_fields(cpu, received),
        }

    async def paced_ingest(self, rate: float, duration: float) -> Measure:
        """Single-event POSTs at a fixed rate: the latency Logstash sees at a normal load."""
        assert self.server is not None
        pool = await _pool(self.server.url, 16)

        async def send(seq: int) -> None:
            conn = await pool.get()
            try:
                await conn.ok("POST", "/api/v1/logs", event(seq))
            finally:
                pool.put_nowait(conn)

        with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
            result = await pace(rate, duration, send)
        await _close_pool(pool)
        measure = {**paced_fields(result), **cpu_fields(cpu)}
        measure["client_bound"] = measure["client_bound"] or late(result)
        return measure

    async def e2e(self, rate: float, duration: float) -> Measure:
        """Post at `rate` while a consumer long-polls: time from POST sent to event received."""
        assert self.server is not None
        pool = await _pool(self.server.url, 16)
        consumer = await Conn.open(self.server.url)
        sent_at: dict[int, float] = {}
        e2e_ms: list[float] = []
        total = int(rate * duration)
        reg = self.registrations[0]

        async def send(seq: int) -> None:
            conn = await pool.get()
            try:
                sent_at[seq] = time.perf_counter()
                await conn.ok("POST", "/api/v1/logs", event(seq))
            finally:
                pool.put_nowait(conn)

        async def consume() -> None:
            while len(e2e_ms) < total:
                body = await consumer.ok("GET", f"/api/v1/logs/{reg}?wait=5&max={FETCH}")
                if body == b"{}":
                    return
                batch = _SEQ_BATCH.decode(body)
                now = time.perf_counter()
                e2e_ms.extend((now - sent_at[e.seq]) * 1000 for e in batch.entries)
                await consumer.ok("DELETE", f"/api/v1/logs/{reg}/ack/{batch.id}")

        with measure_cpu(self.cpu_pids, in_process_client=True) as cpu:
            reader = asyncio.create_task(consume())
            result = await pace(rate, duration, send)
            await asyncio.wait_for(reader, 30)
        await _close_pool(pool)
        await consumer.close()
        return e2e_fields(result, e2e_ms, cpu)


def e2e_fields(result: Paced, e2e_ms: list[float], cpu: CpuUse) -> Measure:
    return {
        "target_rate": result.target_rate,
        "achieved_rate": round(result.achieved_rate, 1),
        "received": len(e2e_ms),
        "p50_ms": round(percentile(e2e_ms, 50), 3),
        "p99_ms": round(percentile(e2e_ms, 99), 3),
        "max_ms": round(max(e2e_ms, default=float("nan")), 3),
        "ingest_p99_ms": round(percentile(result.latencies_ms, 99), 3),
        "send_lag_p99_ms": round(percentile(result.lags_ms, 99), 3),
        "errors": result.errors,
        **cpu_fields(cpu),
        "client_bound": cpu.client_pct >= 90.0 or late(result),
    }


async def _pool(url: str, size: int) -> asyncio.Queue[Conn]:
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(size):
        pool.put_nowait(await Conn.open(url))
    return pool


async def _close_pool(pool: asyncio.Queue[Conn]) -> None:
    while not pool.empty():
        await pool.get_nowait().close()


def disk_per_event(system: System, events: int) -> float:
    return disk_bytes(system.data_dir) / max(events, 1)
