"""Lock files a killed git leaves behind: a restarted daemon removes the stale ones (and says
so), and leaves one that may be live, saying which file it is and why it stays."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator import gitlocks
from orchestrator.clock import SystemClock
from orchestrator.model import TaskKey
from orchestrator.store import Store

from . import process_harness as ph
from .agent_harness import git, make_repo, needs_git, write_config
from .conftest import WriteTrack
from .test_git_races import pause_at_ref_update

pytestmark = [needs_git]


def kill_group_at_ref_update(
    repo: Path, ref: str, tracks: Path, state: Path, tmp_path: Path
) -> None:
    """Run a daemon until git holds ``ref``'s lock to move it, then kill the daemon's whole
    process group, git with it (as ``systemctl stop`` does with the daemon's cgroup)."""
    marker = tmp_path / "hook.pid"
    pause_at_ref_update(repo, ref, marker, state="prepared")
    kill_group_when(marker, tracks, state)
    (repo / ".git" / "hooks" / "reference-transaction").unlink()


def kill_group_when(marker: Path, tracks: Path, state: Path) -> None:
    """Run a daemon until ``marker`` (the pid of a process its git work runs, which waits)
    exists, then kill the daemon's whole process group, git with it (as ``systemctl stop``
    does with the daemon's cgroup); return once that process is gone."""
    proc = ph.daemon(tracks, state)
    try:
        ph.wait_for(marker.exists)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    ph.wait_for(lambda: not ph.alive(int(marker.read_text())))


def events(state: Path, kind: str) -> list[Mapping[str, Any]]:
    store = Store.open(state, SystemClock())
    return [e.data for e in store.events() if e.type == kind]


@pytest.mark.parametrize("worktrees", [True, False])
def test_locks_left_by_a_killed_git_are_removed_when_the_daemon_starts_again(
    worktrees: bool, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The daemon and its git are killed while git commits an attempt's work: git's lock
    files stay (the branch's, HEAD's; an index lock and the daemon's scratch index lock, as a
    git killed while writing them leaves them). After a restart, every later attempt of the
    track ended blocked on "File exists"; now the stale locks are removed, logged and
    journaled, and the task completes."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, f"[git]\nworktrees = {str(worktrees).lower()}\n")
    write_track("t", [{"id": "K", "command": "echo done > a.txt"}], track={"workdir": "../repo"})
    state = tmp_path / "state"
    branch = "refs/heads/orchestratord/t" if worktrees else "refs/heads/main"
    kill_group_at_ref_update(repo, branch, tracks_dir, state, tmp_path)
    common = repo / ".git"
    gitdir = next((common / "worktrees").iterdir()) if worktrees else common
    left = [common / f"{branch}.lock"]
    assert all(p.exists() for p in left), sorted(map(str, common.rglob("*.lock")))
    # What git leaves when it is killed while it writes an index: the lock, half written.
    for path in (gitdir / "index.lock", state / "git" / "t.index.lock"):
        path.write_bytes(b"DIRC\0\0")
        left.append(path)
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    attempts = Store.open(state, SystemClock()).attempts(TaskKey("t", "K"))
    assert [(a.state, a.verdict) for a in attempts] == [("interrupted", None), ("finished", "PASS")]
    assert not [p for p in left if p.exists()]
    removed = {str(e["path"]): str(e["reason"]) for e in events(state, "git_lock_removed")}
    assert {str(p.resolve()) for p in left} <= {str(Path(p).resolve()) for p in removed}
    assert "stale git lock file removed" in again.stderr
    assert str(left[0].resolve()) in again.stderr
    assert git(repo, "show", "main:a.txt") == "done"
    assert git(repo, "status", "--porcelain") == ""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


def test_a_lock_in_a_checkout_that_a_process_holds_open_is_left_and_the_reason_names_it(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, holder: list[subprocess.Popen[bytes]]
) -> None:
    """A lock in a person's checkout, older than the daemon, but open in a live process: it
    may be live, so the daemon leaves it; the blocked task's reason says which file to remove
    and why the daemon did not."""
    repo = make_repo(tmp_path / "repo")
    write_track("t", [{"id": "K", "command": "echo done > a.txt"}], track={"workdir": "../repo"})
    lock = repo / ".git" / "refs" / "heads" / "main.lock"
    with open(lock, "wb") as handle:
        holder.append(subprocess.Popen(["sleep", "60"], stdout=handle, cwd=tmp_path))
    time.sleep(0.05)  # the daemon starts later than the lock was made
    done = ph.start_once(tracks_dir, tmp_path / "state")
    assert done.returncode == 1, done.stderr
    task = json.loads((tracks_dir / "t.json").read_text())["features"][0]
    assert task["status"] == "blocked"
    error = task["error"]
    assert f"rm '{lock.resolve()}'" in error
    assert f"process {holder[0].pid} (sleep 60) has it open" in error
    assert lock.exists()
    assert "git lock file left in place" in done.stderr


def test_a_lock_that_appears_while_an_attempt_runs_is_explained(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A lock made after the daemon started (a person's git, say) is never removed."""
    repo = make_repo(tmp_path / "repo")
    lock = repo / ".git" / "refs" / "heads" / "main.lock"
    write_track(
        "t",
        [{"id": "K", "command": f"echo done > a.txt && touch {lock}"}],
        track={"workdir": "../repo"},
    )
    done = ph.start_once(tracks_dir, tmp_path / "state")
    assert done.returncode == 1, done.stderr
    error = json.loads((tracks_dir / "t.json").read_text())["features"][0]["error"]
    assert error.startswith("git: verified, but not committed: ")
    assert "it was not there when the attempt started" in error
    assert f"rm '{lock.resolve()}'" in error
    assert lock.exists()


# ---------------------------------------------------------------------- the rules, one by one


def checkout(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    return repo, repo / ".git"


def found(repo: Path, scratch: Path, own: bool = False) -> list[gitlocks.Candidate]:
    common = repo / ".git"
    return gitlocks.candidates(repo, common, common, own, "main", None, scratch)


@contextlib.contextmanager
def committing(repo: Path, common: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A person's ``git commit -a`` in ``repo``, its editor open (``index.lock`` held in
    ``common``); at the end, killed with its editor (a session of its own)."""
    (repo / "a.txt").write_text("b\n")
    editor = tmp_path / "editor"
    editor.write_text("#!/bin/sh\nexec sleep 60\n")
    editor.chmod(0o755)
    person = subprocess.Popen(
        ["git", "commit", "-a", "-q"],
        cwd=repo,
        env={**ph.clean_env(), "GIT_EDITOR": str(editor)},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        ph.wait_for((common / "index.lock").exists)
        yield person
    finally:
        os.killpg(person.pid, signal.SIGKILL)
        person.wait(10)


def test_a_checkout_lock_older_than_the_daemon_and_held_by_nobody_is_stale(tmp_path: Path) -> None:
    repo, common = checkout(tmp_path)
    for name in ("index.lock", "HEAD.lock", "refs/heads/main.lock", "packed-refs.lock"):
        (common / name).write_text("")
    result = gitlocks.sweep(found(repo, tmp_path / "s.index"), time.time() + 1)
    assert sorted(f.path.name for f in result if f.removed) == [
        "HEAD.lock",
        "index.lock",
        "main.lock",
        "packed-refs.lock",
    ]
    assert all("older than the daemon's start" in f.why for f in result)
    assert not list(common.rglob("*.lock"))


def test_a_checkout_lock_younger_than_the_daemon_is_left(tmp_path: Path) -> None:
    repo, common = checkout(tmp_path)
    (common / "index.lock").write_text("")
    result = gitlocks.sweep(found(repo, tmp_path / "s.index"), time.time() - 60)
    assert [(f.removed, f.path.name) for f in result] == [(False, "index.lock")]
    assert "after the daemon started" in result[0].why
    assert (common / "index.lock").exists()


@pytest.mark.skipif(not gitlocks.inspectable(), reason="needs /proc to see processes")
def test_a_person_committing_in_the_checkout_keeps_the_index_lock(tmp_path: Path) -> None:
    """``git commit`` holds ``index.lock`` while the editor is open, with the file closed:
    only the git process running in the checkout tells that it is live."""
    repo, common = checkout(tmp_path)
    with committing(repo, common, tmp_path) as person:
        assert gitlocks.holders([common / "index.lock"]) == {}
        result = gitlocks.sweep(found(repo, tmp_path / "s.index"), time.time() + 1)
        assert [(f.removed, f.path.name) for f in result] == [(False, "index.lock")]
        assert f"git process {person.pid} (git commit -a -q) runs in" in result[0].why
    # Killed: the lock is stale now.
    result = gitlocks.sweep(found(repo, tmp_path / "s.index"), time.time() + 1)
    assert [(f.removed, f.path.name) for f in result] == [(True, "index.lock")]


@pytest.mark.skipif(not gitlocks.inspectable(), reason="needs /proc to see processes")
def test_a_git_at_work_is_found_and_the_daemons_own_are_left_out_when_asked(
    tmp_path: Path,
) -> None:
    """``theirs``: the gits this process (the daemon) started do not count; a git another
    process started does."""
    repo, _ = checkout(tmp_path)
    argv = ["git", "cat-file", "--batch"]
    with subprocess.Popen(argv, cwd=repo, stdin=subprocess.PIPE) as own:
        try:
            ph.wait_for(lambda: gitlocks.git_at_work([repo]) is not None)  # (exec'd by now)
            found = gitlocks.git_at_work([repo])
            assert found == f"git process {own.pid} (git cat-file --batch) runs in {repo.resolve()}"
            assert gitlocks.git_at_work([repo], theirs=True) is None
            assert gitlocks.git_at_work([tmp_path / "elsewhere"]) is None
            wrapped = ["sh", "-c", "git cat-file --batch; :"]  # a git this one did not start
            with subprocess.Popen(wrapped, cwd=repo, stdin=subprocess.PIPE) as other:
                try:
                    ph.wait_for(lambda: gitlocks.git_at_work([repo], theirs=True) is not None)
                finally:
                    other.kill()
        finally:
            own.kill()


def test_the_scratch_index_lock_is_stale_unless_open(tmp_path: Path) -> None:
    """The daemon's scratch index is its own: its lock is stale whatever its age."""
    repo, _ = checkout(tmp_path)
    scratch = tmp_path / "git" / "t.index"
    scratch.parent.mkdir()
    lock = scratch.with_name("t.index.lock")
    lock.write_text("")
    result = gitlocks.sweep(found(repo, scratch), time.time() - 60)
    assert [(f.removed, f.path) for f in result] == [(True, lock)]
    if not gitlocks.inspectable():
        return
    lock.write_text("")
    with open(lock, "rb") as handle, subprocess.Popen(["sleep", "60"], stdin=handle) as proc:
        try:
            result = gitlocks.sweep(found(repo, scratch), time.time() - 60)
        finally:
            proc.kill()
    assert [f.removed for f in result] == [False]
    assert "has it open" in result[0].why


def test_an_own_worktree_lock_is_stale_whatever_its_age_unless_git_runs_there(
    tmp_path: Path,
) -> None:
    repo, common = checkout(tmp_path)
    tree = tmp_path / "state" / "worktrees" / "t"
    git(repo, "worktree", "add", "-q", "-b", "orchestratord/t", str(tree), "main")
    gitdir = common / "worktrees" / "t"
    for path in (
        gitdir / "index.lock",
        gitdir / "HEAD.lock",
        common / "refs/heads/orchestratord/t.lock",
    ):
        path.write_text("")
    (common / "refs" / "heads" / "main.lock").write_text("")  # the base branch: shared
    cands = gitlocks.candidates(
        tree, gitdir, common, True, "orchestratord/t", "main", tmp_path / "s.index"
    )
    result = gitlocks.sweep(cands, time.time() - 60)
    assert sorted((f.removed, f.path.name) for f in result) == [
        (False, "main.lock"),
        (True, "HEAD.lock"),
        (True, "index.lock"),
        (True, "t.lock"),
    ]


def test_a_git_error_naming_a_lock_says_which_file_and_why() -> None:
    path = Path("/r/.git/index.lock")
    message = (
        f"git reset --hard failed in /r: fatal: Unable to create '{path}': File exists.\n\n"
        "Another git process seems to be running in this repository, e.g.\nan editor opened "
        "by 'git commit'. Please make sure all processes\nare terminated then try again. If it "
        "still fails, a git process\nmay have crashed in this repository earlier:\nremove the "
        "file manually to continue."
    )
    left = [gitlocks.Found(path, False, "process 7 (git) has it open")]
    said = gitlocks.explain(message, left)
    assert said == (
        f"git reset --hard failed in /r: fatal: Unable to create '{path}': File exists; the "
        "daemon left it in place: process 7 (git) has it open. If no git is running there, "
        f"remove it (rm '{path}') and set the task back to pending"
    )
    assert (
        gitlocks.explain("git add failed: no space left", left) == "git add failed: no space left"
    )


@pytest.mark.skipif(not gitlocks.inspectable(), reason="needs /proc to see processes")
def test_a_git_running_elsewhere_in_the_repository_keeps_the_locks_of_the_daemons_refs(
    tmp_path: Path,
) -> None:
    """The track's branch and the daemon's refs are the repository's: any of its gits may be
    updating them (``git gc`` packs refs, ``git branch -f``), with the lock file closed. A git
    running in the person's checkout keeps them; the worktree's own files are still stale."""
    repo, common = checkout(tmp_path)
    tree = tmp_path / "state" / "worktrees" / "t"
    git(repo, "worktree", "add", "-q", "-b", "orchestratord/t", str(tree), "main")
    gitdir = common / "worktrees" / "t"
    saved = "refs/orchestratord/attempts/t/K/1"
    (common / "refs" / "orchestratord" / "attempts" / "t" / "K").mkdir(parents=True)
    for path in (gitdir / "index.lock", common / "refs/heads/orchestratord/t.lock"):
        path.write_text("")
    (common / f"{saved}.lock").write_text("")
    with committing(repo, common, tmp_path) as person:
        cands = gitlocks.candidates(
            tree, gitdir, common, True, "orchestratord/t", None, tmp_path / "s.index", [saved]
        )
        result = gitlocks.sweep(cands, time.time() - 60)
    assert sorted((f.removed, f.path.name) for f in result) == [
        (False, "1.lock"),
        (False, "t.lock"),
        (True, "index.lock"),
    ]
    assert all(f"git process {person.pid}" in f.why for f in result if not f.removed)
