"""Build the offline install bundle (`make dist`): one archive that installs with no network.

  python scripts/build_dist.py [--source DIR] [--python-version X.Y] [--platform TAG] [--out DIR]

dist/cfylogs-<version>-cp<XY>-<platform>.tar.gz holds, under a directory of
the same name: install.sh, the cfylogs wheel and the wheel of every runtime
dependency at the versions of requirements.lock (checked against its
hashes), the pip wheel install.sh installs them with (requirements-installer.lock),
the systemd unit, the default config (`cfylogs init`), store_schema.py
(the rollback check), bundle.env (what the bundle serves) and OPERATIONS.md.

--python-version: the CPython minor version the compiled wheels are for
(default: the one running this). --platform: the newest manylinux the
target may need (default manylinux_2_17_<this machine>: glibc 2.17 and
later); the archive is named after the newest one its wheels actually need.
Wheels are fetched once into build/wheels (through pip's configured index)
and taken from there afterwards, so a second build needs no network.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = "requirements.lock"
INSTALLER_LOCK = "requirements-installer.lock"
# glibc minor versions the old manylinux names stand for (PEP 600)
LEGACY_MANYLINUX = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}
_MANYLINUX = re.compile(r"manylinux_2_(\d+)_(\w+)$")
_LEGACY = re.compile(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)$")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the source tree (default: .)")
    parser.add_argument("--python-version", default="{}.{}".format(*sys.version_info[:2]))
    parser.add_argument("--platform", default=f"manylinux_2_17_{platform.machine()}")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--wheel-cache", type=Path, default=ROOT / "build" / "wheels")
    args = parser.parse_args(argv)
    try:
        archive = build(
            args.source.resolve(), args.python_version, args.platform, args.out, args.wheel_cache
        )
    except BuildError as exc:
        print(f"build_dist: {exc}", file=sys.stderr)
        return 1
    print(archive)
    return 0


class BuildError(Exception):
    pass


def build(source: Path, python_version: str, target: str, out: Path, cache: Path) -> Path:
    if not re.fullmatch(r"3\.\d+", python_version):
        raise BuildError(f"--python-version {python_version!r}: expected 3.N (a CPython minor)")
    glibc, arch = _parse_platform(target)
    with tempfile.TemporaryDirectory(prefix="cfylogs-dist-") as tmp:
        stage = Path(tmp) / "bundle"
        wheels, installer = stage / "wheels", stage / "installer"
        platforms = _platforms(glibc, arch)
        _download(source / RUNTIME_LOCK, wheels, cache, python_version, platforms)
        _download(source / INSTALLER_LOCK, installer, cache, python_version, platforms)
        floor = max((_glibc_needed(w) for w in wheels.iterdir()), default=(2, 5))
        wheel = _build_wheel(source, wheels)
        version = str(parse_wheel_filename(wheel.name)[1])
        cpython = "cp" + python_version.replace(".", "")
        name = f"cfylogs-{version}-{cpython}-manylinux_2_{floor[1]}_{arch}"
        _lay_out(source, stage, wheel, version, python_version, floor, arch)
        out.mkdir(parents=True, exist_ok=True)
        archive = out / f"{name}.tar.gz"
        _archive(stage, name, archive)
    return archive


def _parse_platform(tag: str) -> tuple[int, str]:
    match = _MANYLINUX.match(tag) or _LEGACY.match(tag)
    if match is None:
        raise BuildError(
            f"--platform {tag!r}: expected manylinux_2_N_ARCH (e.g. manylinux_2_28_x86_64)"
        )
    name, arch = match.groups()
    return (LEGACY_MANYLINUX[name] if name in LEGACY_MANYLINUX else int(name)), arch


def _platforms(glibc: int, arch: str) -> list[str]:
    """Every platform tag a system with that glibc takes, newest first (pip's --platform
    takes only the tags it is given)."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
    legacy = [f"{name}_{arch}" for name, minor in LEGACY_MANYLINUX.items() if minor <= glibc]
    return tags + legacy[::-1]


def _download(
    lock: Path, dest: Path, cache: Path, python_version: str, platforms: list[str]
) -> None:
    """The lock's wheels for the target into `dest`, from the cache when it has them all."""
    dest.mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python_version.replace(".", "")
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
        "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(lock),
        "--python-version", python_version, "--implementation", "cp", "--abi", abi,
        *[option for tag in platforms for option in ("--platform", tag)],
        "--find-links", str(cache), "--dest", str(dest),
    ]  # fmt: skip
    offline = subprocess.run([*command, "--no-index"], capture_output=True, text=True)
    if offline.returncode != 0:
        shutil.rmtree(dest)
        dest.mkdir()
        online = subprocess.run(command, capture_output=True, text=True)
        if online.returncode != 0:
            raise BuildError(f"pip download of {lock.name} for CPython {python_version} "
                             f"({platforms[0]}) failed:\n{online.stderr.strip()}")  # fmt: skip
    for wheel in dest.iterdir():
        if not (cache / wheel.name).exists():
            shutil.copy2(wheel, cache / wheel.name)


