"""The offline bundle installs with no network at all, serves, and refuses what it cannot do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.bundle.conftest import Bundle, no_network, python_for_others, run_install
from tests.conftest import ServerFactory
from tests.support import Api, cloudify_log

pytestmark = pytest.mark.slow

NOBODY = 65534


def test_installs_inside_a_network_namespace_and_serves(
    bundle: Bundle, tmp_path: Path, server_factory: ServerFactory
) -> None:
    prefix = tmp_path / "opt dir" / "cfylogs"  # a space: every path quoted, shebangs too
    # The namespace's interfaces, then the install, in the same namespace.
    show_then_install = ["sh", "-c", 'cat /proc/net/dev && echo ---- && exec "$@"', "sh"]
    done = run_install(
        bundle.install_sh, "--no-service", "--prefix", str(prefix),
        wrap=[*no_network(), *show_then_install],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    devices, _, _ = done.stdout.partition("----")
    interfaces = [line.split(":")[0].strip() for line in devices.splitlines() if ":" in line]
    assert interfaces == ["lo"]  # nothing to reach an index with
    assert f"cfylogs {bundle.version} is current in {prefix}" in done.stdout

    version_dir = prefix / "versions" / bundle.version
    assert os.readlink(prefix / "current") == f"versions/{bundle.version}"
    assert os.readlink(prefix / "bin" / "cfylogs") == "../current/bin/cfylogs"
    assert (version_dir / "bundle" / "install.sh").is_file()  # rolls back without the bundle

    server = server_factory(command=[str(prefix / "bin" / "cfylogs")]).start()
    assert server.proc is not None
    argv = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[0] == str(version_dir / "bin" / "python").encode()  # the installed one runs
    with server.client() as client:
        assert client.get("/health").json()["version"] == bundle.version
        api = Api(client)
        registration = api.register("bundle")
        assert api.push(cloudify_log(1), cloudify_log(2)).status_code == 200
        assert [e["seq"] for e in api.drain(registration)] == [1, 2]
    assert server.stop() == 0

    # Twice is harmless: the environment is kept, nothing becomes "previous".
    marker = version_dir / "bundle" / ".complete"
    made = marker.stat().st_mtime_ns
    again = run_install(bundle.install_sh, "--no-service", "--prefix", str(prefix))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"cfylogs {bundle.version} is in {prefix} already" in again.stdout
    assert marker.stat().st_mtime_ns == made
    assert not (prefix / "previous").exists()


def _copy_with_manifest(bundle: Bundle, dest: Path, **changes: str) -> Path:
    """The bundle with some bundle.env values changed (its wheels linked, not copied)."""
    dest.mkdir()
    for entry in bundle.root.iterdir():
        if entry.name in ("bundle.env", "install.sh"):
            shutil.copy2(entry, dest / entry.name)
        else:
            (dest / entry.name).symlink_to(entry)
    lines = [
        f"{key}={changes[key]}" if (key := line.split("=", 1)[0]) in changes else line
        for line in (dest / "bundle.env").read_text().splitlines()
    ]
    (dest / "bundle.env").write_text("\n".join(lines) + "\n")
    return dest / "install.sh"


def test_a_python_of_another_minor_version_is_refused_with_what_to_install(
    bundle: Bundle, tmp_path: Path
) -> None:
    other = f"3.{sys.version_info[1] + 1}"
    install_sh = _copy_with_manifest(bundle, tmp_path / "bundle", PYTHON_VERSION=other)
    prefix = tmp_path / "prefix"
    done = run_install(
        install_sh, "--no-service", "--prefix", str(prefix), "--python", sys.executable
    )
    assert done.returncode == 1
    here = "{}.{}.{}".format(*sys.version_info[:3])
    assert f"this bundle is for CPython {other}" in done.stderr
    assert f"{sys.executable} is CPython {here}" in done.stderr
    assert f"dnf install python{other}" in done.stderr  # what to install, and how
    assert "make dist PYTHON_VERSION=X.Y" in done.stderr
    assert not prefix.exists()  # checked before anything changed


def test_a_newer_glibc_than_the_systems_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    install_sh = _copy_with_manifest(bundle, tmp_path / "bundle", GLIBC="2.999")
    done = run_install(install_sh, "--no-service", "--prefix", str(tmp_path / "prefix"))
    assert done.returncode == 1
    assert "need glibc 2.999 or later; this system has glibc " in done.stderr


def test_non_root_installs_the_program_and_is_told_why_not_the_service(bundle: Bundle) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs install.sh as another user: needs root to switch to it")
    python = python_for_others()
    # Out of the tests' 0700 temporary directory, so that the user can reach it.
    place = Path(tempfile.mkdtemp(prefix="cfylogs-bundle-nobody-"))
    try:
        place.chmod(0o755)
        shutil.copytree(bundle.root, place / "bundle")
        prefix = place / "prefix"
        prefix.mkdir()
        os.chown(prefix, NOBODY, NOBODY)
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        install_sh = place / "bundle" / "install.sh"

        refused = run_install(install_sh, "--prefix", str(prefix), wrap=as_nobody)
        assert refused.returncode == 1
        assert "installing the service needs root" in refused.stderr
        assert "--no-service" in refused.stderr

        done = run_install(
            install_sh, "--no-service", "--prefix", str(prefix), "--python", python,
            wrap=[*as_nobody, "env", "HOME=/nonexistent"],
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        version = subprocess.run(
            [*as_nobody, str(prefix / "bin" / "cfylogs"), "--version"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert version.stdout.strip() == f"cfylogs, version {bundle.version}"
        assert (prefix / "current").lstat().st_uid == NOBODY
    finally:
        shutil.rmtree(place)
