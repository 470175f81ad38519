"""`python -m bench [--quick] [--rounds N] [--duration S] [--only P1,P2] ...` (see README)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.postgres import CfylogsPostgres, postgres_server
from bench.runner import Options, Runner
from bench.system import ensure_commands, machine_line
from bench.systems import Cfylogs, Load, System
from bench.workload import write_wrk_files


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny counts, 1 round: a smoke test")
    p.add_argument("--rounds", type=int, help="runs of each scenario per system (default 3)")
    p.add_argument("--duration", type=float, help="seconds per timed load (default 5)")
    p.add_argument("--only", help="comma-separated scenarios: disk,P1,P1-paced,P2,P3,P4,P5,P6")
    p.add_argument("--no-peers", action="store_true", help="skip Redis and RabbitMQ")
    p.add_argument("--no-postgres", action="store_true", help="skip cfylogs on PostgreSQL (P8)")
    p.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="an extra cfylogs system with these config keys, e.g. "
        "postgres:storage.backend=postgres,storage.postgres.dsn=postgresql://...",
    )
    p.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="NAME=CHECKOUT",
        help="also run the cfylogs of another checkout (its src/ directory is used), "
        "alternated with this one in every round: before/after comparisons",
    )
    p.add_argument(
        "--console-viewer",
        action="store_true",
        help="also run cfylogs with one live-tail viewer of the web console during P1 and P2",
    )
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="report directory")
    return p.parse_args(argv)


def options_from(args: argparse.Namespace, workdir: Path) -> Options:
    opts = Options(workdir=workdir)
    if args.quick:
        opts = Options(
            workdir=workdir, rounds=1, duration=1.0, drain_events=5_000,
            restart_events=10_000, rate=200.0, fanouts=(1, 4), time_limit=30.0,
        )  # fmt: skip
    if args.rounds:
        opts.rounds = args.rounds
    if args.duration:
        opts.duration = args.duration
    if args.only:
        opts.only = set(args.only.split(","))
    opts.peers = not args.no_peers
    opts.console_viewer = args.console_viewer
    for spec in args.backend:
        name, _, pairs = spec.partition(":")
        config = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        opts.backends[f"cfylogs-{name}"] = config
    for spec in args.code:
        name, _, checkout = spec.partition("=")
        source = Path(checkout).resolve() / "src"
        if not (source / "cfylogs").is_dir():
            raise SystemExit(f"--code {spec}: no src/cfylogs under {checkout}")
        opts.code[f"cfylogs-{name}"] = source
    return opts


def make_peers(opts: Options, notes: list[str]) -> list[System]:
    if not opts.peers:
        return []
    from bench.peers import available_peers

    return available_peers(opts.workdir / "systems", notes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    notes: list[str] = []
    missing = ensure_commands({"wrk": "wrk"})
    if missing:
        print(f"missing and not installable: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cfylogs-bench-") as tmp:
        workdir = Path(tmp)
        opts = options_from(args, workdir)
        load = Load(files=write_wrk_files(workdir / "wrk"), duration=opts.duration)
        peers = make_peers(opts, notes)
        started = time.time()
        with contextlib.ExitStack() as stack:
            extra: list[Cfylogs] = []
            if not args.no_postgres:
                pg = stack.enter_context(postgres_server(notes))
                if pg is not None:
                    extra.append(CfylogsPostgres("cfylogs-postgres", workdir / "pg", pg, {}))
            rows = asyncio.run(Runner(opts, load, peers, extra).run())
    return write_report(args, opts, rows, notes, time.time() - started)


def write_report(
    args: argparse.Namespace,
    opts: Options,
    rows: list[dict[str, Any]],
    notes: list[str],
    seconds: float,
) -> int:
    summary = report.summarise(rows)
    lines = report.targets(rows, summary)
    command = "python -m bench " + shlex.join(sys.argv[1:])
    header = "\n".join(
        [
            "# cfylogs benchmark run",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- machine: {machine_line()}",
            f"- command: `{command}`",
            f"- rounds: {opts.rounds}, duration per timed load: {opts.duration}s, "
            f"run took {seconds:.0f}s",
            *(f"- note: {n}" for n in notes),
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    text = report.markdown(summary, lines, header)
    (args.out / "report.md").write_text(text)
    data = {"command": command, "machine": machine_line(), "notes": notes, "targets": lines,
            "summary": summary, "rows": rows, "seconds": seconds}  # fmt: skip
    (args.out / "report.json").write_text(json.dumps(data, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
