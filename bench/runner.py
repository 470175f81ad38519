"""The plan of one benchmark run: every scenario, every system, interleaved rounds.

Within a scenario the systems take turns (A B C, A B C, ...) so that a swing
in the virtual CPU's speed hits all of them alike; medians are taken over
the rounds and ratios are computed round by round.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import disk
from bench.httpc import Conn
from bench.system import disk_bytes, process_tree, rss_bytes
from bench.systems import Ceiling, Cfylogs, Load, Measure, System, disk_per_event


@dataclass
class Options:
    workdir: Path
    rounds: int = 3
    duration: float = 5.0
    drain_events: int = 200_000
    restart_events: int = 1_000_000
    rate: float = 1000.0
    fanouts: tuple[int, ...] = (1, 4, 16)
    backends: dict[str, dict[str, Any]] = field(default_factory=lambda: {"cfylogs": {}})
    #: Other checkouts of cfylogs to run beside this one: name -> their `src` directory.
    code: dict[str, Path] = field(default_factory=dict)
    peers: bool = True
    only: set[str] | None = None
    time_limit: float = 40.0
    #: Also run `cfylogs-viewer`: one live-tail viewer of the console during P1 and P2.
    console_viewer: bool = False


class Runner:
    def __init__(
        self, options: Options, load: Load, peers: list[System], extra: list[Cfylogs] | None = None
    ) -> None:
        self.options = options
        self.load = load
        self.peers = peers
        #: cfylogs on other backends (PostgreSQL), with their own start-up.
        self.extra = extra or []
        self.rows: list[Measure] = []

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def record(self, scenario: str, system: str, round_: int, measure: Measure) -> None:
        row = {"scenario": scenario, "system": system, "round": round_, **measure}
        self.rows.append(row)
        shown = {k: v for k, v in measure.items() if k in _SHOWN}
        self.log(f"{scenario} {system} #{round_}: {shown}")

    def wanted(self, scenario: str) -> bool:
        return self.options.only is None or scenario in self.options.only

    def cfylogs(self, kind: str) -> list[Cfylogs]:
        base = self.options.workdir / "systems"
        mine = [Cfylogs(name, base / name, cfg) for name, cfg in self.options.backends.items()]
        mine += [Cfylogs(name, base / name, source=src) for name, src in self.options.code.items()]
        if self.options.console_viewer:
            from bench.viewer import CfylogsWithViewer

            mine.append(CfylogsWithViewer("cfylogs-viewer", base / "cfylogs-viewer"))
        return [s for s in mine + self.extra if kind in s.kinds]

    async def run(self) -> list[Measure]:
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("disk", self.disk_ceilings),
            ("P1", lambda: self.ingest("P1", batched=False)),
            ("P1-paced", self.paced),
            ("P2", lambda: self.ingest("P2", batched=True)),
            ("P3", self.drain),
            ("P4", self.fanout),
            ("P5", self.e2e),
            ("P6", self.restart),
        ]
        for name, step in steps:
            if self.wanted(name):
                self.log(f"--- {name}")
                await step()
        return self.rows

    async def disk_ceilings(self) -> None:
        directory = self.options.workdir / "disk"
        directory.mkdir(parents=True, exist_ok=True)
        seconds = max(1.0, self.options.duration / 2)
        for r in range(self.options.rounds):
            self.record("disk", "framed-500", r, disk.framed_batches(directory, seconds))
            self.record(
                "disk", "framed-500-prealloc", r, disk.framed_batches(directory, seconds, True)
            )
            self.record("disk", "single-fsync", r, disk.single_appends(directory, seconds))

    async def _each(
        self, scenario: str, systems: list[System], measure: Callable[[System], Any]
    ) -> None:
        for r in range(self.options.rounds):
            for system in systems:
                try:
                    await system.start()
                    # Fill and drain bound themselves; this catches a system that hangs.
                    limit = self.options.time_limit + 60
                    result = await asyncio.wait_for(measure(system), limit)
                    self.record(scenario, system.name, r, result)
                except Exception as exc:  # one failing system must not sink the whole run
                    self.log(f"{scenario} {system.name} #{r} failed: {exc!r}")
                    self.record(scenario, system.name, r, {"failed": repr(exc)[:300]})
                finally:
                    await system.stop()

    async def ingest(self, scenario: str, batched: bool) -> None:
        base = self.options.workdir / "systems"
        ceiling: list[System] = [
            Ceiling("http-ceiling", base / "http", module="bench.http_ceiling")
        ]
        if importlib.util.find_spec("uvicorn") is not None:  # the bench extra
            ceiling.append(Ceiling("asgi-ceiling", base / "asgi", module="bench.asgi_ceiling"))
        systems = ceiling + self.cfylogs("ingest") + [p for p in self.peers if "ingest" in p.kinds]
        await self._each(scenario, systems, lambda s: s.ingest(self.load, batched))  # type: ignore[attr-defined]

    async def paced(self) -> None:
        duration = self.options.duration
        await self._each(
            "P1-paced",
            list(self.cfylogs("paced")),
            lambda s: s.paced_ingest(self.options.rate, duration),  # type: ignore[attr-defined]
        )

    async def drain(self) -> None:
        count = self.options.drain_events

        async def fill_then_drain(system: System) -> Measure:
            filled = await system.fill(count, self.load, self.options.time_limit / 2)  # type: ignore[attr-defined]
            drained = await system.drain(filled["events"], self.options.time_limit / 2)  # type: ignore[attr-defined]
            return {**drained, "fill_events_per_sec": round(filled["fill_events_per_sec"], 1)}

        systems = self.cfylogs("drain") + [p for p in self.peers if "drain" in p.kinds]
        await self._each("P3", systems, fill_then_drain)

    async def fanout(self) -> None:
        for r in range(self.options.rounds):
            for system in self.cfylogs("fanout") + [p for p in self.peers if "fanout" in p.kinds]:
                for fanout in self.options.fanouts:
                    await self._fanout_once(system, fanout, r)

    async def _fanout_once(self, system: System, fanout: int, round_: int) -> None:
        try:
            await system.start(fanout)
            empty = disk_bytes(system.data_dir)  # an empty store's files are no event's cost
            result = await system.ingest(self.load, batched=True)  # type: ignore[attr-defined]
            await system.halt()  # a closed store: settled file sizes
            result["fanout"] = fanout
            used = disk_bytes(system.data_dir) - empty
            stored = result.get("stored_events", result["events"])
            result["disk_bytes_per_event"] = round(used / max(stored, 1), 1)
            self.record("P4", f"{system.name} x{fanout}", round_, result)
        except Exception as exc:
            self.log(f"P4 {system.name} x{fanout} failed: {exc!r}")
        finally:
            await system.stop()

    async def e2e(self) -> None:
        duration = self.options.duration
        systems = self.cfylogs("e2e") + [p for p in self.peers if "e2e" in p.kinds]
        await self._each("P5", systems, lambda s: s.e2e(self.options.rate, duration))  # type: ignore[attr-defined]

    async def restart(self) -> None:
        for system in self.cfylogs("restart"):
            try:
                result = await self._restart_once(system)
                self.record("P6", system.name, 0, result)
            except Exception as exc:
                self.log(f"P6 {system.name} failed: {exc!r}")
                self.record("P6", system.name, 0, {"failed": repr(exc)[:300]})
            finally:
                await system.stop()

    async def _restart_once(self, system: Cfylogs) -> Measure:
        count = self.options.restart_events
        await system.start()
        with rss_peak(lambda: system.pid) as filling:
            filled = await system.fill(count, self.load, max(120.0, self.options.time_limit))
        assert system.server is not None
        system.server.stop()
        reg = system.registrations[0]
        with rss_peak(lambda: system.pid) as after:
            started = time.monotonic()
            system.server = None
            from bench import servers

            system.server = servers.start_cfylogs(system.workdir, system.config)
            listening = time.monotonic() - started
            conn = await Conn.open(system.server.url)
            try:
                await conn.ok("GET", f"/api/v1/logs/{reg}?max=1000")
                answered = time.monotonic() - started
                for _ in range(20):  # keep serving batches: RSS "after" includes reads
                    await conn.ok("GET", f"/api/v1/logs/{reg}?max=1000")
            finally:
                await conn.close()
        return {
            "events": filled["events"],
            "fill_events_per_sec": round(filled["fill_events_per_sec"], 1),
            "listening_sec": round(listening, 3),
            "answer_sec": round(answered, 3),
            "rss_fill_mb": round(filling.peak / 1024**2, 1),
            "rss_restart_mb": round(after.peak / 1024**2, 1),
            "disk_bytes_per_event": round(disk_per_event(system, filled["events"]), 1),
        }


@dataclass
class Peak:
    peak: int = 0


@contextlib.contextmanager
def rss_peak(pid: Callable[[], int | None], every: float = 0.02) -> Iterator[Peak]:
    """Highest resident memory of the server (and its children) while the block runs."""
    peak = Peak()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            current = pid()
            if current:
                peak.peak = max(peak.peak, rss_bytes(process_tree(current)))
            done.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


_SHOWN = {
    "events_per_sec",
    "p50_ms",
    "p99_ms",
    "server_cpu_pct",
    "client_cpu_pct",
    "others_cpu_pct",
    "client_bound",
    "achieved_rate",
    "disk_bytes_per_event",
    "answer_sec",
    "rss_restart_mb",
    "rss_fill_mb",
    "failed",
    "errors",
}
