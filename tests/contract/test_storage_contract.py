"""The storage contract (cfylogs.storage.base.Storage), run against every backend."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cfylogs.errors import BatchNotDelivered, RegistrationExpired, RegistrationNotFound
from cfylogs.storage.base import Storage
from tests.contract.conftest import Backend, limits

NOW = 1_800_000_000.0
BIG = 1 << 40


def ev(n: int, pad: int = 0) -> bytes:
    return b'{"n":%d,"pad":"%s"}' % (n, b"x" * pad)


async def reg(store: Storage, name: str | None = None) -> str:
    registration_id = str(uuid.uuid4())
    created = await store.register(registration_id, name, None, NOW)
    assert created.id == registration_id
    return registration_id


async def test_fetch_returns_events_in_order_and_the_same_batch_until_acked(store: Storage) -> None:
    r = await reg(store)
    assert await store.fetch(r, 10, BIG, NOW) is None
    await store.append([ev(1), ev(2)], NOW)
    await store.append([ev(3)], NOW)
    first = await store.fetch(r, 10, BIG, NOW)
    assert first is not None
    assert (first.id, list(first.entries), first.deliveries) == (0, [ev(1), ev(2), ev(3)], 1)
    await store.append([ev(4)], NOW)
    again = await store.fetch(r, 10, BIG, NOW)
    assert again is not None
    assert (again.id, list(again.entries), again.deliveries) == (0, list(first.entries), 2)
    assert (await store.ack(r, 0, NOW)).acknowledged
    second = await store.fetch(r, 10, BIG, NOW)
    assert second is not None and (second.id, list(second.entries)) == (1, [ev(4)])


async def test_batches_respect_max_entries_and_max_bytes(store: Storage) -> None:
    r = await reg(store)
    await store.append([ev(i, pad=100) for i in range(10)], NOW)
    batch = await store.fetch(r, 4, BIG, NOW)
    assert batch is not None and [e for e in batch.entries] == [ev(i, pad=100) for i in range(4)]
    await store.ack(r, batch.id, NOW)
    size = len(ev(0, pad=100))
    batch = await store.fetch(r, 100, size * 2 + 1, NOW)
    assert batch is not None and len(batch.entries) == 2
    await store.ack(r, batch.id, NOW)
    batch = await store.fetch(r, 100, 1, NOW)  # never empty: one event even if larger
    assert batch is not None and list(batch.entries) == [ev(6, pad=100)]


async def test_acks_are_idempotent_and_unknown_batches_conflict(store: Storage) -> None:
    r = await reg(store)
    with pytest.raises(BatchNotDelivered):
        await store.ack(r, 0, NOW)
    await store.append([ev(1)], NOW)
    batch = await store.fetch(r, 10, BIG, NOW)
    assert batch is not None
    with pytest.raises(BatchNotDelivered):
        await store.ack(r, 1, NOW)
    with pytest.raises(BatchNotDelivered):
        await store.ack(r, -1, NOW)
    again = await store.fetch(r, 10, BIG, NOW)  # nothing changed
    assert again is not None and again.id == 0
    first = await store.ack(r, 0, NOW)
    assert (first.acknowledged, first.events) == (True, 1)
    assert not (await store.ack(r, 0, NOW)).acknowledged


async def test_a_registration_sees_only_later_events(store: Storage) -> None:
    early = await reg(store)
    await store.append([ev(1)], NOW)
    late = await reg(store)
    await store.append([ev(2)], NOW)
    a = await store.fetch(early, 10, BIG, NOW)
    b = await store.fetch(late, 10, BIG, NOW)
    assert a is not None and list(a.entries) == [ev(1), ev(2)]
    assert b is not None and list(b.entries) == [ev(2)]


async def test_events_without_registration_are_discarded(store: Storage) -> None:
    outcome = await store.append([ev(1), ev(2)], NOW)
    assert (outcome.stored, outcome.discarded) == (0, 2)
    r = await reg(store)
    assert await store.fetch(r, 10, BIG, NOW) is None
    assert (await store.status()).events_stored == 0


async def test_fan_out_stores_once_and_collects_after_every_ack(store: Storage) -> None:
    regs = [await reg(store) for _ in range(3)]
    await store.append([ev(i) for i in range(5)], NOW)
    status = await store.status()
    assert status.events_stored == 5
    assert status.bytes_stored == sum(len(ev(i)) for i in range(5))
    for r in regs:
        batch = await store.fetch(r, 10, BIG, NOW)
        assert batch is not None and len(batch.entries) == 5
        assert (await store.status()).events_stored == 5
        await store.ack(r, batch.id, NOW)
    assert (await store.status()).events_stored == 0


async def test_unregister_releases_the_backlog(store: Storage) -> None:
    keep, drop = await reg(store), await reg(store)
    await store.append([ev(1)], NOW)
    batch = await store.fetch(keep, 10, BIG, NOW)
    assert batch is not None
    await store.ack(keep, batch.id, NOW)
    assert (await store.status()).events_stored == 1  # `drop` still needs it
    await store.unregister(drop)
    assert (await store.status()).events_stored == 0
    with pytest.raises(RegistrationNotFound):
        await store.unregister(drop)
    with pytest.raises(RegistrationNotFound):
        await store.fetch(drop, 10, BIG, NOW)
    assert [r.id for r in await store.registrations()] == [keep]


async def test_unknown_registrations_are_not_found(store: Storage) -> None:
    for call in (
        store.fetch("nope", 10, BIG, NOW),
        store.ack("nope", 0, NOW),
        store.touch("nope", NOW),
        store.unregister("nope"),
    ):
        with pytest.raises(RegistrationNotFound):
            await call
    assert await store.revive("nope", NOW) is False


async def test_expired_registrations_can_be_revived_with_an_empty_backlog(store: Storage) -> None:
    idle, busy = await reg(store), await reg(store)
    await store.append([ev(1)], NOW)
    pending = await store.fetch(idle, 10, BIG, NOW)
    assert pending is not None and pending.id == 0
    await store.touch(busy, NOW + 100)
    assert (await store.expire(NOW + 50)).expired == [idle]
    assert (await store.expire(NOW + 50)).expired == []  # expires once
    with pytest.raises(RegistrationExpired):
        await store.fetch(idle, 10, BIG, NOW + 200)
    with pytest.raises(RegistrationExpired):
        await store.ack(idle, 0, NOW + 200)
    await store.append([ev(2)], NOW + 200)  # missed by the expired registration
    assert await store.revive(idle, NOW + 300) is True
    assert await store.revive(idle, NOW + 300) is False
    assert await store.fetch(idle, 10, BIG, NOW + 300) is None
    await store.append([ev(3)], NOW + 300)
    batch = await store.fetch(idle, 10, BIG, NOW + 300)
    assert batch is not None and (batch.id, list(batch.entries)) == (1, [ev(3)])
    assert not (await store.ack(idle, 0, NOW + 300)).acknowledged  # old ids stay acknowledged


async def test_expired_registrations_are_deleted_after_their_retention(
    backend: Backend,
) -> None:
    """Kept to be revived for `expired_retention_sec` after the lease ran out, then gone."""
    store = await backend.open(limits(expired_retention_sec=1000))
    old, recent, active = await reg(store), await reg(store), await reg(store)
    await store.touch(recent, NOW + 500)
    await store.touch(active, NOW + 5000)
    outcome = await store.expire(NOW + 600)  # the leases of `old` and `recent` ran out
    assert sorted(outcome.expired) == sorted([old, recent]) and outcome.purged == []
    outcome = await store.expire(NOW + 1200)  # 1,200 s after `old`, 700 after `recent`
    assert (outcome.expired, outcome.purged) == ([], [old])
    assert not await store.revive(old, NOW + 1300)
    with pytest.raises(RegistrationNotFound):
        await store.unregister(old)
    assert await store.revive(recent, NOW + 1300)  # still within its retention
    assert {r.id for r in await store.registrations()} == {recent, active}
    store = await backend.reopen(store)
    assert (await store.expire(NOW + 1300)).purged == []


async def test_expired_registrations_are_kept_for_ever_with_no_retention(
    backend: Backend,
) -> None:
    store = await backend.open(limits(expired_retention_sec=0))
    idle = await reg(store)
    assert (await store.expire(NOW + 1)).expired == [idle]
    assert (await store.expire(NOW + 10**9)).purged == []
    assert await store.revive(idle, NOW + 10**9)


async def test_a_redelivered_batch_shares_the_entries_handed_out_before(store: Storage) -> None:
    """A thousand long polls on one registration get the same pending batch: while one
    delivery holds its entries, the others get that object, not copies of their own."""
    r = await reg(store)
    await store.append([ev(i, pad=100) for i in range(50)], NOW)
    first = await store.fetch(r, 100, BIG, NOW)
    again = await asyncio.gather(*(store.fetch(r, 100, BIG, NOW) for _ in range(5)))
    assert first is not None and all(batch is not None for batch in again)
    assert all(batch.entries is first.entries for batch in again if batch is not None)
    assert sorted(batch.deliveries for batch in again if batch is not None) == [2, 3, 4, 5, 6]
    await store.ack(r, first.id, NOW)
    await store.append([ev(99)], NOW)
    following = await store.fetch(r, 100, BIG, NOW)
    assert following is not None and list(following.entries) == [ev(99)]


async def test_registration_list_shows_backlog_and_redeliveries(store: Storage) -> None:
    r = await store.register(str(uuid.uuid4()), "orchestrator-a", None, NOW)
    await store.append([ev(1), ev(2)], NOW + 1)
    await store.fetch(r.id, 1, BIG, NOW + 2)
    await store.fetch(r.id, 1, BIG, NOW + 3)
    [listed] = await store.registrations()
    assert listed.name == "orchestrator-a"
    assert (listed.backlog_events, listed.backlog_bytes) == (2, len(ev(1)) + len(ev(2)))
    assert listed.pending_batch_id == 0 and listed.pending_deliveries == 2
    assert listed.redeliveries == 1
    assert listed.oldest_unacked_at is not None and listed.oldest_unacked_at >= NOW
    assert listed.last_seen >= NOW + 3


async def test_state_survives_a_reopen_byte_for_byte(backend: Backend, store: Storage) -> None:
    r = await reg(store)
    await store.append([ev(i) for i in range(5)], NOW)
    batch = await store.fetch(r, 3, BIG, NOW)
    assert batch is not None
    store = await backend.reopen(store)
    again = await store.fetch(r, 3, BIG, NOW)
    assert again is not None and (again.id, list(again.entries)) == (batch.id, list(batch.entries))
    await store.ack(r, again.id, NOW)
    rest = await store.fetch(r, 10, BIG, NOW)
    assert rest is not None and (rest.id, list(rest.entries)) == (1, [ev(3), ev(4)])


async def test_concurrent_appends_keep_each_request_whole_and_in_order(store: Storage) -> None:
    r = await reg(store)
    producers, per_producer = 20, 25

    async def produce(p: int) -> None:
        for i in range(per_producer):
            await store.append(
                [b'{"p":%d,"i":%d,"k":0}' % (p, i), b'{"p":%d,"i":%d,"k":1}' % (p, i)], NOW
            )

    await asyncio.gather(*(produce(p) for p in range(producers)))
    seen: list[bytes] = []
    while (batch := await store.fetch(r, 1000, BIG, NOW)) is not None:
        seen.extend(batch.entries)
        await store.ack(r, batch.id, NOW)
    assert len(seen) == producers * per_producer * 2
    for p in range(producers):
        mine = [e for e in seen if e.startswith(b'{"p":%d,' % p)]
        expected = [
            b'{"p":%d,"i":%d,"k":%d}' % (p, i, k) for i in range(per_producer) for k in (0, 1)
        ]
        assert mine == expected


async def test_events_are_kept_exactly_as_posted(store: Storage) -> None:
    r = await reg(store)
    odd = [
        b'{"z":1,"a":[1.50,"\\u00e9"],"big":123456789012345678901234567890}',
        b'{ "spaced" : true }',
    ]
    await store.append(odd, NOW)
    batch = await store.fetch(r, 10, BIG, NOW)
    assert batch is not None and list(batch.entries) == odd


async def test_a_waiting_fetch_gets_the_next_events_as_one_first_delivery(store: Storage) -> None:
    """`waiting=True` (a long poll): whether the store cuts the batch when the events
    arrive (SQLite) or on the fetch that follows (PostgreSQL), the consumer sees the
    same thing: the batch once, as a first delivery, then the usual ack and re-delivery."""
    r = await reg(store)
    assert await store.fetch(r, 10, BIG, NOW, waiting=True) is None
    await store.append([ev(1), ev(2)], NOW)
    await store.append([ev(3)], NOW)
    first = await store.fetch(r, 10, BIG, NOW, waiting=True)
    assert first is not None and first.deliveries == 1 and first.id == 0
    assert list(first.entries)[:2] == [ev(1), ev(2)]
    again = await store.fetch(r, 10, BIG, NOW)
    assert again is not None and (again.id, list(again.entries)) == (0, list(first.entries))
    assert again.deliveries == 2
    assert (await store.ack(r, 0, NOW)).acknowledged
    rest = await store.fetch(r, 10, BIG, NOW, waiting=True)
    if rest is not None:  # SQLite cut [1, 2] as they came, PostgreSQL [1, 2, 3] when asked
        assert (rest.id, rest.deliveries) == (1, 1)
    assert list(first.entries) + list(rest.entries if rest else []) == [ev(1), ev(2), ev(3)]


async def test_a_long_poll_that_ended_leaves_no_batch_cut_behind(store: Storage) -> None:
    """After a waiting fetch, a non-waiting one (the poll's end) withdraws it: events that
    arrive later are not cut for nobody, so an ack of the next id is still a 409."""
    r = await reg(store)
    assert await store.fetch(r, 10, BIG, NOW, waiting=True) is None
    assert await store.fetch(r, 10, BIG, NOW) is None  # the poll timed out
    await store.append([ev(1)], NOW)
    with pytest.raises(BatchNotDelivered):
        await store.ack(r, 0, NOW)
    batch = await store.fetch(r, 10, BIG, NOW)
    assert batch is not None and (batch.id, batch.deliveries) == (0, 1)


async def test_a_batch_cut_for_a_waiting_fetch_follows_acks_and_unregistering(
    store: Storage,
) -> None:
    r = await reg(store)
    assert await store.fetch(r, 10, BIG, NOW, waiting=True) is None
    await store.append([ev(1)], NOW)
    await store.unregister(r)
    with pytest.raises(RegistrationNotFound):
        await store.fetch(r, 10, BIG, NOW, waiting=True)
    r2 = await reg(store, "again")
    assert await store.fetch(r2, 10, BIG, NOW, waiting=True) is None
    await store.append([ev(2)], NOW)
    batch = await store.fetch(r2, 10, BIG, NOW, waiting=True)
    assert batch is not None and list(batch.entries) == [ev(2)]


async def test_the_batch_after_an_ack_is_the_next_range_whatever_the_store_prepares(
    store: Storage,
) -> None:
    """SQLite cuts the next batch in the ack's transaction when events wait (the
    consumer's next GET then finds it ready). Whatever a store does, the consumer sees
    consecutive ids and ranges, a smaller ?max is honoured, and an ack of the next id
    before it was fetched is refused."""
    r = await reg(store)
    await store.append([ev(i) for i in range(10)], NOW)
    first = await store.fetch(r, 4, BIG, NOW)
    assert first is not None and list(first.entries) == [ev(i) for i in range(4)]
    assert (await store.ack(r, first.id, NOW)).events == 4
    with pytest.raises(BatchNotDelivered):
        await store.ack(r, first.id + 1, NOW)
    smaller = await store.fetch(r, 2, BIG, NOW)
    assert smaller is not None and (smaller.id, smaller.deliveries) == (1, 1)
    assert list(smaller.entries) == [ev(4), ev(5)]
    assert (await store.ack(r, smaller.id, NOW)).events == 2
    rest: list[bytes] = []
    next_id = 2
    while (batch := await store.fetch(r, 10, BIG, NOW)) is not None:
        assert (batch.id, batch.deliveries) == (next_id, 1)  # "at most 10": maybe fewer
        rest += batch.entries
        assert (await store.ack(r, batch.id, NOW)).acknowledged
        next_id += 1
    assert rest == [ev(i) for i in range(6, 10)]
