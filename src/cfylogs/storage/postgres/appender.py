"""Group commit on PostgreSQL: the appends that queue up while one commits go in the next.

Appends from every instance take turns on the head row (see `events`), so one
commit per request would cap ingest at one fsync per request (Logstash's
default is one event per request, 50 in parallel). Here a single task takes
everything queued, up to `policy.MAX_GROUP_BYTES`, and stores it in one
transaction.

Each append is answered within `timeout` of its arrival, however long the
groups before it took: a group's transaction ends by the deadline of its
oldest append, and an append whose deadline passed while it queued is
refused without trying.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cfylogs.errors import RelayError, StorageUnavailable
from cfylogs.models import AppendOutcome
from cfylogs.storage.policy import AppendRequest, group_takes

log = logging.getLogger("cfylogs.storage.postgres")

#: Stores a group in one transaction ended by a deadline (event loop time): an outcome
#: or a refusal per request.
GroupCommit = Callable[[list[AppendRequest], float], Awaitable[list[AppendOutcome | RelayError]]]


@dataclass(slots=True)
class _Queued:
    request: AppendRequest
    future: asyncio.Future[AppendOutcome]
    deadline: float

    @property
    def size(self) -> int:
        return self.request.size + self.request.letters_size


class Appender:
    def __init__(self, commit: GroupCommit, timeout: float) -> None:
        self._commit = commit
        self._timeout = timeout
        self._queue: collections.deque[_Queued] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    async def append(self, request: AppendRequest) -> AppendOutcome:
        loop = asyncio.get_running_loop()
        queued = _Queued(request, loop.create_future(), loop.time() + self._timeout)
        self._queue.append(queued)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="cfylogs-pg-append")
        return await queued.future

    async def close(self) -> None:
        """Answer the appends already queued (not dropped)."""
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            group: list[_Queued] = []
            size = 0
            while self._queue and group_takes(size, self._queue[0].size):
                queued = self._queue.popleft()
                if queued.future.done():  # a cancelled request stores nothing
                    continue
                if queued.deadline <= loop.time():
                    queued.future.set_exception(
                        StorageUnavailable(
                            f"PostgreSQL did not answer within {self._timeout:g} s "
                            "(appends queued behind a transaction that did not finish)"
                        )
                    )
                    continue
                group.append(queued)
                size += queued.size
            if not group:
                continue
            try:
                # The oldest is first: its deadline is the group's.
                results = await self._commit([q.request for q in group], group[0].deadline)
            except RelayError as exc:
                results = [exc] * len(group)
            except Exception as exc:  # never lose the appender to an unexpected error
                log.exception("PostgreSQL append failed unexpectedly")
                error = StorageUnavailable(f"the store cannot take this now: {exc}")
                results = [error] * len(group)
            for queued, result in zip(group, results, strict=True):
                if queued.future.done():
                    continue
                if isinstance(result, RelayError):
                    queued.future.set_exception(result)
                else:
                    queued.future.set_result(result)
