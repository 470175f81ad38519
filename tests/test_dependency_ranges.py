"""The dependency ranges of pyproject.toml are true: at their floors, and from the wheel.

At the floors: uv installs this tree (a wheel built from it) with the dev extra into a fresh
venv, each direct dependency at the lowest version its range allows
(`--resolution lowest-direct`; what they depend on at the newest), and that
venv's python runs the smoke tests below: a server started, pushes, fetches,
acks, the fast ingest path, TLS, PostgreSQL, the CLI, metrics, the client
library and the wheel build. Every floor must also be what gets installed: a
floor no install can reach (raised by another package's own range, or a
release that cannot be installed) says less than it seems to.

From the wheel: `pip install` of the built wheel into a clean venv, as
docs/OPERATIONS.md installs it, resolves the ranges (at their newest) and
gives a working `cfylogs` command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).parent / "uv"  # the dev extra's, at the lock's version

SMOKE = [
    "tests/e2e/test_health.py",
    "tests/e2e/test_compat_api.py::test_alien4cloud_plugin_sequence",
    "tests/e2e/test_http_protocol.py::test_pipelined_requests_are_answered_in_order_and_all_stored",
    "tests/e2e/test_client.py::test_every_call_returns_typed_results",
    "tests/e2e/test_client.py::test_the_async_consumer_drains_and_stops_a_long_poll_at_once",
    "tests/e2e/test_tls.py::test_whole_api_over_https_and_ingest_over_plain_http",
    "tests/e2e/test_tls.py::test_pkcs12_keystore_and_truststore_with_client_auth_want",
    "tests/e2e/test_postgres_ha.py::test_register_on_a_fetch_on_b_ack_on_c",
    "tests/e2e/test_cli.py::test_environment_override_applies",
    "tests/e2e/test_metrics.py::test_counters_and_backlogs_follow_a_workload",
    "tests/unit/test_packaging.py::test_the_wheel_builds_and_holds_the_package_and_command",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def direct_requirements() -> list[Requirement]:
    """The runtime and dev requirements that apply here (their markers hold)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["dev"]
    requirements = [Requirement(line) for line in listed]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def floor(requirement: Requirement) -> Version:
    (lowest,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return lowest


def run(*command: str | Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not a worker
    done = subprocess.run(
        [str(part) for part in command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_direct_dependency_has_a_floor() -> None:
    for requirement in direct_requirements():
        assert floor(requirement), requirement


def test_the_smoke_tests_pass_with_every_direct_dependency_at_its_floor(tmp_path: Path) -> None:
    venv = tmp_path / "lowest"
    python = venv / "bin" / "python"
    run(UV, "venv", "--quiet", "--seed", "--python", sys.executable, venv)
    run(UV, "pip", "install", "--quiet", "--python", python, "--resolution", "lowest-direct",
        f"{ROOT}[dev]")  # fmt: skip

    listed = json.loads(run(UV, "pip", "list", "--python", python, "--format", "json"))
    installed = {canonicalize_name(p["name"]): Version(p["version"]) for p in listed}
    above = {
        str(r): str(installed[canonicalize_name(r.name)])
        for r in direct_requirements()
        if installed[canonicalize_name(r.name)] != floor(r)
    }
    assert not above, f"installed above their floors (raise the floor to it): {above}"

    out = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *SMOKE)
    assert re.fullmatch(r"\d+ passed in .*", out.splitlines()[-1]), out  # none skipped


def test_pip_installs_the_wheel_into_a_clean_venv_from_its_ranges(tmp_path: Path) -> None:
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
        "--wheel-dir", tmp_path, ROOT)  # fmt: skip
    (wheel,) = tmp_path.glob("cfylogs-*.whl")
    venv = tmp_path / "clean"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--quiet", wheel)
    version = wheel.name.split("-")[1]
    assert run(venv / "bin" / "cfylogs", "--version").strip().endswith(f"version {version}")
    modules = "import cfylogs.cli, cfylogs.http.server, cfylogs.storage.postgres, cfylogs.client"
    run(venv / "bin" / "python", "-c", modules)
