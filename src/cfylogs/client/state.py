"""The registrations a consumer keeps between runs: one per server URL, in a JSON file."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


class StateError(Exception):
    """The state file exists but cannot be used; says which and why."""


class StateFile:
    """`{"registrations": {"<url>": {"id": ..., "saved_at": <unix time>}}}`, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def registration(self, url: str) -> str | None:
        entry = self._load().get(_key(url))
        return str(entry["id"]) if isinstance(entry, dict) and "id" in entry else None

    def save(self, url: str, registration_id: str) -> None:
        entries = self._load()
        entries[_key(url)] = {"id": registration_id, "saved_at": time.time()}
        self._write(entries)

    def forget(self, url: str, registration_id: str) -> None:
        """Drop the entry of `url` if it is `registration_id` (a missing file is fine)."""
        entries = self._load()
        if self.registration(url) == registration_id:
            del entries[_key(url)]
            self._write(entries)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}") from None
        entries = data.get("registrations") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise StateError(f"the state file {self.path} is not a cfylogs state file")
        return entries

    def _write(self, entries: dict[str, Any]) -> None:
        # A crash mid-write must not lose the saved registrations: write, fsync, rename.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({"registrations": entries}, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _key(url: str) -> str:
    return url.rstrip("/")
