"""Sending many events: in batches, in order, retrying what the server asks to retry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from cfylogs.client.consumer import Backoff
from cfylogs.client.errors import ClientError
from cfylogs.client.http import Client
from cfylogs.client.models import PushResult

log = logging.getLogger("cfylogs.client")


class PushFailed(ClientError):
    """A batch was refused, or kept failing; `accepted` events before it went through."""

    def __init__(self, cause: ClientError, accepted: int) -> None:
        super().__init__(cause.message, cause.status, cause.code, cause.retry_after)
        self.accepted = accepted
        self.cause = cause


def push_batches(
    client: Client,
    batches: Iterable[list[bytes]],
    *,
    gzip: bool = False,
    backoff: Backoff | None = None,
    max_attempts: int = 8,
    on_sent: Callable[[list[bytes]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PushResult:
    """Push each batch in turn, each one once accepted before the next.

    503/429/5xx and connection failures are retried (`max_attempts` per
    batch); a refusal (400, 413, ...) stops at once. Either way `PushFailed`
    says how many events were accepted before. A batch whose answer was lost
    to a connection failure may be stored twice: delivery is at least once.
    """
    backoff = backoff or Backoff()
    accepted = requests = 0
    for batch in batches:
        attempt = 0
        while True:
            attempt += 1
            requests += 1
            try:
                accepted += client.push(batch, gzip=gzip)
                break
            except ClientError as exc:
                if not exc.retryable or attempt >= max_attempts:
                    raise PushFailed(exc, accepted) from exc
                delay = backoff.delay(attempt, exc.retry_after)
                log.warning("%s; retrying in %.1fs", exc, delay)
                sleep(delay)
        if on_sent is not None:
            on_sent(batch)
    return PushResult(accepted, requests)
