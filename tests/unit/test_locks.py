"""The lock files agree with pyproject.toml and with each other (`make lock` writes them).

A dependency added to pyproject.toml without `make lock`, a range moved past
the locked version, or locks written apart: each fails here, before any
install.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?: ;[^\\]*)? \\$")

#: Each lock and the pyproject.toml extras it holds besides the runtime.
LOCKS = {"requirements.lock": [], "requirements-dev.lock": ["dev"],
         "requirements-bench.lock": ["dev", "bench"]}  # fmt: skip


def pins(lock: str) -> dict[str, str]:
    """name -> version of every package the lock pins; each pin with its hashes."""
    lines = (ROOT / lock).read_text().splitlines()
    found = {}
    for number, line in enumerate(lines):
        match = _PIN.match(line)
        if match:
            assert lines[number + 1].strip().startswith("--hash=sha256:"), line
            found[canonicalize_name(match[1])] = match[2]
    assert found, f"{lock} pins nothing"
    return found


def requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [
        line for extra in extras for line in project["optional-dependencies"][extra]
    ]
    return [Requirement(line) for line in listed]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_pins_every_requirement_within_its_range(lock: str) -> None:
    pinned = pins(lock)
    for requirement in requirements(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in {lock}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} has {name}=={pinned[name]}, outside {requirement}: run `make lock`"
        )


def test_the_locks_agree_and_each_holds_the_smaller_one() -> None:
    runtime, dev, bench = (pins(lock) for lock in LOCKS)
    assert runtime.items() <= dev.items() <= bench.items()


def test_the_project_extras_are_the_ones_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["optional-dependencies"]) == {"dev", "bench"}
