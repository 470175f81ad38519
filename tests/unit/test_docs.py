"""Docs that could drift from code are checked here."""

from __future__ import annotations

from pathlib import Path

from cfylogs.config import settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_readme_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [info.key for info in settings_table() if f"| `{info.key}` |" not in readme]
    assert not missing, f"add these keys to the README configuration table: {missing}"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("## ")]
    assert "make run" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_python_version_is_the_same_everywhere() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject
    assert "Python 3.11+" in (ROOT / "README.md").read_text()
