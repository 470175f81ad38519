"""`cfylogs init`: the commented default config file, generated from the settings table.

Generated, not kept as a template, so that it can never drift from
`config.Settings`: every key appears with its default, its help and its
environment variable. Keys without a default are written commented out.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from cfylogs.config import CONFIG_FILE_NAME, ENV_PREFIX, SettingInfo, Size, settings_table

_HEADER = f"""\
# {CONFIG_FILE_NAME}: configuration of cfylogs (written by `cfylogs init`).
#
# The same file and keys as the Java alien4cloud-cfy-logs, plus cfylogs' own.
# `cfylogs serve` looks for it in ./config/, then ./, unless --config (or
# {ENV_PREFIX}CONFIG) names it. Each key can also be set by the environment
# variable shown beside it, which wins over this file. Sizes take units
# (16MiB, 500MB, 1GiB). Every value below is the default.
"""

_UNITS = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def render_default_config() -> str:
    """The whole file: a YAML mapping nested by the dots of the keys, with comments."""
    tree: dict[str, Any] = {}
    for info in settings_table():
        node = tree
        *parents, leaf = info.key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = info
    lines = [_HEADER.rstrip()]
    _render(tree, 0, lines)
    return "\n".join(lines) + "\n"


def _render(tree: dict[str, Any], depth: int, lines: list[str]) -> None:
    indent = "  " * depth
    for name, node in tree.items():
        if depth == 0:
            lines.append("")
        if isinstance(node, dict):
            lines.append(f"{indent}{name}:")
            _render(node, depth + 1, lines)
            continue
        for text in textwrap.wrap(node.help, 88 - len(indent)):
            lines.append(f"{indent}# {text}")
        lines.append(f"{indent}# env: {node.env}")
        value = _scalar(node)
        lines.append(f"{indent}# {name}:" if value is None else f"{indent}{name}: {value}")


def _scalar(info: SettingInfo) -> str | None:
    value = info.default
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and isinstance(info.kind, Size):
        return _size(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Path):
        return json.dumps(_home_relative(value))
    return json.dumps(str(value))  # a JSON string is a YAML string


def _size(value: int) -> str:
    for unit, factor in _UNITS:
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _home_relative(path: Path) -> str:
    """`${user.home}/...` rather than this user's home: the file is for the service user."""
    try:
        return "${user.home}/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def write_default_config(path: Path, force: bool = False) -> Path:
    """Write the file at `path` (or inside it, if a directory); refuse to overwrite.

    Raises FileExistsError unless `force`.
    """
    target = path / CONFIG_FILE_NAME if path.is_dir() else path
    if target.exists() and not force:
        raise FileExistsError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_default_config(), encoding="utf-8")
    return target
