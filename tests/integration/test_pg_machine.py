"""The tests' own PostgreSQL set-up: one user, one cluster per run, a killed run cleaned up.

Each test here works in directories and under a user name of its own, never
on the `cfylogs-pg` user or the clusters that other runs on this machine use.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pgmachine import (
    CLUSTER_PREFIX,
    SERVICE_USER_ENV,
    Owner,
    new_cluster_dir,
    postmaster_pid,
    remove_cluster,
    remove_dead_clusters,
    start_time,
)
from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[2]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="adds a system user: needs root")


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory for clusters in /tmp that the service user can enter (pytest's cannot)."""
    made = Path(tempfile.mkdtemp(prefix="cfylogs-pgtest-"))
    made.chmod(0o755)
    yield made
    for cluster in made.glob(CLUSTER_PREFIX + "*"):
        remove_cluster(cluster)
    shutil.rmtree(made, ignore_errors=True)


def dead_owner() -> Owner:
    """The record of a process that ran and is gone."""
    child = subprocess.Popen(["sleep", "60"])
    owner = Owner.of(child.pid)
    child.kill()
    child.wait()
    return owner


def started(root: Path) -> PgServer:
    server = PgServer(root)
    server.init()
    server.start()
    return server


def answers(server: PgServer) -> bool:
    try:
        with psycopg.connect(server.admin_dsn, connect_timeout=5) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


@root_only
def test_processes_racing_to_add_the_service_user_all_get_the_one_in_passwd(
    tmp_path: Path,
) -> None:
    name = f"cfylogs-t{uuid.uuid4().hex[:8]}"  # never the suite's own user
    go = tmp_path / "go"
    racer = textwrap.dedent(f"""
        import os, time
        from tests.pgmachine import ensure_service_user
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        print(ensure_service_user().pw_uid)
    """)
    env = {**os.environ, SERVICE_USER_ENV: name}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", racer], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    try:
        go.touch()
        seen = [racer.communicate(timeout=60)[0].strip() for racer in racers]
        assert [r.returncode for r in racers] == [0] * len(racers)
        assert seen == [str(pwd.getpwnam(name).pw_uid)] * len(racers)
        entries = [line for line in Path("/etc/passwd").read_text().splitlines()]
        assert len([e for e in entries if e.startswith(f"{name}:")]) == 1
    finally:
        for racer in racers:
            racer.kill()
        subprocess.run(["userdel", name], capture_output=True, check=False)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


def test_a_dead_runs_cluster_is_stopped_and_removed(base: Path) -> None:
    root = new_cluster_dir(dead_owner(), base)
    server = started(root)
    postmaster = postmaster_pid(server.data)
    assert postmaster is not None and answers(server)

    assert remove_dead_clusters(base) == [root]
    assert start_time(postmaster) is None, "its postmaster is gone"
    assert not root.exists()
    assert not answers(server)


def test_a_live_runs_cluster_and_what_cannot_be_judged_are_left_alone(base: Path) -> None:
    live = started(new_cluster_dir(base=base))  # owned by this process
    unrecorded = base / f"{CLUSTER_PREFIX}before-owner-records"
    unrecorded.mkdir()
    me = Owner.of()
    elsewhere = new_cluster_dir(dataclasses.replace(me, pid_ns="pid:[1]"), base)
    reused_pid = new_cluster_dir(dataclasses.replace(me, start=me.start + 1), base)
    rebooted = new_cluster_dir(dataclasses.replace(me, boot="another boot"), base)

    assert remove_dead_clusters(base) == sorted([reused_pid, rebooted])
    assert answers(live) and live.root.exists()
    assert unrecorded.exists() and elsewhere.exists()


def test_a_run_shares_one_cluster_among_its_workers_and_removes_it_at_the_end(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_probe.py").write_text(
        textwrap.dedent("""
            import os
            from pathlib import Path
            from tests.pgmachine import read_owner

            def test_probe(pg_server):
                worker = os.environ["PYTEST_XDIST_WORKER"]
                owner = read_owner(pg_server.root).pid
                line = f"{worker} {pg_server.root} {pg_server.port} {owner}"
                Path(os.environ["PROBE_OUT"], worker).write_text(line)
        """)
    )
    out = tmp_path / "out"
    out.mkdir()
    outer_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    pytest_args = ["-q", "-p", "tests.pgserver", "-n", "2", "--dist", "each", str(tmp_path)]
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", *pytest_args],
        cwd=tmp_path,
        env={**outer_env, "PROBE_OUT": str(out), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 0, output

    seen = sorted(path.read_text().split() for path in out.iterdir())
    assert [worker for worker, *_ in seen] == ["gw0", "gw1"]
    (cluster,) = {root for _, root, _, _ in seen}
    assert len({port for _, _, port, _ in seen}) == 1
    assert {int(owner) for *_, owner in seen} == {run.pid}, "owned by the run's controller"
    assert Path(cluster).name.startswith(CLUSTER_PREFIX)
    assert not Path(cluster).exists(), "the run's last act removes its cluster"
