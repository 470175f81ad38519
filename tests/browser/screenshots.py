"""The screenshots of docs/CONSOLE.md, from a real run: `python -m tests.browser.screenshots DIR`.

Starts a real `cfylogs serve` (embedded store, `ingest.accept: cloudify`) in a
temporary directory and plays about two and a half minutes of traffic on it:
a producer posting Cloudify logs and events at a few dozen per second, with
bursts; three orchestrators, one that keeps up, one that acknowledges
slowly (falling behind after a minute) and one that never polls (not seen
after two); a few pushes that are no Cloudify event (dead letters). Then it
opens each view of the console in headless Chromium and writes one PNG per
view to DIR (1280x800), plus the token prompt of a relay with
`security.consumer_token`. Needs what the browser tests need
(scripts/ensure-test-tools.sh). `--seconds N` shortens the traffic (the marks
need about 130 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.chromium import chromium
from tests.support import Api, ServerProcess

DEPLOYMENTS = {
    "webshop-prod": ["LoadBalancer_k9f2", "WebServer_a81c", "Database_3d0e"],
    "billing-staging": ["Compute_77bb", "Queue_c4e1"],
    "monitoring": ["Prometheus_0a5d", "Grafana_e9c3"],
}
LOGS = [
    ("info", "Applying function:setter on Attribute <service_name>"),
    ("info", "Task started 'cloudify_agent.installer.operations.create'"),
    ("info", "Task succeeded 'cloudify_agent.installer.operations.start'"),
    ("debug", "Sending task 'script_runner.tasks.run' [retry 0]"),
    ("warning", "Unable to reach agent yet, retrying in 5 seconds"),
    ("error", "Task failed 'script_runner.tasks.run' -> RecoverableError: exit code 1"),
]
EVENTS = [
    ("workflow_started", "Starting 'install' workflow execution"),
    ("task_succeeded", "Task succeeded 'fabric_plugin.tasks.run_script'"),
    ("workflow_succeeded", "'install' workflow execution succeeded"),
]


def event(seq: int, rng: random.Random) -> dict[str, Any]:
    deployment = rng.choice(list(DEPLOYMENTS))
    node = rng.choice(DEPLOYMENTS[deployment])
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    context = {"deployment_id": deployment, "node_id": node, "workflow_id": "install"}
    if rng.random() < 0.15:
        kind, text = rng.choice(EVENTS)
        return {"type": "cloudify_event", "event_type": kind, "timestamp": stamp,
                "@timestamp": stamp, "context": context, "message": {"text": text}}  # fmt: skip
    level, text = rng.choices(LOGS, weights=[8, 6, 6, 4, 2, 1])[0]
    return {"type": "cloudify_log", "level": level, "timestamp": stamp, "@timestamp": stamp,
            "context": context, "message": {"text": text}, "logger": f"task-{seq}"}  # fmt: skip


class Traffic:
    """The producer and the consumers, each a thread, until `stop`."""

    def __init__(self, server: ServerProcess, seconds: float) -> None:
        self.url = server.url
        self.seconds = seconds
        self.done = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, fast: str, slow: str) -> None:
        for target, args in ((self.produce, ()), (self.consume, (fast, 0.3, 1000)),
                             (self.consume, (slow, 8.0, 40))):  # fmt: skip
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)

    def produce(self) -> None:
        rng = random.Random(7)
        seq = itertools.count()
        started = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10) as client:
            api = Api(client)
            while not self.done.is_set():
                elapsed = time.monotonic() - started
                burst = 40 < elapsed % 60 < 48  # a deployment's install, once a minute
                batch = [event(next(seq), rng) for _ in range(rng.randint(20, 60) if burst else 3)]
                api.push(*batch)
                if rng.random() < 0.01:
                    api.push({"probe": "GET /wp-login.php", "source": "scanner"})
                self.done.wait(0.1)

    def consume(self, reg: str, pause: float, batch_max: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            api = Api(client)
            while not self.done.is_set():
                batch = api.fetch(reg, max=batch_max, wait=1)
                if batch:
                    api.ack(reg, batch["id"])
                self.done.wait(pause)

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(15)


def shoot(
    driver: Any, url: str, view: str, path: Path, ready: str, clicks: tuple[str, ...] = ()
) -> None:
    """Open `view`, wait for `ready` (a CSS selector), click `clicks` in turn, save a PNG."""
    driver.get("about:blank")
    driver.get(f"{url}/ui/#{view}")
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    for css in clicks:
        driver.find_element(By.CSS_SELECTOR, css).click()
    time.sleep(0.5)  # let the charts draw at their final size
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.screenshots")
    parser.add_argument("out", type=Path, help="directory for the PNG files")
    parser.add_argument("--seconds", type=float, default=150.0, help="traffic before the shots")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cfylogs-shots-") as tmp:
        server = ServerProcess(Path(tmp) / "relay", {"ingest": {"accept": "cloudify"}}).start()
        locked = ServerProcess(Path(tmp) / "locked", {"security": {"consumer_token": "s3cret"}})
        traffic = Traffic(server, args.seconds)
        try:
            with server.client() as client:
                api = Api(client)
                fast, slow = api.register("orchestrator-paris"), api.register("orchestrator-lyon")
                api.register("orchestrator-nice")  # registered, then never polls
                api.push({"probe": "GET /", "source": "scanner"})
                api.push({"type": "cloudify_log", "level": "info", "message": "no context"})
            traffic.start(fast, slow)
            print(f"traffic for {args.seconds:.0f}s on {server.url}")
            time.sleep(max(args.seconds - 10, 0))
            with chromium(1280, 800) as driver:
                # The page's own size, whatever the headless window keeps for itself.
                metrics = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
                driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
                shoot(
                    driver,
                    server.url,
                    "overview",
                    args.out / "overview.png",
                    "#chart-rates polyline",
                )
                shoot(
                    driver, server.url, "registrations", args.out / "registrations.png", "td .spark"
                )
                letters = "#dead-letters-table tbody tr:not(.detail)"
                picks = (f"{letters}:nth-child(1) button", f"{letters}:nth-child(3) input",
                         f"{letters}:nth-child(5) input")  # fmt: skip
                path = args.out / "dead-letters.png"
                shoot(driver, server.url, "dead-letters", path, letters, picks)
                driver.get(f"{server.url}/ui/#tail")
                time.sleep(6)  # a few seconds of events
                rows = driver.find_elements(By.CSS_SELECTOR, "#tail-events .row")
                rows[len(rows) // 2].click()  # one event's JSON, opened
                driver.save_screenshot(str(args.out / "tail.png"))
                print(f"wrote {args.out / 'tail.png'}")
                traffic.stop()
                locked.start()
                shoot(
                    driver, locked.url, "overview", args.out / "token.png", "#login:not([hidden])"
                )
        finally:
            traffic.stop()
            server.kill()
            locked.kill()
    summary = {p.name: p.stat().st_size for p in sorted(args.out.glob("*.png"))}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
