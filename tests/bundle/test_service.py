"""The install as a service: user, config, data directory, the unit rendered for the prefix
and accepted by `systemd-analyze verify` at the installed paths; uninstall keeps config and
data unless --purge. Run in namespaces of its own (service_steps.sh), so this machine keeps
no user, file or unit of it; systemd does not run here, so nothing is started."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bundle.conftest import Bundle

pytestmark = pytest.mark.slow

STEPS = Path(__file__).with_name("service_steps.sh")
PREFIX = "/opt/cfylogs relay"  # a space, in a place the unit's ProtectHome leaves visible


def _namespaces() -> list[str]:
    if os.geteuid() == 0:
        return ["unshare", "-m", "-n"]
    return ["unshare", "--map-root-user", "-m", "-n"]


def test_service_install_reinstall_uninstall_and_purge(bundle: Bundle, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/ensure-systemd.sh installs it")
    out = tmp_path / "steps"
    out.mkdir()
    done = subprocess.run(
        [*_namespaces(), "bash", str(STEPS), str(bundle.root), str(out), PREFIX],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    steps = {rc.stem: (int(rc.read_text()), rc.with_suffix(".out").read_text())
             for rc in out.glob("*.rc")}  # fmt: skip

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
    assert "\ncfylogs.service\n" in f"\n{state}"  # enabled: wanted by multi-user.target

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
