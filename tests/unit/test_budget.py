"""The ingest byte budget: shares in arrival order, nobody refused, nothing leaked."""

from __future__ import annotations

import asyncio

import pytest

from cfylogs.http.budget import ByteBudget


async def _holder(
    budget: ByteBudget, size: int, started: list[int], release: asyncio.Event
) -> None:
    async with budget.hold(size):
        started.append(size)
        await release.wait()


async def test_requests_beyond_the_budget_wait_in_arrival_order() -> None:
    budget = ByteBudget(100)
    started: list[int] = []
    release = [asyncio.Event() for _ in range(4)]
    tasks = [
        asyncio.create_task(_holder(budget, size, started, release[i]))
        for i, size in enumerate((60, 50, 30, 10))
    ]
    await asyncio.sleep(0)
    # 60 holds; 50 does not fit, and 30 and 10, which would, queue behind it (no overtaking)
    assert started == [60] and budget.used == 60 and budget.waiting == 3
    release[0].set()
    await tasks[0]
    await asyncio.sleep(0)
    assert started == [60, 50, 30, 10] and budget.used == 90
    for event in release[1:]:
        event.set()
    await asyncio.gather(*tasks)
    assert budget.used == 0 and budget.waiting == 0


async def test_a_request_larger_than_the_budget_goes_alone() -> None:
    budget = ByteBudget(100)
    started: list[int] = []
    release = asyncio.Event()
    big = asyncio.create_task(_holder(budget, 1000, started, release))
    await asyncio.sleep(0)
    assert started == [1000] and budget.used == 100
    small = asyncio.create_task(_holder(budget, 1, started, release))
    await asyncio.sleep(0)
    assert started == [1000]
    release.set()
    await asyncio.gather(big, small)
    assert started == [1000, 1] and budget.used == 0


async def test_a_waiter_cancelled_leaves_no_share_behind() -> None:
    budget = ByteBudget(100)
    started: list[int] = []
    release = asyncio.Event()
    first = asyncio.create_task(_holder(budget, 100, started, release))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_holder(budget, 50, started, release))
    after = asyncio.create_task(_holder(budget, 50, started, release))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await asyncio.gather(first, after)
    assert started == [100, 50] and budget.used == 0 and budget.waiting == 0


async def test_no_budget_holds_nothing() -> None:
    budget = ByteBudget(0)
    async with budget.hold(10**12):
        assert budget.used == 0
