"""The body budget: bytes received are counted, readers pause beyond it, the oldest goes on."""

from __future__ import annotations

from cfylogs.http.budget import ByteBudget


class FakeReader:
    """A connection as the budget sees it: told when it may read on."""

    def __init__(self) -> None:
        self.resumed = 0

    def resume_body(self) -> None:
        self.resumed += 1


def test_what_is_declared_costs_nothing_only_what_arrives_counts() -> None:
    budget = ByteBudget(100)
    idle = [FakeReader() for _ in range(50)]
    for reader in idle:
        budget.start_body(reader)  # fifty bodies begun, not a byte sent
    assert budget.used == 0 and not budget.spent()
    late = FakeReader()
    budget.start_body(late)
    budget.add(60)
    assert budget.may_read(late)


def test_past_the_budget_readers_wait_but_the_oldest_goes_on() -> None:
    budget = ByteBudget(100)
    first, second, third = FakeReader(), FakeReader(), FakeReader()
    for reader in (first, second, third):
        budget.start_body(reader)
    budget.add(120)  # more arrived than the budget
    assert budget.spent()
    assert budget.may_read(first)  # the oldest body completes whatever the budget
    assert not budget.may_read(second) and not budget.may_read(third)
    assert budget.waiting == 2
    budget.settle(70)  # first's body is whole...
    budget.end_body(first)
    budget.release(70, settled=True)  # ...and answered: room again
    assert second.resumed == third.resumed == 1 and budget.waiting == 0
    assert first.resumed == 0


def test_a_reader_that_goes_away_is_not_resumed() -> None:
    budget = ByteBudget(10)
    holder, gone = FakeReader(), FakeReader()
    budget.start_body(holder)
    budget.start_body(gone)
    budget.add(10)
    assert not budget.may_read(gone)
    budget.end_body(gone)  # its connection was lost while it waited
    budget.release(10, settled=False)
    assert gone.resumed == 0 and budget.waiting == 0 and budget.used == 0


def test_while_whole_bodies_hold_the_budget_even_the_oldest_reader_waits() -> None:
    """Bodies read whole give their bytes back once answered: no one need go on for
    progress, so a reader does not add to memory that requests in processing hold."""
    budget = ByteBudget(100)
    reader = FakeReader()
    budget.add(100, settled=True)  # a request read whole, being stored
    budget.start_body(reader)
    budget.add(5)
    assert not budget.may_read(reader)
    budget.release(100, settled=True)
    assert reader.resumed == 1 and budget.used == 5 and budget.settled == 0


def test_no_budget_never_pauses() -> None:
    budget = ByteBudget(0)
    reader, other = FakeReader(), FakeReader()
    budget.start_body(reader)
    budget.start_body(other)
    budget.add(10**12)
    assert not budget.spent() and budget.may_read(other)
