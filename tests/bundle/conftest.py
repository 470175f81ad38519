"""The offline bundle of the working tree, built once per test run and shared by the
xdist workers (the first to ask builds it under a file lock, the others wait for it)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cfylogs import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build_dist.py"
#: What the build reads from a source tree: all an older version's copy needs.
SOURCE_PARTS = [
    "src",
    "pyproject.toml",
    "README.md",
    "requirements.lock",
    "requirements-installer.lock",
    "packaging",
    "docs/OPERATIONS.md",
]


@dataclass(frozen=True)
class Bundle:
    archive: Path
    root: Path  # the archive unpacked: install.sh and the rest
    manifest: dict[str, str]

    @property
    def version(self) -> str:
        return self.manifest["CFYLOGS_VERSION"]

    @property
    def install_sh(self) -> Path:
        return self.root / "install.sh"


def run_install(
    install_sh: Path, *args: str, wrap: list[str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`install.sh ARGS` (under `wrap`, e.g. unshare), its output for the asserts.

    Run from the bundle's directory: without the service, install.sh's schema check finds
    the config as `cfylogs serve` would, from the working directory, which must not be the
    test runner's (a 0700 temporary clone that another user may not search, a checkout
    with a ./config of its own)."""
    return subprocess.run(
        [*(wrap or []), "bash", str(install_sh), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=install_sh.parent,
    )


def no_network() -> list[str]:
    """A network namespace with no interface but a loopback that is down."""
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "-n"]


def python_for_others() -> str:
    """A CPython of the bundle's minor version that users other than root can run (not
    under /root): the distribution's, or this one's when it is not under a home."""
    for candidate in (f"/usr/bin/python3.{sys.version_info[1]}", sys._base_executable):
        path = Path(candidate).resolve()
        if path.is_file() and all(p.stat().st_mode & 0o005 == 0o005 for p in path.parents):
            return str(path)
    pytest.skip("no CPython of this minor version that users other than root can run")


def read_manifest(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # every xdist worker of one run has its own basetemp under the run's
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _built(
    tmp_path_factory: pytest.TempPathFactory, name: str, source: Callable[[Path], Path] | None
) -> Bundle:
    shared = _shared_dir(tmp_path_factory)
    place = shared / f"bundle-{name}"
    with _locked(shared / f"bundle-{name}.lock"):
        if not (place / "done").exists():
            shutil.rmtree(place, ignore_errors=True)
            place.mkdir()
            tree = ROOT if source is None else source(place)
            done = subprocess.run(
                [sys.executable, str(BUILD), "--source", str(tree), "--out", str(place)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
            archive = Path(done.stdout.strip().splitlines()[-1])
            with tarfile.open(archive) as tar:
                tar.extractall(place / "unpacked", filter="tar")
            (place / "done").write_text(archive.name)
    archive = place / (place / "done").read_text()
    (root,) = (place / "unpacked").iterdir()
    return Bundle(archive, root, read_manifest(root / "bundle.env"))


OLD_VERSION = f"{__version__}.dev0"  # older than __version__ (PEP 440)


def _older_tree(place: Path) -> Path:
    """The working tree as version OLD_VERSION: the bundle of an older release."""
    tree = place / "source"
    for part in SOURCE_PARTS:
        (tree / part).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / part, tree / part)
    init = tree / "src" / "cfylogs" / "__init__.py"
    text, count = re.subn(r'__version__ = ".*"', f'__version__ = "{OLD_VERSION}"', init.read_text())
    assert count == 1
    init.write_text(text)
    return tree


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The bundle of the working tree, as `make dist` makes it."""
    return _built(tmp_path_factory, "current", None)


@pytest.fixture(scope="session")
def old_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The same tree as an older version (OLD_VERSION), to upgrade from."""
    return _built(tmp_path_factory, "old", _older_tree)
