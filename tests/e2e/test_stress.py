"""The crash-cycle stress runner: a short run here, the full one with `python -m tests.stress`.

Its checker's own test (no server) is tests/unit/test_stress_checker.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.stress.runner import Options, run


def test_a_few_crash_cycles_lose_nothing_acknowledged(tmp_path: Path) -> None:
    figures = run(Options(workdir=tmp_path, cycles=3, seconds_per_cycle=1.0))
    assert figures.violations == []
    assert figures.cycles == 3
    assert figures.events_acked > 0 and figures.events_checked >= figures.events_acked
