"""The install as a service: user, config, data directory, the unit rendered for the prefix
and accepted by `systemd-analyze verify` at the installed paths; uninstall keeps config and
data unless --purge. Run in namespaces of its own (service_steps.sh), so this machine keeps
no user, file or unit of it; systemd does not run here, so nothing is started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundle.conftest import Bundle, python_for_others

pytestmark = pytest.mark.slow

STEPS = Path(__file__).with_name("service_steps.sh")
PREFIX = "/opt/cfylogs relay"  # a space, in a place the unit's ProtectHome leaves visible
SELF_PYTHON = str(Path(sys._base_executable).resolve())


def _namespaces() -> list[str]:
    if os.geteuid() == 0:
        return ["unshare", "-m", "-n"]
    return ["unshare", "--map-root-user", "-m", "-n"]


def _run_steps(out: Path, *args: str) -> dict[str, tuple[int, str]]:
    """service_steps.sh ARGS: step name -> (exit status, output)."""
    out.mkdir()
    done = subprocess.run(
        [*_namespaces(), "bash", str(STEPS), *args, python_for_others()],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "SELF_PYTHON": SELF_PYTHON},
    )
    assert done.returncode == 0, done.stderr
    return {rc.stem: (int(rc.read_text()), rc.with_suffix(".out").read_text())
            for rc in out.glob("*.rc")}  # fmt: skip


def test_service_install_reinstall_uninstall_and_purge(bundle: Bundle, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/ensure-test-tools.sh installs it")
    out = tmp_path / "steps"
    steps = _run_steps(out, "offline", str(bundle.root), str(out), PREFIX)

    if SELF_PYTHON.startswith(("/root/", "/home/")):  # a pyenv's, say
        status, text = steps["install-home-python"]
        assert status == 1
        assert f"the service could not run {SELF_PYTHON}: its unit's ProtectHome" in text
    status, text = steps["install"]
    assert status == 0, text
    assert "created the system user cfylogs" in text
    assert "wrote the default config /etc/cfylogs/alien4cloud-cfy-logs-config.yml" in text
    assert "systemd is not running here" in text
    state = steps["state-installed"][1]
    assert "cfylogs:x:" in state and ":/var/lib/cfylogs:" in state and "nologin" in state
    assert "/etc/cfylogs 750 root:cfylogs" in state
    assert "/etc/cfylogs/alien4cloud-cfy-logs-config.yml 640 root:cfylogs" in state
    assert "/var/lib/cfylogs 700 cfylogs:cfylogs" in state
    assert "/etc/systemd/system/cfylogs.service 644 root:root" in state
    assert "enabled: multi-user.target.wants/cfylogs.service" in state

    # The unit runs the prefix's cfylogs, quoted; systemd finds nothing to say against it.
    unit = (out / "installed.service").read_text()
    assert (
        f'ExecStart="{PREFIX}/bin/cfylogs" serve --config '
        "/etc/cfylogs/alien4cloud-cfy-logs-config.yml\n"
    ) in unit
    status, text = steps["verify"]
    assert status == 0 and not text.strip(), text

    # Twice: the operator's edit of the config is kept, and nothing else changes.
    status, text = steps["install-again"]
    assert status == 0, text
    assert f"is in {PREFIX} already" in text
    assert "kept /etc/cfylogs/alien4cloud-cfy-logs-config.yml" in text
    assert "created the system user" not in text
    assert steps["state-again"] == steps["state-installed"]
    assert (out / "config-after").read_text().endswith("# kept: an operator's edit\n")

    # A store of the service's (stopped), checked by root: schema 1 is older than this
    # version knows; the -wal and -shm files SQLite makes for that reader are the store
    # owner's (SQLite gives them its owner), so the service is not locked out of them.
    status, text = steps["install-with-store"]
    assert status == 0, text
    assert "store /var/lib/cfylogs/cfylogs.sqlite3: schema 1;" in text
    store_files = steps["store-files"][1].splitlines()
    assert [line.rsplit(" ", 1)[1] for line in store_files] == ["cfylogs"] * 3, store_files

    # --uninstall (from the copy in the prefix): program and unit go, config and data stay.
    status, text = steps["uninstall"]
    assert status == 0, text
    assert "removed the service cfylogs" in text and "kept the config (/etc/cfylogs)" in text
    state = steps["state-uninstalled"][1]
    assert "cfylogs:x:" in state
    assert "/etc/cfylogs/alien4cloud-cfy-logs-config.yml 640" in state
    assert "/var/lib/cfylogs 700" in state
    assert "cfylogs.service': No such file" in state and "not enabled" in state
    assert f"cannot access '{PREFIX}'" in state

    # --purge: config, data and the user too.
    status, text = steps["purge"]
    assert status == 0, text
    state = steps["state-purged"][1]
    assert "no user" in state
    assert "'/etc/cfylogs': No such file" in state and "'/var/lib/cfylogs': No such file" in state


def _calls(log: str, part: str) -> list[str]:
    """The systemctl calls of one part of the running scenario."""
    calls = log.split(f"--- {part}\n", 1)[1].split("\n--- ", 1)[0]
    return [line for line in calls.splitlines() if line]


def test_a_running_service_is_restarted_on_the_version_switched_to(
    bundle: Bundle, old_bundle: Bundle, tmp_path: Path
) -> None:
    out = tmp_path / "steps"
    steps = _run_steps(out, "running", str(bundle.root), str(old_bundle.root), str(out), PREFIX)
    for name in ("install-old", "upgrade", "install-again", "rollback", "uninstall"):
        assert steps[name][0] == 0, steps[name][1]
    log = (out / "systemctl.log").read_text()
    old, new = f"versions/{old_bundle.version}", f"versions/{bundle.version}"

    # A first install starts it; an upgrade builds the new version while the old one runs
    # and restarts it once current points at the new one.
    assert _calls(log, "install-old") == [
        "is-active --quiet cfylogs (current: )",
        f"daemon-reload (current: {old})",
        f"enable --quiet cfylogs (current: {old})",
        f"start cfylogs (current: {old})",
    ]
    assert _calls(log, "upgrade") == [
        f"is-active --quiet cfylogs (current: {old})",
        f"daemon-reload (current: {new})",
        f"enable --quiet cfylogs (current: {new})",
        f"restart cfylogs (current: {new})",
    ]
    assert "restarted cfylogs" in steps["upgrade"][1]
    # Nothing changed, nothing restarted.
    assert _calls(log, "install-again") == [
        f"is-active --quiet cfylogs (current: {new})",
        f"enable --quiet cfylogs (current: {new})",
    ]
    # Rollback the same way, back to the version before: its unit, one restart.
    assert _calls(log, "rollback") == [
        f"is-active --quiet cfylogs (current: {new})",
        f"daemon-reload (current: {old})",
        f"enable --quiet cfylogs (current: {old})",
        f"restart cfylogs (current: {old})",
    ]
    assert f"cfylogs {old_bundle.version} is current in {PREFIX} again" in steps["rollback"][1]
    # Uninstall stops and disables it before the program goes.
    assert _calls(log, "uninstall") == [
        f"disable --now --quiet cfylogs (current: {old})",
        f"daemon-reload (current: {old})",
    ]
    assert "removed cfylogs from" in steps["uninstall"][1]
