"""Dead letters (events the ingest filter kept from consumers), on every backend."""

from __future__ import annotations

import asyncio

import pytest

from cfylogs.errors import StorageUnavailable
from cfylogs.models import DeadLetters
from cfylogs.storage.base import Storage
from tests.contract.conftest import Backend, limits
from tests.contract.test_limits_contract import drain
from tests.contract.test_storage_contract import NOW, ev, reg


async def keep(store: Storage, letters: list[tuple[bytes, str]], max_kept: int = 0) -> int:
    """Store dead letters as a request of junk only does; -> the oldest deleted."""
    outcome = await store.append([], NOW, DeadLetters(letters, max_kept))
    assert (outcome.stored, outcome.discarded) == (0, 0)
    return outcome.dead_letters_dropped


async def test_dead_letters_are_kept_with_reason_and_time_and_listed_by_page(
    store: Storage,
) -> None:
    assert await keep(store, [(ev(i), f"why {i}") for i in range(5)]) == 0
    assert await store.count_dead_letters() == 5
    first = await store.list_dead_letters(0, 2)
    assert [(d.event, d.reason, d.received_at) for d in first] == [
        (ev(0), "why 0", NOW),
        (ev(1), "why 1", NOW),
    ]
    rest = await store.list_dead_letters(first[-1].id, 100)
    assert [d.event for d in rest] == [ev(2), ev(3), ev(4)]
    assert [d.id for d in first + rest] == sorted({d.id for d in first + rest})  # ids grow
    assert await store.list_dead_letters(rest[-1].id, 100) == []


async def test_dead_letters_are_kept_even_when_nobody_is_registered(store: Storage) -> None:
    await keep(store, [(ev(1), "junk")])
    assert await store.count_dead_letters() == 1


async def test_dead_letters_survive_a_restart(backend: Backend) -> None:
    store = await backend.open()
    await keep(store, [(ev(1), "junk")])
    store = await backend.reopen(store)
    [letter] = await store.list_dead_letters(0, 10)
    assert (letter.event, letter.reason) == (ev(1), "junk")


async def test_max_kept_deletes_the_oldest_and_says_how_many(store: Storage) -> None:
    await keep(store, [(ev(i), "junk") for i in range(3)], 5)
    assert await keep(store, [(ev(i), "junk") for i in range(3, 7)], 5) == 2
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(i) for i in range(2, 7)]


async def test_replay_moves_dead_letters_into_the_stream_in_id_order(store: Storage) -> None:
    r = await reg(store)
    await store.append([ev(0)], NOW)
    await keep(store, [(ev(i), "junk") for i in (1, 2, 3)])
    ids = [d.id for d in await store.list_dead_letters(0, 10)]
    outcome = await store.replay_dead_letters([ids[2], ids[0], 999_999], NOW)
    assert (outcome.stored, outcome.discarded) == (2, 0)
    assert await drain(store, r) == [ev(0), ev(1), ev(3)]
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(2)]


async def test_replay_with_nobody_registered_keeps_the_dead_letters(store: Storage) -> None:
    await keep(store, [(ev(1), "junk")])
    [letter] = await store.list_dead_letters(0, 10)
    outcome = await store.replay_dead_letters([letter.id], NOW)
    assert (outcome.stored, outcome.discarded) == (0, 1)
    assert await store.count_dead_letters() == 1


async def test_a_refused_replay_changes_nothing(backend: Backend) -> None:
    store = await backend.open(limits(max_backlog_events=1, backlog_policy="reject"))
    r = await reg(store)
    await store.append([ev(0)], NOW)
    await keep(store, [(ev(1), "junk")])
    [letter] = await store.list_dead_letters(0, 10)
    with pytest.raises(StorageUnavailable):
        await store.replay_dead_letters([letter.id], NOW)
    assert await store.count_dead_letters() == 1
    assert await drain(store, r) == [ev(0)]


async def test_the_watermark_refuses_dead_letters_too(backend: Backend) -> None:
    if not backend.local_disk:
        pytest.skip("the free-space watermark applies to a local disk")
    store = await backend.open(limits(min_free_bytes=1 << 62))
    with pytest.raises(StorageUnavailable):
        await keep(store, [(ev(1), "junk")])
    assert await store.count_dead_letters() == 0


