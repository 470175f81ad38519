"""The crash-cycle stress runner's checker has teeth (its runs are in tests/e2e/test_stress.py)."""

from __future__ import annotations

from tests.stress.runner import Checker, Figures, Ledger, Tracked


def _checker_with(sent: list[tuple[int, int]], acked: list[int]) -> tuple[Checker, Tracked]:
    ledger = Ledger(1)
    ledger.sent.update(sent)
    ledger.acked[0].extend(acked)
    return Checker(ledger, Figures()), Tracked("r", [0])


def test_the_checker_sees_each_kind_of_violation() -> None:
    """The checks have teeth: each broken rule is reported (no server needed)."""
    checker, reg = _checker_with([(0, 0), (0, 1), (0, 2)], acked=[0, 1, 2])
    checker._check_batch(reg, 0, [(0, 1), (0, 0)])  # order
    reg.confirmed.add(0)
    checker._check_batch(reg, 0, [(0, 1), (0, 0)])  # acknowledged batch again
    checker._check_batch(reg, 2, [(0, 1)])  # id gap, and a duplicate in another batch
    checker._key(reg, {"p": 9, "i": 9, "pad": ""})  # foreign
    checker.check_nothing_lost(reg)  # 2 never arrived
    text = "\n".join(checker.figures.violations)
    for expected in ["0: 0 after 1", "after its ack", "batch id 2 after 0", "two different"]:
        assert expected in text
    assert "foreign" in text and "lost 1" in text
