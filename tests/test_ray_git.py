"""A track on a Ray cluster (a real head on 127.0.0.1) working in a git repository on the
daemon's host: its attempts re-attached after the daemon was killed, in the window between
git committing an attempt's verified work and the store recording its PASS, or while its
run still goes on; and the daemon's checkout while a run works in a git workspace of its own
on a node."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from . import process_harness as ph
from .agent_harness import git, make_repo, needs_git
from .conftest import WriteTrack
from .ray_head import RayHead
from .test_git_races import pause_at_ref_update

pytestmark = [pytest.mark.ray, needs_git]


def config(tmp_path: Path, head: RayHead, worktrees: bool = False, **ray: str) -> tuple[Path, str]:
    """The daemon's config (every track on the cluster), and its jobs' id prefix."""
    prefix = f"raygit-{secrets.token_hex(4)}-"
    extra = "".join(f'{name} = "{value}"\n' for name, value in ray.items())
    path = tmp_path / "orchestratord.toml"
    path.write_text(
        f'executor = "ray"\n[ray]\naddress = "{head.address}"\npoll_interval = 0.1\n'
        f'job_prefix = "{prefix}"\n{extra}'
        f"[git]\nworktrees = {str(worktrees).lower()}\n"
    )
    return path, prefix


def start(tracks: Path, state: Path, cfg: Path, *args: str) -> subprocess.Popen[bytes]:
    return ph.daemon(tracks, state, "--config", str(cfg), *args)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def run_to_end(tracks: Path, state: Path, cfg: Path) -> int:
    """``start --once``; its exit status."""
    proc = start(tracks, state, cfg, "--once")
    try:
        return proc.wait(120)
    finally:
        kill(proc)


def attempts(state: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(state / "state.db") as db:
        rows = db.execute("SELECT number, state, verdict FROM attempts ORDER BY id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def recorded_commit(state: Path) -> str | None:
    with sqlite3.connect(state / "state.db") as db:
        row = db.execute(
            "SELECT commit_id FROM attempts WHERE verdict = 'PASS' ORDER BY id DESC"
        ).fetchone()
    return None if row is None else row[0]


def open_processes(state: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(state / "state.db") as db:
        rows = db.execute("SELECT role, run_id FROM processes WHERE ended_at IS NULL").fetchall()
    return [(r[0], r[1]) for r in rows]


def events(state: Path) -> list[str]:
    with sqlite3.connect(state / "state.db") as db:
        return [r[0] for r in db.execute("SELECT type FROM events ORDER BY seq")]


def jobs_going(head: RayHead, prefix: str) -> list[str]:
    """Jobs of the daemon (its prefix) the cluster has not ended."""
    jobs = head.get("/api/jobs/")
    assert isinstance(jobs, list)
    return [
        str(job["submission_id"])
        for job in jobs
        if str(job.get("submission_id") or "").startswith(prefix)
        and job.get("status") not in ("SUCCEEDED", "FAILED", "STOPPED")
    ]


def no_job_left(head: RayHead, prefix: str) -> None:
    """Every job of the daemon ends (Ray sees a job end a moment after its command's end, which
    the daemon goes by: a job may still be winding up as the daemon exits)."""
    ph.wait_for(lambda: jobs_going(head, prefix) == [], timeout=30, step=0.2)


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger"
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize(
    ("worktrees", "ref"),
    [
        (False, "refs/heads/main"),  # committed in the checkout
        (True, "refs/heads/orchestratord/t"),  # committed on the track's branch, not merged
    ],
)
def test_a_daemon_killed_once_a_remote_attempts_verified_commit_is_made_records_it(
    ray_head: RayHead,
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
    worktrees: bool,
    ref: str,
) -> None:
    """SIGKILL right after git moved a branch to the verified commit of an attempt that ran on
    the cluster, before the store recorded its PASS. The next daemon re-attaches the attempt
    (its runs outlive a daemon): it must find that commit, not run into "no changes" on each
    attempt and fail the task whose work is committed; nor run anything again, nor leave a
    run, a job or a record open."""
    repo = make_repo(tmp_path / "repo")
    cfg, prefix = config(tmp_path, ray_head, worktrees)
    command = f"echo done > a.txt; echo K >> {tmp_path / 'ledger'}"
    write_track(
        "t",
        [{"id": "K", "command": command, "verify": "grep -qx done a.txt", "max_iterations": 2}],
        track={"workdir": "../repo"},
    )
    state, marker = tmp_path / "state", tmp_path / "hook.pid"
    pause_at_ref_update(repo, ref, marker)
    first = start(tracks_dir, state, cfg)
    try:
        ph.wait_for(marker.exists, timeout=90)
    finally:
        kill(first)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    (repo / ".git" / "hooks" / "reference-transaction").unlink()
    assert attempts(state) == [(1, "running", None)]  # left for the next daemon to re-attach

    assert run_to_end(tracks_dir, state, cfg) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    assert ledger(tmp_path) == ["K"], "nothing ran again"
    assert attempts(state) == [(1, "interrupted", None), (1, "finished", "PASS")]
    commit = recorded_commit(state)
    assert git(repo, "log", "--format=%H", "--grep=^Task: K$", "--all") == commit
    assert git(repo, "rev-parse", "main") == commit
    assert git(repo, "show", "main:a.txt") == "done"
    assert "attempt_reattached" in events(state)
    assert open_processes(state) == []
    no_job_left(ray_head, prefix)
    log = (state / "logs" / "t" / "K.attempt-1.log").read_text()
    assert "recorded now, not run again" in log


@pytest.mark.parametrize("worktrees", [False, True])
def test_a_remote_run_going_on_when_the_daemon_was_killed_is_attached_to_and_committed(
    ray_head: RayHead,
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
    worktrees: bool,
) -> None:
    """The daemon is killed while an attempt's run goes on on the cluster, in the track's tree
    (after it wrote a file); the next daemon re-attaches while it still runs. What the run wrote
    before the restart is its own change, not the tree as it was (nor kept aside and reset from
    under the run, in a worktree of the track's own): it waits for the run, and commits both."""
    repo = make_repo(tmp_path / "repo")
    cfg, prefix = config(tmp_path, ray_head, worktrees)
    started, gate = tmp_path / "started", tmp_path / "gate"
    command = (
        f"echo done > a.txt; echo K >> {tmp_path / 'ledger'}; touch {started}; "
        f"while [ ! -e {gate} ]; do sleep 0.05; done; echo more > b.txt"
    )
    write_track(
        "t",
        [{"id": "K", "command": command, "verify": "test -f a.txt -a -f b.txt"}],
        track={"workdir": "../repo"},
    )
    state = tmp_path / "state"
    first = start(tracks_dir, state, cfg)
    try:
        ph.wait_for(started.exists, timeout=90)
    finally:
        kill(first)
    assert attempts(state) == [(1, "running", None)]
    second = start(tracks_dir, state, cfg, "--once")
    try:
        daemon_log = tmp_path / "daemon.log"
        ph.wait_for(lambda: '"re-attaching"' in daemon_log.read_text(), timeout=60)
        gate.touch()
        assert second.wait(120) == 0, daemon_log.read_text()[-3000:]
    finally:
        kill(second)
    assert ledger(tmp_path) == ["K"], "the run was attached to, not run again"
    assert attempts(state) == [(1, "finished", "PASS")]
    commit = recorded_commit(state)
    assert commit is not None
    assert git(repo, "rev-parse", "main") == commit
    assert sorted(git(repo, "show", "--name-only", "--format=", commit).split()) == [
        "a.txt",
        "b.txt",
    ]
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "for-each-ref", "refs/orchestratord/") == ""  # nothing was put aside
    assert open_processes(state) == []
    no_job_left(ray_head, prefix)


