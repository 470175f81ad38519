"""Runs wrk (the C load generator) with the shared Lua script and reads its summary."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.system import CpuUse, measure_cpu


@dataclass
class WrkResult:
    requests_per_sec: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    cpu: CpuUse


def run_wrk(
    url: str,
    lua: Path,
    body: Path,
    connections: int,
    duration: float,
    server_pids: list[int],
    threads: int = 1,
) -> WrkResult:
    """One timed wrk run; its CPU (one thread: at most 100%) shows if it was the limit."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    env = {**os.environ, "BENCH_BODY": str(body)}
    with measure_cpu(server_pids, in_process_client=False) as cpu:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    data = json.loads(line[6:])
    seconds = data["duration_us"] / 1e6
    ok = data["requests"] - data["status_errors"]
    return WrkResult(
        requests_per_sec=ok / seconds,
        requests=ok,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=data["status_errors"] + data["socket_errors"],
        cpu=cpu,
    )
