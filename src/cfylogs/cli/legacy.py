"""`cfylogs import-legacy`: take over the state of the Java alien4cloud-cfy-logs server.

The Java server keeps under its `home_directory` a `registrations.json` (a JSON
array of registration ids) and, per registration, a directory of flushed,
unacknowledged batches `<batchId>.json`, each `{"id": <batchId>, "entries":
[...]}`; the lowest id is the next to deliver. Each registration is adopted
under the same id with those batches (`Storage.adopt`), so every orchestrator
goes on where it was, with batch ids growing from the legacy ones.

Nothing is dropped silently: a file that is not imported is reported (and
makes the exit status 1): a batch file that cannot be read, a file in a
registration's directory that is not named `<batchId>.json` (the Java
server keeps nothing else there), a directory `registrations.json` does not
name. A registration is adopted once, with the batches readable then:
running the import again adopts nothing twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from cfylogs.storage import embedded_store_exists
from cfylogs.storage.base import Storage

if TYPE_CHECKING:
    from cfylogs.config import Settings

REGISTRATIONS_FILE = "registrations.json"
_BATCH_FILE = re.compile(r"^([0-9]+)\.json$")
#: Batch ids are stored as 64-bit integers; the Java server's are longs too.
_MAX_BATCH_ID = 2**63 - 1
#: What the HTTP API accepts as a registration id (see cfylogs.openapi).
_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


class LegacyError(Exception):
    """The legacy home cannot be imported at all (nothing was changed)."""


class _BatchFile(msgspec.Struct):
    id: int
    entries: list[msgspec.Raw]


@dataclass(frozen=True)
class LegacyBatch:
    id: int
    entries: list[bytes]


@dataclass(frozen=True)
class Problem:
    """Something with events in it that is not imported; the operator must look."""

    path: Path
    reason: str


@dataclass
class LegacyRegistration:
    id: str
    batches: list[LegacyBatch] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(len(b.entries) for b in self.batches)

    def describe(self) -> str:
        if not self.batches:
            return "no pending batch; new batch ids start at 0"
        ids = ", ".join(str(b.id) for b in self.batches)
        return (
            f"{len(self.batches)} batches (ids {ids}), {self.events} events; "
            f"new batch ids start at {self.batches[-1].id + 1}"
        )


@dataclass
class LegacyHome:
    """The registration ids; their batches are read one registration at a time."""

    path: Path
    registration_ids: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: Harmless oddities (batch files without entries, empty stray directories).
    notes: list[Problem] = field(default_factory=list)


def read_legacy_home(path: Path) -> LegacyHome:
    """The ids and the unlisted directories. Raises `LegacyError` if registrations.json is
    unusable (then nothing is imported)."""
    ids = _registration_ids(path / REGISTRATIONS_FILE)
    home = LegacyHome(path, ids)
    for child in sorted(path.iterdir()):
        if child.is_dir() and child.name not in ids:
            batches = sorted(child.glob("*.json"))
            target = home.problems if batches else home.notes
            target.append(
                Problem(child, f"not named in {REGISTRATIONS_FILE} ({len(batches)} batch files)")
            )
    return home


def is_legacy_home(path: Path) -> bool:
    """Whether `path` holds the Java server's state (its registrations.json).

    False when `path` cannot be read: the store, opened next, says what is wrong.
    """
    try:
        return (path / REGISTRATIONS_FILE).is_file()
    except OSError:
        return False


def _registration_ids(path: Path) -> list[str]:
    try:
        data = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        raise LegacyError(
            f"{path} not found: is this the Java server's home_directory (~/.a4ccfylogs)?"
        ) from None
    except (OSError, msgspec.DecodeError, RecursionError) as exc:
        raise LegacyError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(i, str) and _ID.match(i) for i in data):
        raise LegacyError(f"{path} is not a JSON array of registration ids")
    return list(dict.fromkeys(data))  # in order, once each


def read_registration(home: LegacyHome, registration_id: str) -> LegacyRegistration:
    """One registration's batches, in memory only while it is imported; problems noted."""
    reg = LegacyRegistration(registration_id)
    directory = home.path / registration_id
    if not directory.is_dir():
        return reg  # every batch was acknowledged: the Java server keeps no directory
    numbered: list[tuple[int, Path]] = []
    for child in directory.iterdir():
        match = _BATCH_FILE.match(child.name)
        if match is None:
            home.problems.append(Problem(child, "not a batch file (named <batchId>.json)"))
        elif len(match.group(1)) > 19 or int(match.group(1)) > _MAX_BATCH_ID:
            home.problems.append(Problem(child, "damaged: the batch id is out of range"))
        else:
            numbered.append((int(match.group(1)), child))
    for batch_id, path in sorted(numbered):
        batch = _read_batch(home, batch_id, path)
        if batch is not None:
            reg.batches.append(batch)
    return reg


