"""What an unclean night leaves in git, and what the daemon makes of it: the worktree of a
track that ended some other way than by its last PASS, a ``git worktree add`` that was killed,
a lock file that stays in place."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator import agentrun, runbranch
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event

from . import live_harness as lh
from . import process_harness as ph
from .agent_harness import git, make_repo, needs_git, write_config
from .conftest import WriteTrack
from .daemon_harness import run_once
from .test_git_locks import events, kill_group_when

pytestmark = [pytest.mark.anyio, needs_git]


def worktrees(repo: Path) -> list[str]:
    listed = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [line.removeprefix("worktree ") for line in listed if line.startswith("worktree ")]


async def test_a_track_whose_last_task_is_skipped_while_it_runs_loses_its_worktree_after_it_ends(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The skipped attempt's processes take a while to end (they trap SIGTERM): the worktree
    goes only once they have, and its branch stays."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = true\n")
    ledger = tmp_path / "ledger"
    command = (
        f"trap 'sleep 0.5; echo ended >> {ledger}; exit 0' TERM; "
        f"echo started >> {ledger}; sleep 30 & wait"
    )
    write_track("t", [{"id": "K", "command": command}], track={"workdir": "../repo"})
    seen: list[str] = []  # the ledger when the worktree was removed
    async with lh.live_daemon(
        tracks_dir, kill_grace=5, services=[agentrun.service], watch=False
    ) as live:
        live.engine.listeners.append(
            lambda kind, _, __: (
                seen.append(ledger.read_text()) if kind == "worktree_removed" else None
            )
        )
        await live.until(ledger.exists)
        tree = agentrun.of(live.engine).trees.tree("t")
        assert tree is not None
        assert tree.own
        assert tree.root.is_dir()
        live.engine.order(TaskKey("t", "K"), Event.ORDER_SKIP, "not tonight")
        await live.until(lambda: bool(live.kinds("worktree_removed")))
        assert seen == ["started\nended\n"]
        (event,) = live.kinds("worktree_removed")
        assert event[1:] == ("t", {"path": str(tree.root), "branch": "orchestratord/t"})
    assert not tree.root.exists()
    assert worktrees(repo) == [str(repo)]
    assert git(repo, "branch", "--list", "orchestratord/t") == "orchestratord/t"


@pytest.mark.parametrize("how", ["skip", "remove"])
async def test_a_track_that_ends_with_no_task_running_loses_its_worktree(
    how: str, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A ran; B waits for a task of another track that failed. The track ends when B is
    skipped, or removed from the file: no Ralph loop of the track runs then. The daemon is
    not idle from the moment the track is complete (``--once`` waits for the clean-up)."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = true\n")
    path = write_track(
        "t",
        [
            {"id": "A", "command": "echo a > a.txt"},
            {"id": "B", "command": "echo b > b.txt", "dependencies": ["other:X"]},
        ],
        track={"workdir": "../repo"},
    )
    write_track("other", [{"id": "X", "command": "exit 1", "max_iterations": 1}])
    async with lh.live_daemon(tracks_dir, services=[agentrun.service]) as live:
        await live.until(lambda: live.status("t:A") is Status.COMPLETE)
        await live.until(lambda: live.status("other:X") is Status.FAILED)
        tree = agentrun.of(live.engine).trees.tree("t")
        assert tree is not None
        assert tree.root.is_dir()
        busy: list[bool] = []  # whether the daemon could stop when the track completed
        live.engine.listeners.append(
            lambda kind, _, __: (
                busy.append(live.engine.can_progress()) if kind == "track_complete" else None
            )
        )
        if how == "skip":
            live.engine.order(TaskKey("t", "B"), Event.ORDER_SKIP, "not needed")
        else:
            lh.set_status(path, "B", None)
        await live.until(lambda: bool(live.kinds("worktree_removed")))
        assert busy == [True]
    assert not tree.root.exists()
    assert worktrees(repo) == [str(repo)]


async def test_a_track_finished_while_the_daemon_was_stopped_loses_its_worktree_at_start(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """B is skipped in the file while the daemon is stopped: the next daemon finds the track
    done, and the worktree the last one made is removed (one with changes is kept)."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = true\n")

    def tasks(prefix: str) -> list[dict[str, Any]]:
        return [
            {"id": f"{prefix}A", "command": "echo a > a.txt"},
            {"id": f"{prefix}B", "command": "echo b > b.txt", "dependencies": ["other:X"]},
        ]

    path = write_track("t", tasks(""), track={"workdir": "../repo"})
    write_track("u", tasks("U"), track={"workdir": "../repo"})
    write_track("other", [{"id": "X", "command": "exit 1", "max_iterations": 1}])
    first = await run_once(tracks_dir)
    assert first.code == 1
    trees = agentrun.of(first.engine).trees
    repo_of = trees.repo_of(repo)
    assert repo_of is not None
    t_root, u_root = trees.worktree_path("t", repo_of), trees.worktree_path("u", repo_of)
    assert t_root.is_dir()
    assert u_root.is_dir()
    (u_root / "mine.txt").write_text("a person's work\n")
    lh.set_status(path, "B", "skipped")
    lh.set_status(tracks_dir / "u.json", "UB", "skipped")
    again = await run_once(tracks_dir)
    assert again.code == 1  # other:X failed
    assert not t_root.exists()
    assert worktrees(repo) == [str(repo), str(u_root)]
    found = [e for e in again.store().events() if e.type.startswith("worktree")]
    assert sorted((e.type, e.track) for e in found) == [
        ("worktree_kept", "u"),
        ("worktree_removed", "t"),
    ]


