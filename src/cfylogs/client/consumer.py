"""The consumer loop: fetch (long-poll), hand the batch over, acknowledge it after.

The policy is written once, as a generator that yields what to do next
(`Register`, `Fetch`, `Handle`, `Ack`, `Sleep`) and receives the outcome
(or has the failure thrown in). `Consumer` runs it with a blocking `Client`,
`AsyncConsumer` with an `AsyncClient`; neither holds any policy itself.

The guarantees: a batch is acknowledged only after the handler returned for
it; when the handler fails, the batch is not acknowledged and comes again;
connection failures, 5xx, 429 and 503 are retried with capped exponential
backoff and jitter, honouring `Retry-After`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from cfylogs.client.errors import ClientError, Conflict, NotFound
from cfylogs.client.http import AsyncClient, Client
from cfylogs.client.models import Batch

log = logging.getLogger("cfylogs.client")


@dataclass
class Backoff:
    """Capped exponential backoff with jitter; a server's `Retry-After` takes precedence."""

    initial: float = 0.2
    maximum: float = 30.0
    multiplier: float = 2.0
    #: Fraction of the delay drawn at random (0: none; 1: anywhere from 0 to the delay).
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry)."""
        if retry_after is not None:
            # The server knows when it will take requests again; a little jitter on
            # top keeps many consumers from coming back in the same instant.
            return retry_after + self.rng.uniform(0, self.initial * self.jitter)
        ceiling = min(self.maximum, self.initial * self.multiplier ** max(attempt - 1, 0))
        return ceiling * (1 - self.jitter * self.rng.random())


@dataclass(frozen=True)
class Register:
    name: str | None


@dataclass(frozen=True)
class Registered:
    """Tells the runner a (new) registration id, for `on_registered`."""

    registration_id: str


@dataclass(frozen=True)
class Fetch:
    registration_id: str
    wait: float
    max_entries: int | None


@dataclass(frozen=True)
class Handle:
    batch: Batch


@dataclass(frozen=True)
class Ack:
    registration_id: str
    batch_id: int


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Register | Registered | Fetch | Handle | Ack | Sleep


@dataclass
class ConsumerStats:
    batches: int = 0
    events: int = 0
    retries: int = 0
    handler_failures: int = 0
    reregistrations: int = 0


@dataclass
class ConsumerOptions:
    """What a consumer loop does; shared by `Consumer` and `AsyncConsumer`."""

    #: Resume this registration; None registers a new one.
    registration_id: str | None = None
    #: Label of a registration made by the loop.
    name: str | None = None
    #: Long-poll seconds (0 to 60).
    wait: float = 30.0
    max_entries: int | None = None
    #: Stop once nothing is pending (drain), instead of waiting for more.
    once: bool = False
    #: On 404 for the registration, register anew (events in between are not delivered).
    reregister: bool = False
    #: Retry a batch whose handler raised; False lets the exception end the loop.
    retry_handler_errors: bool = True
    backoff: Backoff = field(default_factory=Backoff)
    #: Give up after this many consecutive failed attempts (None: never).
    max_attempts: int | None = None


class GiveUp(ClientError):
    """`max_attempts` consecutive attempts failed; the last failure is the cause."""


def consumer_policy(
    options: ConsumerOptions, stopped: Callable[[], bool], stats: ConsumerStats
) -> Generator[Step, Any, None]:
    """The loop itself: yields steps, receives their results, has their failures thrown in."""
    registration_id = options.registration_id
    failures = 0

    def retry(exc: BaseException) -> Sleep:
        nonlocal failures
        failures += 1
        stats.retries += 1
        if options.max_attempts is not None and failures >= options.max_attempts:
            raise GiveUp(f"giving up after {failures} attempts: {exc}") from exc
        after = exc.retry_after if isinstance(exc, ClientError) else None
        delay = options.backoff.delay(failures, after)
        log.warning("%s; retrying in %.1fs", exc, delay)
        return Sleep(delay)

    while not stopped():
        try:
            if registration_id is None:
                registration_id = yield Register(options.name)
                yield Registered(registration_id)
            batch = yield Fetch(registration_id, options.wait, options.max_entries)
        except NotFound:
            if not options.reregister:
                raise
            _warn_lost_registration(registration_id)
            stats.reregistrations += 1
            registration_id = None
            continue
        except ClientError as exc:
            if not exc.retryable:
                raise
            yield retry(exc)
            continue
        failures = 0
        if batch is None:
            if options.once:
                return
            continue
        try:
            yield Handle(batch)
        except Exception as exc:
            stats.handler_failures += 1
            if not options.retry_handler_errors:
                raise
            log.error("handler failed on batch %d, it will come again: %r", batch.id, exc)
            yield retry(exc)
            continue
        stats.batches += 1
        stats.events += len(batch)
        # Retry the ack itself (acks are idempotent): fetching again would hand the
        # same batch to the handler a second time.
        while not stopped():
            try:
                yield Ack(batch.registration_id, batch.id)
            except Conflict as exc:
                log.warning("batch %d: %s", batch.id, exc)
            except NotFound:
                break  # the next fetch sees the 404 and decides
            except ClientError as exc:
                if not exc.retryable:
                    raise
                yield retry(exc)
                continue
            failures = 0
            break


def _warn_lost_registration(registration_id: str | None) -> None:
    log.warning(
        "!!! registration %s is unknown to the server (removed, or expired and not revived): "
        "registering anew. Events ingested in between were NOT delivered to this consumer.",
        registration_id,
    )


Handler = Callable[[Batch], Any]


class Consumer:
    """Runs the consumer loop with a blocking `Client` until `stop()` (or drained, `once`).

    >>> consumer = Consumer(client, handle_batch, ConsumerOptions(registration_id=saved))
    >>> consumer.run()  # in a thread; consumer.stop() from elsewhere

    `stop()` takes effect between calls: at the latest when a long-poll
    returns (`options.wait` seconds). A batch being handled is finished and
    acknowledged first.
    """

    def __init__(
        self,
        client: Client,
        handler: Handler,
        options: ConsumerOptions | None = None,
        on_registered: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.handler = handler
        self.options = options or ConsumerOptions()
        self.on_registered = on_registered
        self.stats = ConsumerStats()
        self.registration_id = self.options.registration_id
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> ConsumerStats:
        policy = consumer_policy(self.options, self._stop.is_set, self.stats)
        outcome: Any = None
        failure: BaseException | None = None
        while True:
            try:
                step = policy.throw(failure) if failure else policy.send(outcome)
            except StopIteration:
                return self.stats
            outcome, failure = None, None
            try:
                outcome = self._do(step)
            except Exception as exc:
                failure = exc

    def _do(self, step: Step) -> Any:
        match step:
            case Register(name):
                self.registration_id = self.client.register(name)
                return self.registration_id
            case Registered(registration_id):
                if self.on_registered is not None:
                    self.on_registered(registration_id)
            case Fetch(registration_id, wait, max_entries):
                return self.client.fetch(registration_id, wait, max_entries)
            case Handle(batch):
                self.handler(batch)
            case Ack(registration_id, batch_id):
                return self.client.ack(registration_id, batch_id)
            case Sleep(seconds):
                self._stop.wait(seconds)
        return None


class AsyncConsumer:
    """Runs the consumer loop with an `AsyncClient`; the handler may be sync or async.

    `stop()` interrupts a long-poll or a backoff at once (the batch not yet
    acknowledged comes again next time), but never a running handler.
    """

    def __init__(
        self,
        client: AsyncClient,
        handler: Callable[[Batch], Awaitable[Any] | Any],
        options: ConsumerOptions | None = None,
        on_registered: Callable[[str], Awaitable[Any] | Any] | None = None,
    ) -> None:
        self.client = client
        self.handler = handler
        self.options = options or ConsumerOptions()
        self.on_registered = on_registered
        self.stats = ConsumerStats()
        self.registration_id = self.options.registration_id
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> ConsumerStats:
        policy = consumer_policy(self.options, self._stop.is_set, self.stats)
        outcome: Any = None
        failure: BaseException | None = None
        while True:
            try:
                step = policy.throw(failure) if failure else policy.send(outcome)
            except StopIteration:
                return self.stats
            outcome, failure = None, None
            try:
                outcome = await self._interruptible(step)
            except Exception as exc:
                failure = exc

    async def _interruptible(self, step: Step) -> Any:
        """Run a step; a fetch or a sleep ends early on `stop()`."""
        if not isinstance(step, Fetch | Sleep):
            return await self._do(step)
        work = asyncio.ensure_future(self._do(step))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if work.done():
            return work.result()
        work.cancel()
        return None  # a fetch cut short hands nothing over: no batch was seen

    async def _do(self, step: Step) -> Any:
        match step:
            case Register(name):
                self.registration_id = await self.client.register(name)
                return self.registration_id
            case Registered(registration_id):
                if self.on_registered is not None:
                    await _maybe_await(self.on_registered(registration_id))
            case Fetch(registration_id, wait, max_entries):
                return await self.client.fetch(registration_id, wait, max_entries)
            case Handle(batch):
                await _maybe_await(self.handler(batch))
            case Ack(registration_id, batch_id):
                return await self.client.ack(registration_id, batch_id)
            case Sleep(seconds):
                await asyncio.sleep(seconds)
        return None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
