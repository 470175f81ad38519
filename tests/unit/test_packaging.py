"""Packaging: the wheel builds and carries the package; the systemd unit is sound."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from cfylogs import __version__

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "cfylogs.service"
STATIC = ROOT / "src" / "cfylogs" / "console" / "static"


def test_the_wheel_builds_and_holds_the_package_and_command(tmp_path: Path) -> None:
    # no build isolation: hatchling is a dev dependency, so this needs no index and is quick
    options = ["--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), *options],
        check=True,
        timeout=120,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cfylogs-*.whl")
    assert wheel.name.startswith(f"cfylogs-{__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src").rglob("*.py")}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    console = {f"cfylogs/console/static/{p.name}" for p in STATIC.iterdir()}  # the web console
    assert console <= names, f"missing from the wheel: {sorted(console - names)}"
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "cfylogs = cfylogs.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith("tests/") for n in names)


def test_the_console_serves_exactly_its_static_files() -> None:
    from cfylogs.http.console import STATIC as SERVED

    assert {name for name, _ in SERVED.values()} == {p.name for p in STATIC.iterdir()}


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_the_unit_runs_serve_as_its_own_user_and_restarts_on_failure() -> None:
    service = _unit()["Service"]
    assert service["ExecStart"].endswith(
        "/cfylogs serve --config /etc/cfylogs/alien4cloud-cfy-logs-config.yml"
    )
    assert service["User"] == "cfylogs" and service["StateDirectory"] == "cfylogs"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a bad config is not fixed by a restart
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the static checks above still ran
    out = subprocess.run(
        [analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=60, cwd="/"
    )
    # The only complaint allowed here: /opt/cfylogs is not installed on this machine.
    complaints = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert not complaints, complaints
