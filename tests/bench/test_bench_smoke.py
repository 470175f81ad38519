"""The benchmark harness still runs end to end (tiny counts; no timing is asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("bench")
    if shutil.which("wrk") is None:
        from bench.system import ensure_commands

        if ensure_commands({"wrk": "wrk"}):
            pytest.fail("wrk is not installed and apt-get could not install it")
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--no-peers",
        "--only", "disk,P1,P1-paced,P3,P6", "--console-viewer", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "report.md").read_text().startswith("# cfylogs benchmark run")
    data: dict[str, object] = json.loads((out / "report.json").read_text())
    return data


def test_every_scenario_asked_for_is_measured(report: dict[str, object]) -> None:
    summary = report["summary"]
    assert isinstance(summary, dict)
    assert set(summary) == {"disk", "P1", "P1-paced", "P3", "P6"}
    # cfylogs on PostgreSQL (P8) takes part where the checkout has that backend.
    # The ASGI ceiling runs where uvicorn is installed (the bench extra, `make bench`).
    assert set(summary["P1"]) - {"cfylogs-postgres", "asgi-ceiling"} == {
        "http-ceiling",
        "cfylogs",
        "cfylogs-viewer",
    }


def test_measures_are_sane(report: dict[str, object]) -> None:
    summary = report["summary"]
    assert isinstance(summary, dict)
    for system in ("http-ceiling", "cfylogs"):
        p1 = summary["P1"][system]
        assert p1["events_per_sec"] > 0 and p1["errors"] == 0
        assert 0 <= p1["client_cpu_pct"] <= 200 and p1["server_cpu_pct"] > 0
        assert isinstance(p1["client_bound"], bool)
    assert summary["P3"]["cfylogs"]["events"] == 5_000
    viewer = summary["P1"]["cfylogs-viewer"]  # --console-viewer: one live-tail viewer in P1
    assert viewer["console_viewer_polls"] > 0 and viewer["console_viewer_errors"] == 0
    seen = viewer["console_viewer_events"] + viewer["console_viewer_missed"]
    # wrk does not count the requests in flight when it stops (one per connection at most)
    assert viewer["console_viewer_events"] > 0 and seen <= viewer["events"] + 50
    paced = summary["P1-paced"]["cfylogs"]
    assert paced["errors"] == 0 and paced["achieved_rate"] > 0.8 * paced["target_rate"]
    restart = summary["P6"]["cfylogs"]
    assert restart["events"] == 10_000 and 0 < restart["answer_sec"] < 30
    assert restart["rss_restart_mb"] > 0
    assert summary["disk"]["framed-500"]["events_per_sec"] > 0


def test_targets_are_reported(report: dict[str, object]) -> None:
    targets = report["targets"]
    assert isinstance(targets, list)
    names = {line["target"] for line in targets}
    assert {"P1", "P2", "P3", "P4", "P5", "P6"} <= names
    assert all(line["pass"] in (True, False, None) for line in targets)


def _row(scenario: str, system: str, round_: int, **values: object) -> dict[str, object]:
    return {"scenario": scenario, "system": system, "round": round_, **values}


def test_medians_flags_and_round_ratios() -> None:
    from bench import report

    rows = [
        _row("P1", "cfylogs", 0, events_per_sec=80.0, client_bound=False),
        _row("P1", "cfylogs", 1, events_per_sec=50.0, client_bound=True),
        _row("P1", "cfylogs", 2, events_per_sec=70.0, client_bound=False),
        _row("P1", "asgi-ceiling", 0, events_per_sec=100.0),
        _row("P1", "asgi-ceiling", 1, events_per_sec=50.0),
        _row("P1", "asgi-ceiling", 2, events_per_sec=100.0),
    ]
    summary = report.summarise(rows)
    assert summary["P1"]["cfylogs"]["events_per_sec"] == 70.0
    assert summary["P1"]["cfylogs"]["client_bound"] is True  # any round
    assert summary["P1"]["cfylogs"]["runs"] == 3
    # Round by round: 0.8, 1.0, 0.7 -> 0.8 (the ratio of medians would say 0.7).
    assert report.round_ratio(rows, "P1", "cfylogs", "asgi-ceiling", "events_per_sec") == 0.8
    lines = {(t["target"], t["what"]): t for t in report.targets(rows, summary)}
    p1 = lines[("P1", "single-event ingest / ASGI ceiling")]
    assert p1["pass"] is True and p1["value"] == "0.8"
    assert lines[("P3", "drain events/s (batches of 1000)")]["pass"] is None  # not run