def _read_batch(home: LegacyHome, batch_id: int, path: Path) -> LegacyBatch | None:
    try:
        parsed = msgspec.json.decode(path.read_bytes(), type=_BatchFile)
    except (OSError, msgspec.DecodeError, RecursionError) as exc:
        home.problems.append(Problem(path, f"damaged: {exc}"))
        return None
    if parsed.id != batch_id:
        home.problems.append(Problem(path, f"damaged: it holds batch {parsed.id}"))
        return None
    entries = [bytes(raw) for raw in parsed.entries]
    if not all(entry.startswith(b"{") for entry in entries):
        home.problems.append(Problem(path, "damaged: an entry is not a JSON object"))
        return None
    if not entries:
        home.notes.append(Problem(path, "no entries; nothing to import"))
        return None
    return LegacyBatch(batch_id, entries)


@dataclass
class ImportResult:
    #: (id, batches, events) of each registration adopted.
    adopted: list[tuple[str, int, int]] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


async def import_home(
    home: LegacyHome,
    store: Storage | None,
    now: float,
    echo: Callable[[str], None],
    dry_run: bool = False,
) -> ImportResult:
    """Adopt every registration of `home` not in the store yet, printing what is done.

    With `dry_run`, nothing is written; `store` (None: an empty one) only tells
    which registrations exist already.
    """
    if store is None and not dry_run:
        raise ValueError("an import needs a store; only a dry run goes without one")
    result = ImportResult()
    known = {r.id for r in await store.registrations()} if store is not None and dry_run else set()
    verb = "would adopt" if dry_run else "adopted"
    for registration_id in home.registration_ids:
        reg = read_registration(home, registration_id)
        if dry_run or store is None:
            fresh = reg.id not in known
        else:
            batches = [(b.id, b.entries) for b in reg.batches]
            fresh = await store.adopt(reg.id, batches, now)
        if fresh:
            result.adopted.append((reg.id, len(reg.batches), reg.events))
            echo(f"{verb} {reg.id}: {reg.describe()}")
        else:
            result.existing.append(reg.id)
            echo(f"skipped {reg.id}: already in the store (imported before?)")
    return result


def problem_lines(home: LegacyHome) -> list[str]:
    """What was not imported, one line each (for stderr)."""
    return [f"NOT IMPORTED {p.path}: {p.reason}" for p in home.problems]


def summary(home: LegacyHome, result: ImportResult, dry_run: bool) -> list[str]:
    """The closing lines after the problems: the notes, then the totals."""
    lines = [f"note {p.path}: {p.reason}" for p in home.notes]
    batches = sum(b for _, b, _ in result.adopted)
    events = sum(e for _, _, e in result.adopted)
    lines.append(
        f"{'would adopt' if dry_run else 'adopted'} {len(result.adopted)} registrations "
        f"({batches} batches, {events} events); {len(result.existing)} already present; "
        f"{len(home.problems)} problems"
    )
    return lines


async def run_import(
    settings: Settings, home: LegacyHome, dry_run: bool, echo: Callable[[str], None]
) -> ImportResult:
    """Open the store of `settings` (unless a dry run has none to look at), import, close."""
    from cfylogs.storage import create_storage

    # A dry run must not create the embedded store just to find it empty.
    embedded = settings.storage_backend == "sqlite"
    if dry_run and embedded and not embedded_store_exists(settings.home_directory):
        return await import_home(home, None, time.time(), echo, dry_run=True)
    store = create_storage(settings)
    await store.open()
    try:
        return await import_home(home, store, time.time(), echo, dry_run)
    finally:
        await store.close()
