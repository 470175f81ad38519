"""Test helpers shared by every suite: a real `cfylogs serve` process on real sockets."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml


def _find_fixtures() -> Path:
    """`shared/fixtures` beside the repository or one of its parents (the project's
    reference events), else the copy of them in tests/fixtures (a lone clone)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "fixtures"
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parent / "fixtures"


FIXTURES = _find_fixtures()
_LISTENING = re.compile(r"listening on (\S+) \((\w+)\)")


@functools.cache
def _cloudify_log_fields() -> bytes:
    """The fixture's members, compacted, without their closing brace (read once)."""
    event = json.loads((FIXTURES / "cloudify_log.json").read_bytes())
    return json.dumps(event, separators=(",", ":")).encode()[:-1]


def cloudify_log(seq: int | None = None) -> bytes:
    """The shared fixture event, compacted, optionally tagged with a sequence number."""
    if seq is None:
        return _cloudify_log_fields() + b"}"
    return _cloudify_log_fields() + b',"seq":%d}' % seq


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def gauge(base_url: str, name: str) -> float:
    """A metric without labels, read from `GET /metrics` (no token)."""
    text = httpx.get(base_url + "/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


def wait_for_gauge(base_url: str, name: str, wanted: float, timeout: float = 10.0) -> None:
    """Poll /metrics until the gauge `name` reads `wanted` (e.g. a long poll is held open:
    the request has reached the server and waits there)."""
    wait_until(lambda: gauge(base_url, name) == wanted, timeout)


class ServerProcess:
    """`python -m cfylogs serve` with a config file of its own, under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        prefix: list[str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        #: A command the server runs under (e.g. setpriv, to drop root's capabilities).
        self.prefix = list(prefix or [])
        #: The `cfylogs` to run: this Python's unless told (an installed one, say).
        self.command = list(command or [sys.executable, "-m", "cfylogs"])
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = self.workdir / "home"
        base: dict[str, Any] = {
            "server": {"port": 0, "address": "127.0.0.1"},
            "home_directory": str(self.home),
        }
        self.config = _merge(base, dict(config or {}))
        self.config_path = self.workdir / "alien4cloud-cfy-logs-config.yml"
        self.env = dict(env or {})
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "server.log"
        self.urls: dict[str, str] = {}
        self._log_offset = 0
        self._runs = 0

    @property
    def url(self) -> str:
        return self.urls["api"]

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(self, timeout: float = 20.0, expect_ready: bool = True) -> ServerProcess:
        self.write_config()
        self._runs += 1
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    *self.command,
                    "serve",
                    "--config",
                    str(self.config_path),
                    *self.args,
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=log,
                env=env,
            )
        if expect_ready:
            self.wait_ready(timeout)
        return self

    def run_log(self) -> str:
        """What this run (since the last start) printed."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.run_log()}")
            found = dict((name, url) for url, name in _LISTENING.findall(self.run_log()))
            if "api" in found and (
                not self.config.get("server", {}).get("ssl", {}).get("enabled") or "http" in found
            ):
                self.urls = found
                return True
            return False

        wait_until(ready, timeout)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class Api:
    """The five compat calls, as the Alien4Cloud plugin makes them, with checks."""

    def __init__(self, client: httpx.Client) -> None:
        self.http = client

    def register(self, name: str | None = None) -> str:
        body = {} if name is None else {"name": name}
        r = self.http.post("/api/v1/registration", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def push(self, *events: bytes | dict[str, Any]) -> httpx.Response:
        import json

        raws = [e if isinstance(e, bytes) else json.dumps(e).encode() for e in events]
        body = raws[0] if len(raws) == 1 else b"[" + b",".join(raws) + b"]"
        return self.http.post(
            "/api/v1/logs", content=body, headers={"content-type": "application/json"}
        )

    def fetch(self, registration_id: str, **params: Any) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/logs/{registration_id}", params=params)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def ack(self, registration_id: str, batch_id: int) -> httpx.Response:
        return self.http.delete(f"/api/v1/logs/{registration_id}/ack/{batch_id}")

    def drain(self, registration_id: str, limit: int = 10_000) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(limit):
            batch = self.fetch(registration_id)
            if not batch:
                return events
            events.extend(batch["entries"])
            assert self.ack(registration_id, batch["id"]).status_code == 200
        raise AssertionError("drain did not finish")


def memory_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc (`VmRSS` now, `VmHWM` its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
