"""`python -m tests.stress --cycles 50 --seconds-per-cycle 3`: the crash-cycle stress run.

Prints the figures (also as JSON with --json) and exits 1 if any rule was broken.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.stress.runner import Options, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seconds-per-cycle", type=float, default=3.0)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept for inspection")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cfylogs-stress-") as tmp:
        options = Options(
            workdir=args.workdir or Path(tmp),
            cycles=args.cycles,
            seconds_per_cycle=args.seconds_per_cycle,
            producers=args.producers,
            seed=args.seed,
        )
        figures = run(options)
    print(json.dumps(vars(figures), indent=2) if args.json else figures.summary())
    for violation in figures.violations[:50]:
        print("VIOLATION", violation, file=sys.stderr)
    return 1 if figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