# ---------------------------------------------------------------------- a killed worktree add


def stall_checkouts(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A smudge filter on the repository's ``*.txt`` that, while the returned ``block`` file
    exists, notes its pid in the returned ``hit`` file and stalls: a checkout (the one ``git
    worktree add`` makes) waits there."""
    block, hit = tmp_path / "block", tmp_path / "hit"
    script = tmp_path / "stall"
    script.write_text(
        f"#!/bin/sh\nif [ -e {block} ]; then echo $$ > {hit}.tmp && mv {hit}.tmp {hit}; "
        "sleep 60; fi\nexec cat\n"
    )
    script.chmod(0o755)
    git(repo, "config", "filter.stall.smudge", str(script))
    git(repo, "config", "filter.stall.clean", "cat")
    block.touch()
    return block, hit


def kill_group_while_adding_the_worktree(
    repo: Path, tracks: Path, state: Path, tmp_path: Path
) -> None:
    """Run a daemon until its ``git worktree add`` checks files out, then kill its whole
    process group, git with it (as ``systemctl stop`` does with the daemon's cgroup)."""
    block, hit = stall_checkouts(repo, tmp_path)
    kill_group_when(hit, tracks, state)
    block.unlink()
    locked = repo / ".git" / "worktrees" / "t" / "locked"
    assert locked.read_text() == "initializing\n"


def two_tracks(tmp_path: Path, write_track: WriteTrack) -> Path:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n", ".gitattributes": "*.txt filter=stall\n"})
    write_config(tmp_path, "[git]\nworktrees = true\n")
    write_track("t", [{"id": "K", "command": "echo b > b.txt"}], track={"workdir": "../repo"})
    return repo


def test_a_worktree_whose_add_was_killed_is_made_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The daemon and its git are killed while git makes the track's worktree: git's entry
    stays locked "initializing", the checkout half done. After a restart the daemon removes
    it and makes it again (logged and journaled), and the task runs there."""
    repo = two_tracks(tmp_path, write_track)
    state = tmp_path / "state"
    kill_group_while_adding_the_worktree(repo, tracks_dir, state, tmp_path)
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    (remade,) = events(state, "worktree_remade")
    assert "a `git worktree add` of it was cut short" in str(remade["reason"])
    assert "half-made worktree removed" in again.stderr
    assert git(repo, "show", "main:b.txt") == "b"
    assert worktrees(repo) == [str(repo)]  # made again, and removed with the track done
    assert not (repo / ".git" / "worktrees").exists()
    assert git(repo, "for-each-ref", "refs/orchestratord/") == ""  # no "leftovers" of it


def test_a_half_made_worktree_where_a_git_runs_is_left_and_the_reason_says_what_to_run(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A git runs in the repository (it might be the one making the worktree): the daemon
    leaves the half-made worktree, and the blocked task's reason gives the command that
    removes it; run, it lets the task run."""
    repo = two_tracks(tmp_path, write_track)
    state = tmp_path / "state"
    kill_group_while_adding_the_worktree(repo, tracks_dir, state, tmp_path)
    argv = ["git", "cat-file", "--batch"]
    with subprocess.Popen(argv, cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as busy:
        try:
            done = ph.start_once(tracks_dir, state)
        finally:
            busy.kill()
    assert done.returncode == 1, done.stderr
    error = json.loads((tracks_dir / "t.json").read_text())["features"][0]["error"]
    assert f"git process {busy.pid} (git cat-file --batch) runs in {repo}" in error
    command = error.split("run: ", 1)[1].split("; then set the task back to pending")[0]
    assert "rm -rf" in command
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    lh.set_status(tracks_dir / "t.json", "K", "pending")
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert git(repo, "show", "main:b.txt") == "b"
    assert not events(state, "worktree_remade")


# ---------------------------------------------------------------------- a lock left in place


def test_a_lock_left_in_place_is_reported_once_while_it_stays(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A lock file in the checkout that a process holds open is in the way of every attempt
    (``packed-refs.lock``: it does not stop a commit) and left in place each time: it is
    logged and journaled once, not at every attempt; made again (another file), once more."""
    repo = make_repo(tmp_path / "repo")
    lock = repo / ".git" / "packed-refs.lock"
    remake = f"rm {lock} && touch {lock}"
    tasks = [
        {"id": "A", "command": "echo a > a.txt"},
        {"id": "B", "command": f"echo b > b.txt && {remake}", "dependencies": ["A"]},
        {"id": "C", "command": "echo c > c.txt", "dependencies": ["B"]},
        {"id": "D", "command": "echo d > d.txt", "dependencies": ["C"]},
    ]
    write_track("t", tasks, track={"workdir": "../repo"})
    with lock.open("wb") as handle:
        holder = subprocess.Popen(["sleep", "60"], stdout=handle, cwd=tmp_path)
    with holder:
        try:
            done = ph.start_once(tracks_dir, tmp_path / "state")
        finally:
            holder.kill()
    assert done.returncode == 0, done.stderr
    assert git(repo, "log", "--format=%s", "-4").count("\n") == 3  # every task committed
    left = events(tmp_path / "state", "git_lock_left")
    assert [e["path"] for e in left] == [str(lock), str(lock)]
    assert f"process {holder.pid} (sleep 60) has it open" in str(left[0]["reason"])
    assert "after the daemon started" in str(left[1]["reason"])  # the one B made
    assert done.stderr.count("git lock file left in place") == 2
    log = (tmp_path / "state" / "logs" / "t" / "D.attempt-1.log").read_text()
    assert f"left the git lock file {lock} in place" in log  # each attempt's log says so


# ---------------------------------------------------------------------- a killed fetch of a run


def hold_open(path: Path) -> subprocess.Popen[bytes]:
    """A process that has ``path`` open (as a git writing it would)."""
    with path.open("ab") as handle:
        return subprocess.Popen(["sleep", "60"], stdout=handle)


@pytest.mark.parametrize("live", [False, True])
async def test_a_lock_a_killed_fetch_left_on_a_runs_branch(live: bool, tmp_path: Path) -> None:
    """A daemon killed while it fetched a remote run's branch leaves the lock of that ref; the
    next daemon fetches the same branch for the re-attached attempt. A stale lock is removed
    and the fetch succeeds; one a process holds open is left, and the reason says so."""
    remote = make_repo(tmp_path / "remote")
    git(remote, "checkout", "-q", "-b", "orchestratord/a7-run")
    (remote / "b.txt").write_text("b\n")
    git(remote, "add", "b.txt")
    git(remote, "commit", "-qm", "the run's work")
    commit = git(remote, "rev-parse", "HEAD")
    local = make_repo(tmp_path / "local")
    lock = local / ".git" / "refs" / "heads" / "orchestratord" / "a7-run.lock"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(b"0" * 40)
    holder = hold_open(lock) if live else None
    try:
        if live:
            with pytest.raises(runbranch.RunBranchError) as failed:
                await runbranch.fetch(str(local), str(remote), "orchestratord/a7-run", commit)
            assert holder is not None
            assert f"left it in place: process {holder.pid} (sleep 60) has it open" in str(
                failed.value
            )
            assert lock.exists()
        else:
            got = await runbranch.fetch(str(local), str(remote), "orchestratord/a7-run", commit)
            assert got == "refs/heads/orchestratord/a7-run"
            assert git(local, "rev-parse", got) == commit
            assert not lock.exists()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
