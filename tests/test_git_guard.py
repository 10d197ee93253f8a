"""What a restarted daemon may take for an attempt's verified commit found at HEAD.

A daemon killed between git moving a branch to an attempt's verified commit and the store
recording the PASS leaves that commit at HEAD; the next daemon records the PASS instead of
running the attempt again. Only when HEAD is exactly the commit the daemon recorded it was about
to make (recorded in the store before the branch moved), and only when what that commit was
verified against (the verification commands, the completion promise, the guardrails) is still
what is asked. A person's commit carrying the attempt's trailers (an amended one, a copy) is not
what verification passed, and a changed definition asks for something else: the attempt runs
again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.clock import SystemClock
from orchestrator.model import TaskKey
from orchestrator.store import Store

from . import process_harness as ph
from .agent_harness import git, make_repo, needs_git, write_config
from .conftest import WriteTrack
from .test_git_races import kill_at_ref_update

pytestmark = [needs_git]

KEY = TaskKey("t", "K")


def _killed_after_its_commit(
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
    config: str = "",
    **task: object,
) -> tuple[Path, Path, Path]:
    """Task ``t:K`` in a checkout (``repo``), its daemon killed once git moved ``main`` to its
    verified commit; the repository, the state directory and the file counting its runs."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = false\n" + config)
    runs = tmp_path / "runs"
    write_track("t", [{"id": "K", "command": _counted(runs), **task}], track={"workdir": "../repo"})
    state = tmp_path / "state"
    kill_at_ref_update(repo, "refs/heads/main", tracks_dir, state, tmp_path / "hook.pid")
    return repo, state, runs


def _counted(runs: Path) -> str:
    """A run that counts itself in ``runs``, writes its number, and prints two promises."""
    return (
        f"echo x >> {runs}; echo run $(wc -l < {runs}) > a.txt; "
        "echo '<promise>ONE</promise> <promise>TWO</promise>'"
    )


def _runs(runs: Path) -> int:
    return runs.read_text().count("x")


def _finished(state: Path) -> tuple[list[tuple[str, str | None]], str | None, str]:
    """The attempts of ``t:K`` (state, verdict), the last one's commit and its log."""
    attempts = Store.open(state, SystemClock()).attempts(KEY)
    last = attempts[-1]
    return (
        [(a.state, a.verdict) for a in attempts],
        last.details.commit_id,
        (Path(last.log_path).read_text()),
    )


def _amend_message(repo: Path) -> None:
    """Only the message edited (its trailers kept)."""
    body = git(repo, "log", "-1", "--format=%B")
    new = "A better subject\n\n" + body.partition("\n\n")[2]
    git(repo, "commit", "-q", "--amend", "--only", "-m", new)


def _amend_with_a_change(repo: Path) -> None:
    (repo / "mine.txt").write_text("a person's change\n")
    git(repo, "add", "mine.txt")
    git(repo, "commit", "-q", "--amend", "--no-edit", "--only", "mine.txt")


def _copy_the_trailers(repo: Path) -> None:
    (repo / "mine.txt").write_text("a person's change\n")
    git(repo, "add", "mine.txt")
    git(repo, "commit", "-q", "--only", "mine.txt", "-m", git(repo, "log", "-1", "--format=%B"))


