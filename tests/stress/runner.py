"""Crash-cycle stress: producers, consumers and registration churn while the server is
killed with SIGKILL at random moments; after every restart the consumers' view is checked
against what the producers were told (2xx) and what they merely sent.

The checks, per tracked registration (one created before the producers of its first cycle):
- lost: every event of a 2xx'd request sent after it was registered reaches it;
- foreign: every event it gets is one a producer sent, shaped as sent;
- order: the events of each producer arrive in the order that producer sent them;
- duplicates: an event comes twice only inside a batch re-delivered under the same id with
  the same entries, and never after that batch's acknowledgement got a 200;
- batch ids: each new batch id is the previous one plus 1.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import ServerProcess

Key = tuple[int, int]  # (producer, sequence number)

LEASE_SEC = 2
_EXPIRED_LOG = re.compile(r"registration (\S+) expired after")


@dataclass(frozen=True)
class Options:
    workdir: Path
    cycles: int = 50
    seconds_per_cycle: float = 3.0
    producers: int = 4
    tracked: int = 3
    seed: int = 0
    batch_size: int = 50


@dataclass
class Figures:
    cycles: int = 0
    requests_acked: int = 0
    events_acked: int = 0
    events_checked: int = 0
    duplicates: int = 0
    batches_redelivered: int = 0
    registrations_created: int = 0
    registrations_removed: int = 0
    registrations_expired: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rows = {k: v for k, v in vars(self).items() if k != "violations"}
        rows["violations"] = len(self.violations)
        return "\n".join(f"{key:24} {value}" for key, value in rows.items())


class Ledger:
    """What the producers sent and what they got a 2xx for, per producer, in order."""

    def __init__(self, producers: int) -> None:
        self.next = [0] * producers
        self.sent: set[Key] = set()
        self.acked: dict[int, list[int]] = defaultdict(list)
        self.requests_acked = 0
        self.lock = threading.Lock()


@dataclass
class Tracked:
    """A registration whose every delivery is checked."""

    id: str
    floor: list[int]  # per producer, the first sequence number sent after registering
    batches: dict[int, list[Key]] = field(default_factory=dict)
    confirmed: set[int] = field(default_factory=set)
    received: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    last_seq: dict[int, int] = field(default_factory=dict)
    last_batch: int = -1


class Producer(threading.Thread):
    """Pushes `{"p", "i", "pad"}` events: one per request (even p) or arrays (odd p)."""

    def __init__(self, url: str, p: int, ledger: Ledger, stop: threading.Event, seed: int):
        super().__init__(daemon=True, name=f"producer-{p}")
        self.url, self.p, self.ledger, self.stop = url, p, ledger, stop
        self.rng = random.Random(seed)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                count = 1 if self.p % 2 == 0 else self.rng.randint(2, 25)
                if not self._push(client, count):
                    return

    def _push(self, client: httpx.Client, count: int) -> bool:
        first = self.ledger.next[self.p]
        seqs = range(first, first + count)
        events = [{"p": self.p, "i": i, "pad": "x" * self.rng.randint(0, 200)} for i in seqs]
        self.ledger.next[self.p] = first + count
        self.ledger.sent.update((self.p, i) for i in seqs)  # before: it may be stored anyway
        body = json.dumps(events[0] if count == 1 else events)
        try:
            r = client.post("/api/v1/logs", content=body)
        except httpx.HTTPError:
            return False  # the server died: this request is not acknowledged
        if r.status_code == 200:
            with self.ledger.lock:
                self.ledger.acked[self.p].extend(seqs)
                self.ledger.requests_acked += 1
        return True


class Checker:
    """Consumes tracked registrations and records every rule a delivery breaks."""

    def __init__(self, ledger: Ledger, figures: Figures) -> None:
        self.ledger, self.figures = ledger, figures
        self.lock = threading.Lock()

    def violation(self, reg: Tracked, text: str) -> None:
        with self.lock:
            self.figures.violations.append(f"{reg.id}: {text}")

    def step(self, client: httpx.Client, reg: Tracked, wait: float) -> bool:
        """Fetch, check and acknowledge one batch; False when nothing was pending."""
        r = client.get(f"/api/v1/logs/{reg.id}", params={"wait": wait})
        if r.status_code != 200:
            self.violation(reg, f"GET answered {r.status_code}: {r.text[:200]}")
            return False
        body = r.json()
        if not body:
            return False
        batch_id, entries = body["id"], [self._key(reg, e) for e in body["entries"]]
        self._check_batch(reg, batch_id, entries)
        ack = client.delete(f"/api/v1/logs/{reg.id}/ack/{batch_id}")
        if ack.status_code == 200:
            reg.confirmed.add(batch_id)
        return True

    def _key(self, reg: Tracked, event: dict[str, Any]) -> Key:
        key = (event.get("p", -1), event.get("i", -1))
        if set(event) != {"p", "i", "pad"} or key not in self.ledger.sent:
            self.violation(reg, f"foreign event {str(event)[:120]}")
        return key

    def _check_batch(self, reg: Tracked, batch_id: int, entries: list[Key]) -> None:
        if batch_id in reg.batches:  # a re-delivery: same batch, never an acknowledged one
            if reg.batches[batch_id] != entries:
                self.violation(reg, f"batch {batch_id} came again with other entries")
            if batch_id in reg.confirmed:
                self.violation(reg, f"batch {batch_id} came again after its ack got a 200")
            with self.lock:
                self.figures.duplicates += len(entries)
                self.figures.batches_redelivered += 1
            return
        if batch_id != reg.last_batch + 1 and reg.last_batch >= 0:
            self.violation(reg, f"batch id {batch_id} after {reg.last_batch}")
        reg.last_batch = batch_id
        reg.batches[batch_id] = entries
        for p, i in entries:
            if i in reg.received[p]:
                self.violation(reg, f"event {(p, i)} delivered in two different batches")
            if i <= reg.last_seq.get(p, -1):
                self.violation(reg, f"producer {p}: {i} after {reg.last_seq[p]}")
            reg.received[p].add(i)
            reg.last_seq[p] = i
        with self.lock:
            self.figures.events_checked += len(entries)

    def check_nothing_lost(self, reg: Tracked) -> None:
        with self.ledger.lock:
            acked = {p: list(seqs) for p, seqs in self.ledger.acked.items()}
        for p, seqs in acked.items():
            missing = [i for i in seqs if i >= reg.floor[p] and i not in reg.received[p]]
            if missing:
                text = f"lost {len(missing)} acknowledged events of {p}: {missing[:5]}"
                self.violation(reg, text)


class Consumer(threading.Thread):
    def __init__(self, url: str, checker: Checker, reg: Tracked, stop: threading.Event):
        super().__init__(daemon=True, name=f"consumer-{reg.id[:8]}")
        self.url, self.checker, self.reg, self.stop = url, checker, reg, stop

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    self.checker.step(client, self.reg, wait=0.2)
                except (httpx.HTTPError, ValueError):
                    return  # the server died


class Churn(threading.Thread):
    """Registrations that come and go: removed at once, or abandoned to expire."""

    def __init__(self, url: str, figures: Figures, stop: threading.Event, seed: int):
        super().__init__(daemon=True, name="churn")
        self.url, self.figures, self.stop = url, figures, stop
        self.rng = random.Random(seed)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.wait(0.05):
                try:
                    self._one(client)
                except (httpx.HTTPError, ValueError):
                    return

    def _one(self, client: httpx.Client) -> None:
        r = client.post("/api/v1/registration", json={"name": "churn"})
        if r.status_code != 200:
            return
        self.figures.registrations_created += 1
        reg_id = r.json()["id"]
        client.get(f"/api/v1/logs/{reg_id}")  # hand out a batch that may never be acked
        if self.rng.random() < 0.5:  # else abandoned: its lease runs out
            removed = client.delete(f"/api/v1/registration/{reg_id}").status_code == 200
            self.figures.registrations_removed += removed


def run(options: Options) -> Figures:
    figures = Figures()
    rng = random.Random(options.seed)
    ledger = Ledger(options.producers)
    checker = Checker(ledger, figures)
    server = ServerProcess(options.workdir, _config(options))
    started = time.monotonic()
    server.start()
    tracked: list[Tracked] = []
    try:
        for cycle in range(options.cycles):
            _renew_tracked(server, tracked, ledger, figures, rng, options.tracked)
            _one_cycle(server, tracked, ledger, checker, figures, rng, options, cycle)
            server.start()
            _drain_and_check(server, tracked, checker)
            figures.cycles += 1
    finally:
        server.kill()
    figures.seconds = round(time.monotonic() - started, 1)
    figures.requests_acked = ledger.requests_acked
    figures.events_acked = sum(len(v) for v in ledger.acked.values())
    figures.registrations_expired = len(_EXPIRED_LOG.findall(server.log_path.read_text()))
    return figures


def _config(options: Options) -> dict[str, Any]:
    return {
        "buffer": {"size": options.batch_size},
        "alien_registration": {
            "is_leased": True,
            "lease_duration_sec": LEASE_SEC,
            "lease_expiration_frequency_sec": 1,
        },
    }


def _renew_tracked(
    server: ServerProcess,
    tracked: list[Tracked],
    ledger: Ledger,
    figures: Figures,
    rng: random.Random,
    wanted: int,
) -> None:
    """Now and then remove a tracked registration (it must then be gone); top up."""
    with server.client() as client:
        if tracked and rng.random() < 0.3:
            gone = tracked.pop(rng.randrange(len(tracked)))
            assert client.delete(f"/api/v1/registration/{gone.id}").status_code == 200
            assert client.get(f"/api/v1/logs/{gone.id}").status_code == 404
            figures.registrations_removed += 1
        while len(tracked) < wanted:
            r = client.post("/api/v1/registration", json={"name": "tracked"})
            assert r.status_code == 200, r.text
            tracked.append(Tracked(r.json()["id"], list(ledger.next)))
            figures.registrations_created += 1


def _one_cycle(
    server: ServerProcess,
    tracked: list[Tracked],
    ledger: Ledger,
    checker: Checker,
    figures: Figures,
    rng: random.Random,
    options: Options,
    cycle: int,
) -> None:
    stop = threading.Event()
    seed = options.seed * 1_000_003 + cycle * 101
    threads: list[threading.Thread] = [
        *(Producer(server.url, p, ledger, stop, seed + p) for p in range(options.producers)),
        *(Consumer(server.url, checker, reg, stop) for reg in tracked),
        Churn(server.url, figures, stop, seed),
    ]
    for thread in threads:
        thread.start()
    # The fault: SIGKILL at a random moment of the cycle, whatever is in flight.
    stop.wait(rng.uniform(0.2, options.seconds_per_cycle))
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(30)


def _drain_and_check(server: ServerProcess, tracked: list[Tracked], checker: Checker) -> None:
    with server.client() as client:
        for reg in tracked:
            while checker.step(client, reg, wait=0):
                pass
            checker.check_nothing_lost(reg)
    expired = set(_EXPIRED_LOG.findall(server.log_path.read_text()))
    for reg in tracked:
        if reg.id in expired:  # the runner starved its consumer past the lease: not a loss
            checker.violation(reg, "tracked registration expired: its consumer was starved")
