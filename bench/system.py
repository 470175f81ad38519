"""What the harness needs from the machine: packages, free ports, CPU and memory of processes.

CPU figures come from /proc (utime + stime of a process and its descendants)
so that the server's cost and the load generator's cost are seen side by
side; a load generator near a whole core of its own is the bottleneck, not
the server it drives.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def ensure_commands(commands: dict[str, str]) -> list[str]:
    """Install the Debian package of every missing command; return what is still missing."""
    missing = {cmd: pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None}
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        packages = sorted(set(missing.values()))
        # The update is needed once on a fresh machine; a failure shows in what stays missing.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            env=env,
            capture_output=True,
            check=False,
        )
    return [cmd for cmd in commands if shutil.which(cmd) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces: fields start after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def main_thread_seconds(pid: int) -> float:
    """CPU time of a process's main thread alone (for a Python server: its event loop)."""
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under `path` (what `du` shows), not apparent sizes."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent busy since boot (all processes)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


@dataclass
class CpuUse:
    """CPU used during one measurement, in percent of one core."""

    server_pct: float = 0.0
    client_pct: float = 0.0
    #: Everything else on the machine (other work sharing the cores): the noise.
    others_pct: float = 0.0
    #: Of `server_pct`, the first server process's main thread (the event loop).
    main_thread_pct: float = 0.0
    wall_sec: float = 0.0

    @property
    def server_us(self) -> float:
        """Server CPU time of the measurement, in microseconds."""
        return self.server_pct / 100 * self.wall_sec * 1e6


@contextmanager
def measure_cpu(server_pids: list[int], in_process_client: bool) -> Iterator[CpuUse]:
    """Server CPU from /proc; client CPU from rusage of this process or of waited children.

    A load generator run as a subprocess (wrk, redis-benchmark) is waited for
    inside the block, so its CPU shows in RUSAGE_CHILDREN; a Python client
    runs in this process and shows in RUSAGE_SELF.
    """
    use = CpuUse()
    pids = [pid for root in server_pids for pid in process_tree(root)]
    who = resource.RUSAGE_SELF if in_process_client else resource.RUSAGE_CHILDREN
    before = resource.getrusage(who)
    server_before = cpu_seconds(pids)
    main = server_pids[0] if server_pids else 0
    main_before = main_thread_seconds(main) if main else 0.0
    machine_before = machine_busy_seconds()
    start = time.monotonic()
    try:
        yield use
    finally:
        use.wall_sec = time.monotonic() - start
        after = resource.getrusage(who)
        client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        wall = max(use.wall_sec, 1e-9)
        use.server_pct = 100.0 * (cpu_seconds(pids) - server_before) / wall
        use.client_pct = 100.0 * client / wall
        if main:
            use.main_thread_pct = 100.0 * (main_thread_seconds(main) - main_before) / wall
        machine = 100.0 * (machine_busy_seconds() - machine_before) / wall
        use.others_pct = max(0.0, machine - use.server_pct - use.client_pct)


def machine_line() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) // 1024
    kernel = os.uname().release
    return f"{os.cpu_count()} vCPU {cpu}, {mem} MiB RAM, Linux {kernel}, data dir on {_fs_of()}"


def _fs_of() -> str:
    try:
        out = subprocess.run(
            ["df", "--output=fstype", tempfile.gettempdir()],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return out[-1] if out else "?"
    except OSError:
        return "?"
