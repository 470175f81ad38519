"""The relay's domain: register, ingest, fetch, acknowledge, expire.

It knows neither HTTP nor SQL: it takes and returns the plain data of
`cfylogs.models`, raises the errors of `cfylogs.errors`, and leaves every
durable change to a `Storage`. What it adds on top of storage: long-poll
wake-ups, lease expiry and revival, and the counters that metrics show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from cfylogs.accept import split
from cfylogs.broadcast import Broadcast
from cfylogs.config import Settings
from cfylogs.console.history import History
from cfylogs.console.tail import Tail
from cfylogs.errors import RegistrationExpired, RegistrationNotFound, StorageUnavailable
from cfylogs.models import (
    AckResult,
    AppendOutcome,
    Batch,
    DeadLetter,
    DeadLetters,
    Registration,
    StoreStatus,
)
from cfylogs.storage.base import Storage

log = logging.getLogger(__name__)

MAX_WAIT_SEC = 60.0
#: Dead letters replayed per storage call (each call is atomic).
REPLAY_PAGE = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class RelayOptions:
    """The domain's settings; built from the settings table (`relay_options`)."""

    batch_size: int
    max_batch_bytes: int
    leased: bool
    lease_duration_sec: float
    lease_check_every_sec: float
    revive_expired: bool
    #: `ingest.accept`: "any", or "cloudify" (other events go to the dead letters).
    accept: str
    max_dead_letters: int


def relay_options(settings: Settings) -> RelayOptions:
    return RelayOptions(
        batch_size=settings.buffer_size,
        max_batch_bytes=settings.buffer_max_batch_bytes,
        leased=settings.lease_enabled,
        lease_duration_sec=settings.lease_duration_sec,
        lease_check_every_sec=settings.lease_check_every_sec,
        revive_expired=settings.lease_revive_expired,
        accept=settings.ingest_accept,
        max_dead_letters=settings.ingest_max_dead_letters,
    )


@dataclass
class RelayCounters:
    """Monotonic counters since start, read by metrics and /health."""

    events_received: int = 0
    bytes_received: int = 0
    events_stored: int = 0
    events_discarded: int = 0
    events_delivered: int = 0
    events_redelivered: int = 0
    events_acknowledged: int = 0
    batches_delivered: int = 0
    batches_redelivered: int = 0
    batches_acknowledged: int = 0
    registrations_created: int = 0
    registrations_removed: int = 0
    registrations_expired: int = 0
    registrations_revived: int = 0
    #: Expired registrations deleted after `alien_registration.expired_retention_sec`.
    registrations_purged: int = 0
    #: Ingest requests answered 503 (watermark, reject policy, store down).
    ingests_refused: int = 0
    #: Events dropped from backlogs by the caps (one per registration that lost it).
    events_dropped: int = 0
    events_dead_lettered: int = 0
    dead_letters_dropped: int = 0
    dead_letters_replayed: int = 0


@dataclass(frozen=True)
class IngestResult:
    #: Events that passed the filter (stored, or discarded when nobody is registered).
    accepted: int
    stored: int
    dead_lettered: int


