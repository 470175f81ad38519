"""Random sequences of storage operations, checked against a simple in-memory model.

A hypothesis state machine drives every backend of `BACKENDS` with register,
append, fetch, ack, unregister, expire, revive and restart (close and open
again: everything committed must be there), and compares each answer with
what the spec says should happen. Examples are bounded to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cfylogs.errors import BatchNotDelivered, RegistrationExpired, RegistrationNotFound
from cfylogs.storage.base import Storage
from tests.contract.conftest import BACKENDS, Backend
from tests.contract.test_storage_contract import BIG, NOW

T = TypeVar("T")
UNKNOWN = "ffffffff-ffff-4fff-bfff-ffffffffffff"


@dataclass
class ModelReg:
    active: bool = True
    backlog: list[bytes] = field(default_factory=list)  # unacknowledged, pending first
    pending: tuple[int, list[bytes]] | None = None
    next_batch_id: int = 0


class StorageMachine(RuleBasedStateMachine):
    backend_name = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="cfylogs-model-"))
        self.backend: Backend = BACKENDS[self.backend_name](self.dir)
        self.store: Storage = self.run(self.backend.open())
        self.model: dict[str, ModelReg] = {}
        self.serial = 0
        self.steps = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.backend.close_all())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pick(self, data: st.DataObject, busy_first: bool = False) -> str:
        """A registration id (or an unknown one); with `busy_first`, one with unacknowledged
        events when there is any, so that fetch and ack meet often."""
        busy = sorted(rid for rid, reg in self.model.items() if reg.backlog)
        if busy_first and busy and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(busy))
        return data.draw(st.sampled_from([*sorted(self.model), UNKNOWN]))

    def expect_named(self, registration_id: str) -> ModelReg | type[Exception]:
        """The model's registration, or the error naming it must raise."""
        reg = self.model.get(registration_id)
        if reg is None:
            return RegistrationNotFound
        return reg if reg.active else RegistrationExpired

    # --- rules

    @precondition(lambda self: len(self.model) < 4)
    @rule()
    def register(self) -> None:
        # Ids from a counter, not uuid4: hypothesis replays need the same order each run.
        self.serial += 1
        registration_id = str(uuid.UUID(int=self.serial))
        self.run(self.store.register(registration_id, None, None, NOW))
        self.model[registration_id] = ModelReg()

    @rule(count=st.integers(1, 4))
    def append(self, count: int) -> None:
        events = [b'{"n":%d}' % (self.serial + i) for i in range(count)]
        self.serial += count
        outcome = self.run(self.store.append(events, NOW))
        active = [reg for reg in self.model.values() if reg.active]
        assert (outcome.stored, outcome.discarded) == ((count, 0) if active else (0, count))
        for reg in active:
            reg.backlog.extend(events)

    @rule(data=st.data(), max_entries=st.integers(1, 5))
    def fetch(self, data: st.DataObject, max_entries: int) -> None:
        registration_id = self.pick(data, busy_first=True)
        expected = self.expect_named(registration_id)
        if not isinstance(expected, ModelReg):
            with pytest.raises(expected):
                self.run(self.store.fetch(registration_id, max_entries, BIG, NOW))
            return
        batch = self.run(self.store.fetch(registration_id, max_entries, BIG, NOW))
        if expected.pending is None and expected.backlog:
            entries = expected.backlog[:max_entries]
            expected.pending = (expected.next_batch_id, entries)
            expected.next_batch_id += 1
            assert batch is not None and batch.deliveries == 1
        if expected.pending is None:
            assert batch is None
            return
        assert batch is not None
        assert (batch.id, list(batch.entries)) == expected.pending  # same batch until acked

    @rule(data=st.data(), offset=st.sampled_from([0, -1, 1, -2]))  # mostly the pending one
    def ack(self, data: st.DataObject, offset: int) -> None:
        registration_id = self.pick(data, busy_first=True)
        expected = self.expect_named(registration_id)
        if not isinstance(expected, ModelReg):
            with pytest.raises(expected):
                self.run(self.store.ack(registration_id, 0, NOW))
            return
        batch_id = expected.next_batch_id - 1 + offset
        if batch_id < 0 or batch_id >= expected.next_batch_id:
            with pytest.raises(BatchNotDelivered):  # never handed out: nothing changes
                self.run(self.store.ack(registration_id, batch_id, NOW))
            return
        result = self.run(self.store.ack(registration_id, batch_id, NOW))
        if expected.pending is not None and expected.pending[0] == batch_id:
            done = len(expected.pending[1])
            assert (result.acknowledged, result.events) == (True, done)
            del expected.backlog[:done]
            expected.pending = None
        else:
            assert not result.acknowledged  # an older batch: already acknowledged

    # Destructive rules run on some steps only: hypothesis favours argument-free rules,
    # and a store expired at every other step would never build a backlog to check.
    @precondition(lambda self: self.steps % 3 == 2)
    @rule(data=st.data())
    def unregister(self, data: st.DataObject) -> None:
        registration_id = self.pick(data)
        if registration_id not in self.model:
            with pytest.raises(RegistrationNotFound):
                self.run(self.store.unregister(registration_id))
            return
        self.run(self.store.unregister(registration_id))
        del self.model[registration_id]

    @precondition(lambda self: self.steps % 8 == 7)
    @rule(everyone=st.booleans())
    def expire(self, everyone: bool) -> None:
        """All were last seen at NOW: expire all of them, or none."""
        expired = self.run(self.store.expire(NOW + 1 if everyone else NOW - 1)).expired
        active = {rid for rid, reg in self.model.items() if reg.active} if everyone else set()
        assert set(expired) == active
        for registration_id in active:
            self.model[registration_id] = ModelReg(
                active=False, next_batch_id=self.model[registration_id].next_batch_id
            )

    @rule(data=st.data())
    def revive(self, data: st.DataObject) -> None:
        registration_id = self.pick(data)
        reg = self.model.get(registration_id)
        revived = self.run(self.store.revive(registration_id, NOW))
        assert revived == (reg is not None and not reg.active)
        if reg is not None and revived:
            reg.active = True  # empty backlog; batch ids keep growing

    @precondition(lambda self: self.steps % 4 == 3)
    @rule()
    def restart(self) -> None:
        self.store = self.run(self.backend.reopen(self.store))

    # --- what must hold after every step

    @invariant()
    def registrations_and_backlogs_match(self) -> None:
        self.steps += 1
        listed = {r.id: r for r in self.run(self.store.registrations())}
        active = {rid: reg for rid, reg in self.model.items() if reg.active}
        assert set(listed) == set(active)
        for registration_id, reg in active.items():
            assert listed[registration_id].backlog_events == len(reg.backlog)
            pending = reg.pending[0] if reg.pending else None
            assert listed[registration_id].pending_batch_id == pending


@pytest.mark.parametrize("backend_name", sorted(BACKENDS))
def test_storage_matches_the_model(backend_name: str) -> None:
    machine = type(f"{backend_name}Machine", (StorageMachine,), {"backend_name": backend_name})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
