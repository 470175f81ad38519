"""Starts every server under test on loopback, with its data in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from bench.system import free_port

_LISTENING = re.compile(r"listening on (\S+) \(api\)")


class Managed:
    """A server process of ours: stopped with SIGTERM (then SIGKILL) by its own pid."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, url: str = "") -> None:
        self.proc = proc
        self.log = log
        self.url = url
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _spawn(cmd: list[str], log: Path, env: Mapping[str, str] | None = None) -> Managed:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    return Managed(proc, log)


def wait_for(check: Callable[[], Any], server: Managed, timeout: float, what: str) -> Any:
    """Poll `check` (a cheap probe, not a sleep-as-sync) until it is truthy or the server dies."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.proc.returncode}:\n{server.log_text()}")
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"{what} not ready within {timeout}s:\n{server.log_text()[-2000:]}")
        time.sleep(0.01)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def cfylogs_config(home: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults as shipped (storage.sync full) plus the backend keys of this run."""
    return {
        "server.port": 0,
        "server.address": "127.0.0.1",
        "server.access_log": False,
        "home_directory": str(home),
        **extra,
    }


def start_cfylogs(
    workdir: Path, extra: Mapping[str, Any], timeout: float = 60.0, source: Path | None = None
) -> Managed:
    """cfylogs with `extra` config keys; `source`: the `src` directory of another
    checkout to run instead of the installed one (before/after comparisons)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alien4cloud-cfy-logs-config.yml"
    config.write_text(yaml.safe_dump(cfylogs_config(workdir / "home", extra)))
    log = workdir / "server.log"
    offset = log.stat().st_size if log.exists() else 0
    env = {"PYTHONPATH": str(source)} if source is not None else None
    cmd = [sys.executable, "-m", "cfylogs", "serve", "--config", str(config)]
    server = _spawn(cmd, log, env)

    def listening() -> str | None:
        found = _LISTENING.search(server.log_text()[offset:])
        return found.group(1) if found else None

    server.url = wait_for(listening, server, timeout, "cfylogs")
    return server


def start_ceiling(workdir: Path, module: str) -> Managed:
    """`bench.http_ceiling` (cfylogs's own HTTP core) or `bench.asgi_ceiling` (uvicorn)."""
    port = free_port()
    name = module.rsplit(".", 1)[-1]
    server = _spawn([sys.executable, "-m", module, str(port)], workdir / f"{name}.log")
    wait_for(lambda: _port_open(port), server, 30, f"{name} app")
    server.url = f"http://127.0.0.1:{port}"
    return server


def start_redis(workdir: Path) -> Managed:
    """Redis with the durable settings of the issue: AOF, fsync on every write."""
    port = free_port()
    data = workdir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [
        "redis-server",
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data),
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--daemonize", "no",
    ]  # fmt: skip
    server = _spawn(cmd, workdir / "redis.log")
    wait_for(lambda: _port_open(port), server, 30, "redis-server")
    server.url = f"redis://127.0.0.1:{port}"
    return server


def start_rabbitmq(workdir: Path) -> Managed:
    """RabbitMQ as root from Debian's package, with its node, ports and data of its own."""
    port, dist, epmd = free_port(), free_port(), free_port()
    base = workdir / "rabbitmq"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\n")
    env = {
        "HOME": str(base),  # the Erlang cookie goes there
        "RABBITMQ_NODENAME": f"bench{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
    }
    # The script under /usr/lib runs as the caller; /usr/sbin's switches to the rabbitmq user.
    server = _spawn(["/usr/lib/rabbitmq/bin/rabbitmq-server"], base / "stdout.log", env)
    wait_for(lambda: _port_open(port), server, 90, "rabbitmq-server")
    server.url = f"amqp://guest:guest@127.0.0.1:{port}/"
    server.env = env  # type: ignore[attr-defined]
    return server


def stop_rabbitmq(server: Managed) -> None:
    """Stop the node, then the epmd it started on a port of its own (never another's)."""
    server.stop(60)
    env = {**os.environ, **getattr(server, "env", {})}
    subprocess.run(["epmd", "-kill"], env=env, capture_output=True, check=False)
