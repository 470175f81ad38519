"""Prometheus metrics: the relay's counters, the store and each registration, read at scrape time.

The relay keeps plain counters (no Prometheus types in the domain); this
module turns them into metric families on each scrape. Per-registration
figures come from the store, so `/metrics` first awaits a snapshot, then
renders it with a private `CollectorRegistry` (never the global one: two
relays in one process, as in tests, must not mix their figures).
Request latency is the one live instrument: a histogram per route template
(`/api/v1/logs/{id}`, never the raw path, which holds ids without bound).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cfylogs import __version__
from cfylogs.errors import StorageUnavailable
from cfylogs.models import Registration, StoreStatus
from cfylogs.relay import Relay, RelayCounters

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Counter name (without `cfylogs_` and `_total`) and help, per `RelayCounters` field.
_COUNTERS: dict[str, str] = {
    "events_received": "Events received on POST /api/v1/logs (stored or not).",
    "bytes_received": "Bytes of events received (after decompression).",
    "events_stored": "Events stored for at least one registration.",
    "events_discarded": "Events discarded because no registration existed.",
    "events_delivered": "Events handed out in batches, re-deliveries included.",
    "events_redelivered": "Events handed out again in a batch not acknowledged before.",
    "events_acknowledged": "Events released by acknowledgements.",
    "batches_delivered": "Batches handed out, re-deliveries included.",
    "batches_redelivered": "Batches handed out again.",
    "batches_acknowledged": "Batches acknowledged (repeated acks not counted).",
    "registrations_created": "Registrations created.",
    "registrations_removed": "Registrations removed by DELETE.",
    "registrations_expired": "Registrations expired by their lease.",
    "registrations_revived": "Expired registrations re-created under their id.",
    "registrations_purged": "Expired registrations deleted after their retention period.",
    "ingests_refused": "Ingest requests answered 503 (back-pressure or store unavailable).",
    "events_dropped": "Events dropped from backlogs by the backlog caps (policy drop_oldest), "
    "counted once per registration that lost them.",
    "events_dead_lettered": "Events kept as dead letters by ingest.accept (not delivered).",
    "dead_letters_dropped": "Oldest dead letters deleted past ingest.max_dead_letters.",
    "dead_letters_replayed": "Dead letters replayed into the stream.",
}

#: Seconds; ingest is expected in milliseconds, long polls last up to 60 s.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class Snapshot:
    """What the store says, read (asynchronously) just before a scrape renders."""

    status: StoreStatus
    registrations: list[Registration]
    taken_at: float


class RelayCollector(Collector):
    """Metric families from the relay's counters and the latest `Snapshot`."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterable[Metric]:
        yield InfoMetricFamily("cfylogs_build", "Version of cfylogs.", {"version": __version__})
        yield from _counters(self.relay.counters)
        yield GaugeMetricFamily(
            "cfylogs_back_pressure",
            "1 while ingest is refused (503), 0 otherwise.",
            value=float(self.relay.back_pressure),
        )
        yield GaugeMetricFamily(
            "cfylogs_long_polls_waiting",
            "Consumer fetches held open now (?wait=), waiting for events.",
            value=float(self.relay.long_polls_waiting),
        )
        yield GaugeMetricFamily(
            "cfylogs_console_tail_polls_waiting",
            "Web console live-tail polls held open now, waiting for events.",
            value=float(self.relay.tail.polls_waiting),
        )
        yield GaugeMetricFamily(
            "cfylogs_start_time_seconds",
            "When the relay started, in Unix time.",
            value=self.relay.started_at,
        )
        if self.snapshot is not None:
            yield from _store(self.snapshot.status)
            yield from _registrations(self.snapshot.registrations, self.snapshot.taken_at)


def _counters(counters: RelayCounters) -> Iterator[Metric]:
    for item in fields(counters):
        # A counter added to the relay without help text here is still exported.
        text = _COUNTERS.get(item.name) or item.name.replace("_", " ").capitalize() + "."
        yield CounterMetricFamily(f"cfylogs_{item.name}", text, value=getattr(counters, item.name))


