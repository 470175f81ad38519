"""The crash-cycle stress runner: a short run here, the full one with `python -m tests.stress`."""

from __future__ import annotations

from pathlib import Path

from tests.stress.runner import Checker, Figures, Ledger, Options, Tracked, run


def test_a_few_crash_cycles_lose_nothing_acknowledged(tmp_path: Path) -> None:
    figures = run(Options(workdir=tmp_path, cycles=3, seconds_per_cycle=1.0))
    assert figures.violations == []
    assert figures.cycles == 3
    assert figures.events_acked > 0 and figures.events_checked >= figures.events_acked


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