def _glibc_needed(wheel: Path) -> tuple[int, int]:
    """The oldest glibc a wheel runs on: (2, 5) for a pure one."""
    tags: frozenset[Tag] = parse_wheel_filename(wheel.name)[3]
    minors = []
    for tag in tags:
        if tag.platform == "any":
            return (2, 5)
        legacy = _LEGACY.match(tag.platform)
        modern = _MANYLINUX.match(tag.platform)
        if legacy:
            minors.append(LEGACY_MANYLINUX[legacy.group(1)])
        elif modern:
            minors.append(int(modern.group(1)))
    if not minors:
        raise BuildError(f"{wheel.name} is not a manylinux wheel")
    return (2, min(minors))


def _build_wheel(source: Path, dest: Path) -> Path:
    # No build isolation: hatchling is in the dev venv, so this needs no index.
    with tempfile.TemporaryDirectory(prefix="cfylogs-wheel-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--quiet",
             "--no-deps", "--no-build-isolation", "--wheel-dir", tmp, str(source)],
            check=True,
        )  # fmt: skip
        (built,) = Path(tmp).glob("cfylogs-*.whl")
        return Path(shutil.move(built, dest / built.name))


def _run_source(source: Path, *args: str) -> str:
    """Python code of the source tree (not the one installed here), for what it says."""
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    done = subprocess.run(
        [sys.executable, *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def _lay_out(
    source: Path,
    stage: Path,
    wheel: Path,
    version: str,
    python_version: str,
    floor: tuple[int, int],
    arch: str,
) -> None:
    shipped = source / "packaging"
    for name in ("install.sh", "cfylogs.service", "store_schema.py"):
        shutil.copy2(shipped / name, stage / name)
    shutil.copy2(source / "docs" / "OPERATIONS.md", stage / "OPERATIONS.md")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    requirements = (source / RUNTIME_LOCK).read_text()
    requirements += f"cfylogs=={version} \\\n    --hash=sha256:{digest}\n"
    (stage / "requirements.txt").write_text(requirements)
    config = stage / "alien4cloud-cfy-logs-config.yml"
    _run_source(source, "-m", "cfylogs", "init", str(config))
    known = _run_source(source, str(shipped / "store_schema.py"), "known")
    # Which wheels, at which hashes: two builds of one version for two Pythons differ.
    wheels = sorted(p.name for p in (stage / "wheels").iterdir())
    bundle_id = hashlib.sha256("\n".join([requirements, *wheels]).encode()).hexdigest()[:16]
    manifest = [
        "# What this bundle holds and serves (read by install.sh).",
        f"CFYLOGS_VERSION={version}",
        f"PYTHON_VERSION={python_version}",
        f"GLIBC={floor[0]}.{floor[1]}",
        f"ARCH={arch}",
        known.strip(),
        f"BUNDLE_ID={bundle_id}",
    ]
    (stage / "bundle.env").write_text("\n".join(manifest) + "\n")
    (stage / "README.txt").write_text(_readme(version, python_version, floor, arch))


def _readme(version: str, python_version: str, floor: tuple[int, int], arch: str) -> str:
    return f"""\
cfylogs {version}: offline install bundle for CPython {python_version} on Linux {arch}
(glibc {floor[0]}.{floor[1]} or later). Nothing is fetched: every wheel is here.

  ./install.sh                      as root: /opt/cfylogs, the cfylogs user, the config in
                                    /etc/cfylogs, the data in /var/lib/cfylogs, the service
  ./install.sh --no-service --prefix DIR    the program alone (any user)
  ./install.sh --rollback           back to the version installed before this one
  ./install.sh --uninstall [--purge]
  ./install.sh --help               every option

OPERATIONS.md: what the manager needs, upgrades, the service, backups.
"""


def _archive(stage: Path, name: str, archive: Path) -> None:
    """A tar.gz of `stage` under `name`/, owned by root, in name order."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        executable = info.isdir() or info.name.endswith("/install.sh")
        info.mode = 0o755 if executable else 0o644
        return info

    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(stage, arcname=name, recursive=False, filter=normalise)
        for path in sorted(stage.rglob("*")):
            arcname = f"{name}/{path.relative_to(stage).as_posix()}"
            tar.add(path, arcname=arcname, recursive=False, filter=normalise)
    partial.replace(archive)


if __name__ == "__main__":
    sys.exit(main())