def test_a_git_workspace_run_leaves_the_daemons_checkout_to_the_person_working_there(
    ray_head: RayHead, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A run in a git workspace works in a checkout of its own on the node; its changes arrive
    as a fetched branch. What a person changes in the daemon's checkout meanwhile is theirs: not
    committed as the task's work when it passes, nor put aside and reset when it fails."""
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    make_repo(clone, {"app/version": "1\n", "app/notes": "notes\n"})
    git(clone, "remote", "add", "origin", str(origin))
    git(clone, "push", "-q", "origin", "HEAD:main")
    seed = git(clone, "rev-parse", "HEAD")
    cfg, _ = config(tmp_path, ray_head, work_root=str(tmp_path / "node"))

    def waits(name: str) -> str:
        started, gate = tmp_path / f"{name}.started", tmp_path / f"{name}.gate"
        return f"touch {started}; while [ ! -e {gate} ]; do sleep 0.05; done"

    write_track(
        "g",
        [
            {"id": "BUMP", "command": f"{waits('BUMP')}; echo 2 > version", "verify": "true"},
            {"id": "NOPE", "command": waits("NOPE"), "verify": "false", "max_iterations": 1},
        ],
        track={"executor": {"type": "ray", "workspace": "git"}, "workdir": "../clone/app"},
    )
    proc = start(tracks_dir, tmp_path / "state", cfg, "--once")
    try:
        for name, edit, text in (("BUMP", "notes", "my notes\n"), ("NOPE", "mine", "mine\n")):
            ph.wait_for((tmp_path / f"{name}.started").exists, timeout=90)
            (clone / "app" / edit).write_text(text)  # while the run goes on
            (tmp_path / f"{name}.gate").touch()
        assert proc.wait(120) == 1  # NOPE failed
    finally:
        kill(proc)
    assert attempts(tmp_path / "state") == [(1, "finished", "PASS"), (1, "finished", "FAIL")]
    assert git(clone, "rev-parse", "HEAD") == seed
    assert git(clone, "status", "--porcelain") == "M app/notes\n?? app/mine"
    assert (clone / "app" / "notes").read_text() == "my notes\n"
    assert git(clone, "for-each-ref", "refs/orchestratord/") == ""
