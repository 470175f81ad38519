"""`cfylogs init`: the default file loads back as the defaults and names every key."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cfylogs.cli.configfile import render_default_config
from cfylogs.config import CONFIG_FILE_NAME, Settings, load_settings, settings_table

_COMMENTED_KEY = re.compile(r"^(\s*)# ([A-Za-z_][\w-]*):$", re.MULTILINE)


def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= _flatten(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def test_the_default_file_loads_back_as_the_defaults_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text(render_default_config())
    loaded = load_settings(path, environ={})
    assert dataclasses.replace(loaded, source="defaults") == Settings()
    # Sections whose keys are all commented out (security:) are empty, not unknown.
    assert "unknown setting" not in caplog.text


def test_every_key_is_in_the_file_with_its_help_and_variable() -> None:
    text = render_default_config()
    # keys without a default are written commented out: uncomment them to count them
    keys = _flatten(yaml.safe_load(_COMMENTED_KEY.sub(r"\1\2:", text)))
    assert keys == {info.key for info in settings_table()}
    for info in settings_table():
        assert f"# env: {info.env}\n" in text
        assert info.help.split()[0] in text


def _init(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfylogs", "init", *args], capture_output=True, text=True
    )


def test_init_writes_into_a_directory_and_refuses_to_overwrite(tmp_path: Path) -> None:
    assert _init(str(tmp_path)).returncode == 0
    target = tmp_path / CONFIG_FILE_NAME
    assert target.read_text() == render_default_config()
    target.write_text("buffer:\n  size: 5\n")
    refused = _init(str(target))
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert target.read_text() == "buffer:\n  size: 5\n"
    assert _init(str(target), "--force").returncode == 0
    assert target.read_text() == render_default_config()