class Relay:
    def __init__(
        self,
        storage: Storage,
        options: RelayOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.options = options or relay_options(Settings())
        self.clock = clock
        self.counters = RelayCounters()
        self.started_at = clock()
        self._wakeup = Broadcast()
        self._closing = False
        #: True while ingest is refused (back-pressure), so it is logged once on and off.
        self.back_pressure = False
        self._reaper: asyncio.Task[None] | None = None
        #: The console's live tail and charts (docs/CONSOLE.md).
        self.tail = Tail(clock)
        self.history = History(self)

    # --- life cycle

    async def start(self) -> None:
        self.started_at = self.clock()
        await self.storage.open()
        self.storage.on_new_events(self._wakeup.notify)
        if self.options.leased:
            self._reaper = asyncio.create_task(self._reap_leases(), name="cfylogs-leases")
        self.history.start()

    def begin_shutdown(self) -> None:
        """Answer long-polls now, so that a graceful stop does not wait for them."""
        self._closing = True
        self._wakeup.notify()
        self.tail.close()

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.history.stop()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.storage.close()

    # --- operations

    async def register(self, name: str | None = None, client_subject: str | None = None) -> str:
        registration_id = str(uuid.uuid4())
        await self.storage.register(registration_id, name, client_subject, self.clock())
        self.counters.registrations_created += 1
        log.info("registration %s created%s", registration_id, f" (name {name!r})" if name else "")
        return registration_id

    async def unregister(self, registration_id: str) -> None:
        await self.storage.unregister(registration_id)
        self.counters.registrations_removed += 1
        log.info("registration %s removed", registration_id)

    async def ingest(self, events: Sequence[bytes]) -> IngestResult:
        """Store the events durably: for consumers, or (ingest.accept) as dead letters, all
        in one step: a request refused (503) and retried stores nothing twice."""
        self.counters.events_received += len(events)
        self.counters.bytes_received += sum(map(len, events))
        kept, refused = split(events, self.options.accept)
        letters = DeadLetters(refused, self.options.max_dead_letters) if refused else None
        try:
            outcome = await self.storage.append(kept, self.clock(), letters)
        except StorageUnavailable as exc:
            self.counters.ingests_refused += 1
            self._set_back_pressure(True, exc.message)
            raise
        self._set_back_pressure(False)
        self.tail.offer(kept)
        self._count_append(outcome)
        if refused:
            self._dead_lettered(refused, outcome.dead_letters_dropped)
        if outcome.stored:
            self._wakeup.notify()
        return IngestResult(len(kept), outcome.stored, len(refused))

    def _count_append(self, outcome: AppendOutcome) -> None:
        self.counters.events_stored += outcome.stored
        self.counters.events_discarded += outcome.discarded
        self.counters.events_dropped += outcome.dropped

    # --- dead letters

    def _dead_lettered(self, refused: list[tuple[bytes, str]], dropped: int) -> None:
        self.counters.events_dead_lettered += len(refused)
        log.warning(
            "%d event(s) are not Cloudify logs or events (%s): kept as dead letters, "
            "not delivered; see `cfylogs dead-letters list`",
            len(refused),
            refused[0][1],
        )
        if dropped:
            self.counters.dead_letters_dropped += dropped
            log.error(
                "ingest.max_dead_letters (%d) reached: deleted the %d oldest dead letters",
                self.options.max_dead_letters,
                dropped,
            )

    async def dead_letters(self, after_id: int, limit: int) -> tuple[int, list[DeadLetter]]:
        """(how many are stored, a page of them by id)."""
        total = await self.storage.count_dead_letters()
        return total, await self.storage.list_dead_letters(after_id, limit)

    async def replay_dead_letters(self, ids: Sequence[int] | None) -> AppendOutcome:
        """Put dead letters into the stream: `ids`, or (None) all, a page at a time."""
        if ids is not None:
            outcome = await self.storage.replay_dead_letters(ids, self.clock())
            self.counters.events_dropped += outcome.dropped
        else:
            stored = kept = after = 0
            while letters := await self.storage.list_dead_letters(after, REPLAY_PAGE):
                page = await self.storage.replay_dead_letters([d.id for d in letters], self.clock())
                stored, kept, after = stored + page.stored, kept + page.discarded, letters[-1].id
                self.counters.events_dropped += page.dropped
            outcome = AppendOutcome(stored, kept)
        self.counters.dead_letters_replayed += outcome.stored
        if outcome.stored:
            self._wakeup.notify()
            log.info("%d dead letter(s) replayed into the stream", outcome.stored)
        return outcome

    async def purge_dead_letters(self, ids: Sequence[int] | None) -> int:
        purged = await self.storage.purge_dead_letters(ids)
        if purged:
            log.warning("%d dead letter(s) purged", purged)
        return purged

    async def fetch(
        self, registration_id: str, wait: float = 0.0, max_entries: int | None = None
    ) -> Batch | None:
        """The pending batch, or a new one; with `wait`, hold until events arrive."""
        limit = self.options.batch_size if max_entries is None else max_entries
        limit = max(1, min(limit, self.options.batch_size))
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SEC)
        try:
            return await self._poll(registration_id, limit, deadline)
        except asyncio.CancelledError:
            # The client left mid-poll: its last fetch, which withdraws the wish, never runs.
            self.storage.abandon_wait(registration_id)
            raise

    @property
    def long_polls_waiting(self) -> int:
        """Consumers' fetches held open now (`?wait=`), waiting for events."""
        return self._wakeup.waiting

    async def _poll(self, registration_id: str, limit: int, deadline: float) -> Batch | None:
        while True:
            generation = self._wakeup.generation
            remaining = deadline - time.monotonic()
            # The last fetch of a long poll says it no longer waits (the store may
            # have been preparing a batch for it): a poll always ends with one.
            waiting = remaining > 0 and not self._closing
            batch = await self._named(
                registration_id,
                partial(self._fetch_once, registration_id, limit, waiting),
            )
            if batch is not None:
                self._count_delivery(batch)
                return batch
            if not waiting:
                return None
            await self._wakeup.wait_past(generation, remaining)

    async def _fetch_once(self, registration_id: str, limit: int, waiting: bool) -> Batch | None:
        max_bytes = self.options.max_batch_bytes
        return await self.storage.fetch(registration_id, limit, max_bytes, self.clock(), waiting)

    async def ack(self, registration_id: str, batch_id: int) -> AckResult:
        result = await self._named(
            registration_id, lambda: self.storage.ack(registration_id, batch_id, self.clock())
        )
        if result.acknowledged:
            self.counters.batches_acknowledged += 1
            self.counters.events_acknowledged += result.events
        return result

    async def registrations(self) -> list[Registration]:
        return await self.storage.registrations()

    async def status(self) -> StoreStatus:
        return await self.storage.status()

    # --- leases

    async def _named(self, registration_id: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run an operation naming a registration, reviving it if its lease ran out."""
        try:
            return await call()
        except RegistrationExpired:
            if not self.options.revive_expired:
                raise RegistrationNotFound(registration_id) from None
            if await self.storage.revive(registration_id, self.clock()):
                self.counters.registrations_revived += 1
                log.warning(
                    "registration %s had expired and was revived under the same id: events "
                    "ingested while it was expired were not kept for it",
                    registration_id,
                )
            return await call()

    async def expire_leases(self) -> list[str]:
        """Expire idle registrations now (the reaper calls this periodically)."""
        now = self.clock()
        # Time the relay was down is nobody's idleness: leases run from our start.
        if now - self.started_at < self.options.lease_duration_sec:
            return []
        outcome = await self.storage.expire(now - self.options.lease_duration_sec)
        for registration_id in outcome.expired:
            log.warning(
                "registration %s expired after %ss without a request",
                registration_id,
                int(self.options.lease_duration_sec),
            )
        for registration_id in outcome.purged:
            log.info(
                "expired registration %s deleted (alien_registration.expired_retention_sec): "
                "its id can no longer be revived",
                registration_id,
            )
        self.counters.registrations_expired += len(outcome.expired)
        self.counters.registrations_purged += len(outcome.purged)
        return outcome.expired

    async def _reap_leases(self) -> None:
        while True:
            await asyncio.sleep(self.options.lease_check_every_sec)
            try:
                await self.expire_leases()
            except Exception:  # keep reaping; the store may come back
                log.exception("lease check failed")

    def _set_back_pressure(self, on: bool, reason: str = "") -> None:
        """Log the edges only: under back-pressure Logstash retries every request."""
        if on == self.back_pressure:
            return
        self.back_pressure = on
        if on:
            log.warning("back-pressure on: ingest answers 503 (%s)", reason)
        else:
            log.info("back-pressure off: ingest accepted again")

    def _count_delivery(self, batch: Batch) -> None:
        c = self.counters
        c.batches_delivered += 1
        c.events_delivered += len(batch.entries)
        if batch.deliveries > 1:
            c.batches_redelivered += 1
            c.events_redelivered += len(batch.entries)
