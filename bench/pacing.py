"""An open-loop generator: sends at a fixed rate whatever the answers take, like wrk2.

It records, per request, the latency and how late the send started
compared with its schedule; a small lag is the proof that the generator kept
pace (a closed-loop client would hide slow answers by sending less).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Paced:
    target_rate: float
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def pace(
    rate: float,
    duration: float,
    send: Callable[[int], Awaitable[None]],
    max_in_flight: int = 64,
) -> Paced:
    """Call `send(i)` for i = 0.. at `rate` per second for `duration` seconds."""
    result = Paced(rate)
    total = max(1, int(rate * duration))
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.01

    async def one(seq: int, due: float) -> None:
        began = time.perf_counter()
        result.lags_ms.append((began - due) * 1000)
        try:
            await send(seq)
            result.latencies_ms.append((time.perf_counter() - began) * 1000)
        except Exception:
            result.errors += 1
        finally:
            slots.release()

    for seq in range(total):
        due = start + seq / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(one(seq, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    result.sent = total - result.errors
    result.seconds = time.perf_counter() - start
    return result