@pytest.mark.parametrize(
    "edit",
    [_amend_message, _amend_with_a_change, _copy_the_trailers],
    ids=["amended-message", "amended-change", "copied-trailers"],
)
def test_a_persons_commit_with_the_attempts_trailers_is_not_taken_for_its_verified_commit(
    edit: Callable[[Path], None], tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """While the daemon is down, a person amends the orphan commit (its message only, or with a
    change of their own), or commits on top of it copying its message: HEAD carries the
    attempt's trailers, but it is not the commit verification passed. The attempt runs again;
    the person's commit stays (its changes count as the attempt's, and what the run again
    changed differently is committed on top)."""
    repo, state, runs = _killed_after_its_commit(tmp_path, tracks_dir, write_track)
    edit(repo)
    theirs = git(repo, "rev-parse", "main")
    commit, log = _ran_again_and_passed(tracks_dir, state, runs)
    assert commit != theirs
    assert git(repo, "rev-parse", f"{commit}^") == theirs
    assert git(repo, "show", f"{commit}:a.txt") == "run 2"
    assert "not the commit the daemon recorded making" in log
    assert "recorded now, not run again" not in log


def test_a_commit_recorded_by_an_older_daemon_runs_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A daemon of an older version recorded nothing of the commit it was about to make: a
    restart after the upgrade cannot tell its commit from a person's, and runs the attempt
    again (the safe side); the same work would keep that commit, other work goes on top."""
    repo, state, runs = _killed_after_its_commit(tmp_path, tracks_dir, write_track)
    made = git(repo, "rev-parse", "main")
    with sqlite3.connect(state / "state.db") as db:
        db.execute("UPDATE attempts SET committing = NULL, verifies = NULL")
    commit, _ = _ran_again_and_passed(tracks_dir, state, runs)
    assert git(repo, "rev-parse", f"{commit}^") == made


def _ran_again_and_passed(tracks_dir: Path, state: Path, runs: Path) -> tuple[str, str]:
    """Start again: the attempt cut short runs a second time and passes; its commit and log."""
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert _runs(runs) == 2, "run again"
    attempts, commit, log = _finished(state)
    assert attempts == [("interrupted", None), ("finished", "PASS")]
    assert commit is not None
    return commit, log


def _edit_task(tracks_dir: Path, **fields: object) -> None:
    path = tracks_dir / "t.json"
    doc = json.loads(path.read_text())
    doc["features"][0].update(fields)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _edit_track(tracks_dir: Path, **fields: object) -> None:
    path = tracks_dir / "t.json"
    doc = json.loads(path.read_text())
    doc["track"].update(fields)
    path.write_text(json.dumps(doc, indent=2) + "\n")


@pytest.mark.parametrize(
    ("task", "config", "change"),
    [
        ({"verify": "true"}, "", lambda t, c: _edit_task(t, verify="test -f a.txt")),
        ({}, "", lambda t, c: _edit_track(t, verify=["test -f a.txt"])),
        (
            {},
            '[defaults]\nverify = ["true"]\n',
            lambda t, c: c.write_text(c.read_text().replace('"true"', '"test -f a.txt"')),
        ),
        (
            {"completion_promise": "ONE"},
            "",
            lambda t, c: _edit_task(t, completion_promise="TWO"),
        ),
        (
            {},
            "",
            lambda t, c: c.write_text(c.read_text() + "[guardrails]\nextra_patterns = ['zz']\n"),
        ),
    ],
    ids=["task-verify", "track-verify", "config-verify", "promise", "guardrails"],
)
def test_a_commit_verified_against_what_is_no_longer_asked_runs_again(
    task: dict[str, object],
    config: str,
    change: Callable[[Path, Path], None],
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
) -> None:
    """While the daemon is down, a person changes what the task is verified against (its
    verify commands: the task's, else the track's, else the config's; its completion promise;
    the guardrails): the commit passed what is no longer asked. The attempt runs again, and
    its log says why."""
    repo, state, runs = _killed_after_its_commit(tmp_path, tracks_dir, write_track, config, **task)
    made = git(repo, "rev-parse", "main")
    change(tracks_dir, tmp_path / "orchestratord.toml")
    commit, log = _ran_again_and_passed(tracks_dir, state, runs)
    assert git(repo, "rev-parse", f"{commit}^") == made
    assert "what it was verified against changed since" in log


def test_the_commit_is_recorded_before_git_moves_the_branch(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Crash-safe: when git is about to move the branch (it holds the ref's lock), the store
    already holds the commit the attempt is making. Killed there (the branch not moved), the
    attempt simply runs again."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = false\n")
    runs = tmp_path / "runs"
    write_track("t", [{"id": "K", "command": _counted(runs)}], track={"workdir": "../repo"})
    state, marker = tmp_path / "state", tmp_path / "hook.out"
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(
        "#!/bin/sh\n"
        '[ "$1" = prepared ] || exit 0\n'
        "while read old new name; do\n"
        f'  [ "$name" = refs/heads/main ] && echo "$$ $new" > {marker}.tmp '
        f"&& mv {marker}.tmp {marker}\n"
        "done\n"
        f"[ -e {marker} ] && exec sleep 60\n"
        "exit 0\n"
    )
    hook.chmod(0o755)
    before = git(repo, "rev-parse", "main")
    proc = ph.daemon(tracks_dir, state)
    try:
        ph.wait_for(marker.exists)
        pid, new = marker.read_text().split()
        with sqlite3.connect(state / "state.db") as db:
            recorded = db.execute("SELECT committing FROM attempts").fetchall()
    finally:
        proc.kill()
        proc.wait(10)
    os.kill(int(pid), signal.SIGKILL)  # the transaction is aborted: the branch stays
    hook.unlink()
    assert recorded == [(new,)]
    assert git(repo, "rev-parse", "main") == before
    commit, _ = _ran_again_and_passed(tracks_dir, state, runs)
    assert git(repo, "rev-parse", f"{commit}^") == before


def test_a_commit_on_top_of_its_adopted_commit_is_recorded_after_a_second_kill(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Killed after its commit; a person edits the committed file (the tree changed since),
    so the attempt runs again and commits on top of its first commit; killed there again. The
    second commit is the one the store recorded last: recorded after the third start, and
    not run a third time."""
    repo, state, runs = _killed_after_its_commit(tmp_path, tracks_dir, write_track)
    first = git(repo, "rev-parse", "main")
    (repo / "a.txt").write_text("a person's edit\n")
    kill_at_ref_update(repo, "refs/heads/main", tracks_dir, state, tmp_path / "hook2.pid")
    second = git(repo, "rev-parse", "main")
    assert git(repo, "rev-parse", "main^") == first
    assert _runs(runs) == 2
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert _runs(runs) == 2, "not run a third time"
    attempts, commit, log = _finished(state)
    assert attempts == [("interrupted", None), ("interrupted", None), ("finished", "PASS")]
    assert commit == second
    assert git(repo, "show", "main:a.txt") == "run 2"
    assert "recorded now, not run again" in log