def _store(status: StoreStatus) -> Iterator[Metric]:
    labels = ["backend"]
    gauges = {
        "cfylogs_store_up": ("1 while the store answers.", float(status.ok)),
        "cfylogs_store_events": ("Events kept in the store.", status.events_stored),
        "cfylogs_store_bytes": ("Bytes of events kept in the store.", status.bytes_stored),
        "cfylogs_store_disk_bytes": ("Size of the store's files on disk.", status.disk_bytes),
    }
    if status.free_bytes is not None:
        gauges["cfylogs_store_free_bytes"] = (
            "Free disk space where the store lives.",
            status.free_bytes,
        )
    for name, (help_text, value) in gauges.items():
        family = GaugeMetricFamily(name, help_text, labels=labels)
        family.add_metric([status.backend], float(value))
        yield family


def _registrations(regs: list[Registration], now: float) -> Iterator[Metric]:
    yield GaugeMetricFamily("cfylogs_registrations", "Active registrations.", value=len(regs))
    labels = ["id", "name"]
    gauge = {
        "backlog_events": "Events not yet acknowledged.",
        "backlog_bytes": "Bytes of events not yet acknowledged.",
        "oldest_unacked_age_seconds": "Age of the oldest unacknowledged event (0: none).",
        "last_seen_timestamp_seconds": "Last request naming the registration, in Unix time.",
        "pending_deliveries": "Times the pending batch was handed out (0: none pending).",
    }
    counter = {
        "redeliveries": "Batch deliveries beyond the first, over the registration's life.",
        "dropped_events": "Events dropped by the backlog caps (policy drop_oldest).",
    }
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        key: GaugeMetricFamily(f"cfylogs_registration_{key}", text, labels=labels)
        for key, text in gauge.items()
    }
    for key, text in counter.items():
        families[key] = CounterMetricFamily(f"cfylogs_registration_{key}", text, labels=labels)
    for reg in regs:
        values = {
            "backlog_events": reg.backlog_events,
            "backlog_bytes": reg.backlog_bytes,
            "oldest_unacked_age_seconds": (
                max(0.0, now - reg.oldest_unacked_at) if reg.oldest_unacked_at else 0.0
            ),
            "last_seen_timestamp_seconds": reg.last_seen,
            "pending_deliveries": reg.pending_deliveries,
            "redeliveries": reg.redeliveries,
            "dropped_events": reg.dropped_events,
        }
        for key, value in values.items():
            families[key].add_metric([reg.id, reg.name or ""], float(value))
    yield from families.values()


class LatencyHistogram(Collector):
    """Request latency per (method, route template), observed on every request.

    prometheus_client's Histogram takes a lock and walks its buckets in Python
    on each observation (a few % of a single-event ingest request); requests
    are all observed from the event loop, so a bisect and two additions do.
    """

    name = "cfylogs_http_request_duration_seconds"

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        #: (method, route) -> [count per bucket (the last one +Inf), sum of seconds]
        self._series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def observe(self, method: str, route: str, seconds: float) -> None:
        series = self._series.get((method, route))
        if series is None:
            series = self._series[method, route] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect.bisect_left(self.buckets, seconds)] += 1
        series[1][0] += seconds

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            self.name,
            "Time to answer a request, per route template (long polls included).",
            labels=["method", "route"],
        )
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for (method, route), (counts, total) in tuple(self._series.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([method, route], cumulative, total[0])
        yield family


class Metrics:
    """One per relay, shared by its listeners."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RelayCollector(relay)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.latency = LatencyHistogram(_LATENCY_BUCKETS)
        self.registry.register(self.latency)
        self.observe = self.latency.observe

    async def render(self) -> bytes:
        """The Prometheus text exposition, with the store read now."""
        status = await self.relay.status()
        try:
            regs = await self.relay.registrations()
        except StorageUnavailable:  # a store that cannot be read still shows its counters
            regs = []
        self.collector.snapshot = Snapshot(status, regs, self.relay.clock())
        return generate_latest(self.registry)
