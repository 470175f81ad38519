"""What the PostgreSQL tests change on the machine, made race-free and cleaned up.

Two things outlive a test process: the system user the clusters run as (when
the tests run as root) and the cluster directories `/tmp/cfylogs-pg-*` with
their postmasters. Several test processes use them at once: the xdist workers
of one run, and the runs of other checkouts on the same machine. So:

- Both are made under one machine-wide lock (`flock` on `/tmp/cfylogs-pg.lock`):
  the user is looked up and, when missing, added inside it (two `useradd` at
  once can both succeed, the second giving the name another uid than the
  first saw), and a cluster directory gets its owner record inside it.
- Every cluster directory records its owner: the pid, that process's start
  time (so a reused pid is not taken for the owner), the boot and the pid
  namespace. `remove_dead_clusters()`, run at the start of every test run,
  stops the postmaster of and deletes each directory whose owner is gone, and
  nothing else: a live run's cluster, one whose owner cannot be judged from
  here (another pid namespace) and one without a record are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_SERVICE_USER = "cfylogs-pg"
#: Overrides the service user's name (the tests of its creation use a throw-away one).
SERVICE_USER_ENV = "CFYLOGS_TEST_PG_USER"
CLUSTER_PREFIX = "cfylogs-pg-"
OWNER_FILE = "owner.json"


def service_user_name() -> str:
    return os.environ.get(SERVICE_USER_ENV) or DEFAULT_SERVICE_USER


def temp_root() -> Path:
    """Where clusters live: /tmp, not pytest's directory (its parents are private to root)."""
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created if missing), released when the holder dies."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def machine_lock() -> contextlib.AbstractContextManager[None]:
    return locked(temp_root() / "cfylogs-pg.lock")


# --- the service user ---------------------------------------------------------------------


def ensure_service_user(name: str | None = None) -> pwd.struct_passwd:
    """The system user the clusters run as when the tests run as root, added if missing.

    Checked to be usable: `runuser` to it must run as the uid /etc/passwd gives."""
    name = name or service_user_name()
    with machine_lock():
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
            user = pwd.getpwnam(name)
    switched = subprocess.run(
        ["runuser", "-u", name, "--", "id", "-u"], capture_output=True, text=True, check=False
    )
    if switched.returncode != 0 or switched.stdout.strip() != str(user.pw_uid):
        raise RuntimeError(
            f"runuser -u {name} does not run as uid {user.pw_uid}: "
            f"{switched.stdout.strip()} {switched.stderr.strip()}"
        )
    return user


# --- owners -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one with the same pid."""

    pid: int
    start: int  # clock ticks after boot (/proc/<pid>/stat, field 22)
    boot: str
    pid_ns: str

    @classmethod
    def of(cls, pid: int | None = None) -> Owner:
        """The running process `pid` (this one by default)."""
        pid = os.getpid() if pid is None else pid
        start = start_time(pid)
        if start is None:
            raise ProcessLookupError(pid)
        return cls(pid, start, _boot_id(), os.readlink("/proc/self/ns/pid"))

    def alive(self) -> bool:
        """False only when this process is surely gone; True when it cannot be told."""
        if self.boot != _boot_id():
            return False  # a reboot ended it
        if self.pid_ns != os.readlink("/proc/self/ns/pid"):
            return True  # its pids are not ours to look up
        return start_time(self.pid) == self.start


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def start_time(pid: int) -> int | None:
    """The start time of a live (not zombie) process, None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None
    return int(fields[19])


def read_owner(cluster: Path) -> Owner | None:
    try:
        return Owner(**json.loads((cluster / OWNER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


# --- cluster directories ------------------------------------------------------------------


def new_cluster_dir(owner: Owner | None = None, base: Path | None = None) -> Path:
    """A new empty `cfylogs-pg-*` directory that records its owner (this process by default)."""
    owner = owner or Owner.of()
    with machine_lock():  # a cleanup never sees it without its record
        root = Path(tempfile.mkdtemp(prefix=CLUSTER_PREFIX, dir=base or temp_root()))
        (root / OWNER_FILE).write_text(json.dumps(asdict(owner)))
    return root


def remove_cluster(root: Path) -> None:
    """Stops the cluster's postmaster, if one runs, and deletes the directory."""
    stop_postmaster(root / "data")
    shutil.rmtree(root, ignore_errors=True)


def remove_dead_clusters(base: Path | None = None) -> list[Path]:
    """Removes the clusters of runs that are gone (a killed run's leftovers); returns them."""
    removed = []
    with machine_lock():
        for root in sorted((base or temp_root()).glob(CLUSTER_PREFIX + "*")):
            if root.is_symlink() or not root.is_dir():
                continue
            owner = read_owner(root)
            if owner is None or owner.alive():
                continue  # made before owner records, or its run is alive
            remove_cluster(root)
            removed.append(root)
    return removed


def postmaster_pid(data: Path) -> int | None:
    """The pid of the postmaster running on `data`, None when none does.

    postmaster.pid may be stale (a killed postmaster) and its pid reused: the
    process counts only if its working directory is `data` (a postmaster's is)."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError):
        return None
    if start_time(pid) is None or Path(cwd) != data.resolve():
        return None
    return pid


def stop_postmaster(data: Path, timeout: float = 20.0) -> None:
    """An immediate shutdown (SIGQUIT, what `pg_ctl stop -m immediate` sends), then SIGKILL.

    Signals, not pg_ctl: the cluster's user may be gone (a newcomer's machine, set
    up anew) and the server binaries too; the postmaster's pid is all it takes."""
    pid = postmaster_pid(data)
    if pid is None:
        return
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if start_time(pid) is None:
                return
            time.sleep(0.05)
    raise RuntimeError(f"the postmaster {pid} of {data} survived SIGKILL")