async def test_purge_deletes_the_named_dead_letters_or_all(store: Storage) -> None:
    await keep(store, [(ev(i), "junk") for i in range(4)])
    ids = [d.id for d in await store.list_dead_letters(0, 10)]
    assert await store.purge_dead_letters([ids[1], 999_999]) == 1
    assert await store.purge_dead_letters([]) == 0
    assert await store.count_dead_letters() == 3
    assert await store.purge_dead_letters(None) == 3
    assert await store.count_dead_letters() == 0


# --- a request's dead letters and events are one step: all or none


async def test_a_request_stores_its_events_and_dead_letters_together(store: Storage) -> None:
    r = await reg(store)
    outcome = await store.append([ev(0), ev(1)], NOW, DeadLetters([(ev(9), "junk")], 0))
    assert (outcome.stored, outcome.discarded) == (2, 0)
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(9)]
    assert await drain(store, r) == [ev(0), ev(1)]


async def test_with_nobody_registered_the_events_go_and_the_dead_letters_stay(
    store: Storage,
) -> None:
    outcome = await store.append([ev(0)], NOW, DeadLetters([(ev(9), "junk")], 0))
    assert (outcome.stored, outcome.discarded) == (0, 1)
    assert await store.count_dead_letters() == 1


async def test_a_refused_append_stores_no_dead_letter(backend: Backend) -> None:
    """A 503 is retried by the producer: had its dead letters been kept, the retry
    would store them twice."""
    store = await backend.open(limits(max_backlog_events=1, backlog_policy="reject"))
    r = await reg(store)
    await store.append([ev(0)], NOW)
    with pytest.raises(StorageUnavailable, match="backlog"):
        await store.append([ev(1)], NOW, DeadLetters([(ev(9), "junk")], 0))
    assert await store.count_dead_letters() == 0
    assert await drain(store, r) == [ev(0)]
    outcome = await store.append([ev(1)], NOW, DeadLetters([(ev(9), "junk")], 0))  # the retry
    assert outcome.stored == 1
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(9)]


async def test_appends_refused_and_taken_together_keep_only_the_taken_dead_letters(
    backend: Backend,
) -> None:
    """Appends arriving together share a commit: each still stands alone."""
    store = await backend.open(limits(max_backlog_events=2, backlog_policy="reject"))
    r = await reg(store)
    outcomes = await asyncio.gather(
        *(
            store.append([ev(i), ev(i + 10)], NOW, DeadLetters([(ev(100 + i), "junk")], 0))
            for i in range(3)
        ),
        return_exceptions=True,
    )
    taken = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, Exception)]
    assert len(taken) == 1 and all(
        isinstance(outcomes[i], StorageUnavailable) for i in range(3) if i not in taken
    )
    [i] = taken
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(100 + i)]
    assert await drain(store, r) == [ev(i), ev(i + 10)]


async def test_the_watermark_refuses_events_and_their_dead_letters_together(
    backend: Backend,
) -> None:
    if not backend.local_disk:
        pytest.skip("the free-space watermark applies to a local disk")
    store = await backend.open()
    await reg(store)
    store = await backend.reopen_with(store, limits(min_free_bytes=1 << 62))
    with pytest.raises(StorageUnavailable, match="min_free_bytes"):
        await store.append([ev(0)], NOW, DeadLetters([(ev(9), "junk")], 0))
    assert await store.count_dead_letters() == 0


async def test_the_oldest_dead_letters_deleted_by_an_append_are_counted(store: Storage) -> None:
    await reg(store)
    await keep(store, [(ev(i), "junk") for i in range(3)], 3)
    outcome = await store.append([ev(0)], NOW, DeadLetters([(ev(9), "junk")], 3))
    assert (outcome.stored, outcome.dead_letters_dropped) == (1, 1)
    assert [d.event for d in await store.list_dead_letters(0, 10)] == [ev(1), ev(2), ev(9)]
