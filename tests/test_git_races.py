"""Races around git working trees and agent attempts: orders, removals and stops that come
while git works on an attempt's changes (in threads, which no cancellation interrupts)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from orchestrator import gitattempt
from orchestrator.clock import SystemClock
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event
from orchestrator.store import Store

from . import live_harness as lh
from . import process_harness as ph
from .agent_harness import fake_agent, git, make_repo, needs_git, write_config
from .conftest import WriteTrack

pytestmark = [pytest.mark.anyio, needs_git]


def pause_at_ref_update(repo: Path, ref: str, marker: Path, state: str = "committed") -> None:
    """A ``reference-transaction`` hook: once git has moved ``ref`` (not created it), note the
    hook's pid in ``marker`` and wait there (the daemon waits on git meanwhile) until killed.

    ``state``: ``committed`` (the ref has moved) or ``prepared`` (git holds the ref's lock
    files and has not moved it yet)."""
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = {state} ] || exit 0\n'
        "moved=\n"
        "while read old new name; do\n"
        f'  [ "$name" = {ref} ] && [ "$old" != "$new" ] && [ "${{old#0000}}" = "$old" ] '
        "&& moved=1\n"
        "done\n"
        '[ -n "$moved" ] || exit 0\n'
        f"echo $$ > {marker}.tmp && mv {marker}.tmp {marker}\n"
        "exec sleep 60\n"
    )
    hook.chmod(0o755)


def kill_at_ref_update(repo: Path, ref: str, tracks_dir: Path, state: Path, marker: Path) -> None:
    """Start the daemon, SIGKILL it (and the git waiting in the hook) once git has moved
    ``ref`` (see :func:`pause_at_ref_update`), and take the hook away again."""
    pause_at_ref_update(repo, ref, marker)
    ph.kill_when(tracks_dir, state, marker.exists)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    (repo / ".git" / "hooks" / "reference-transaction").unlink()


@pytest.mark.parametrize(
    ("worktrees", "ref"),
    [
        (True, "refs/heads/orchestratord/t"),  # committed on the track's branch, not merged
        (True, "refs/heads/main"),  # merged too
        (False, "refs/heads/main"),  # committed in the checkout
    ],
)
def test_a_daemon_killed_once_its_verified_commit_is_made_records_it_after_restart(
    worktrees: bool, ref: str, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """SIGKILL right after git moved a branch to an attempt's verified commit, before the store
    recorded the PASS. The attempt runs again after the restart and makes the same change: that
    must not be "no changes" (the task failed, its work committed and perhaps never merged),
    nor a second commit of the same work."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, f"[git]\nworktrees = {str(worktrees).lower()}\n")
    write_track("t", [{"id": "K", "command": "echo done > a.txt"}], track={"workdir": "../repo"})
    state = tmp_path / "state"
    kill_at_ref_update(repo, ref, tracks_dir, state, tmp_path / "hook.pid")
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    store = Store.open(state, SystemClock())
    attempts = store.attempts(TaskKey("t", "K"))
    assert [(a.state, a.verdict) for a in attempts] == [("interrupted", None), ("finished", "PASS")]
    commit = attempts[-1].details.commit_id
    assert git(repo, "log", "--format=%H", "--grep=^Task: K$", "--all") == commit
    assert git(repo, "rev-parse", "main") == commit
    assert git(repo, "show", "main:a.txt") == "done"
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "for-each-ref", "refs/orchestratord/") == ""  # nothing was put aside


async def test_an_attempt_cut_short_by_a_stop_in_a_checkout_counts_its_changes_when_run_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The daemon stops (gracefully) while an attempt runs in the checkout itself (a track
    alone in its repository); the attempt runs again after the restart. What its first run
    wrote must be part of the commit, not taken for the user's own changes and left out (the
    commit lacked files its verification used; they stayed uncommitted in the checkout)."""
    repo = make_repo(tmp_path / "repo")
    started = tmp_path / "started"
    command = (
        f"if [ -f a.txt ]; then echo b > b.txt; else echo a > a.txt; touch {started}; sleep 30; fi"
    )
    write_track(
        "t",
        [{"id": "K", "command": command, "verify": "test -f a.txt -a -f b.txt"}],
        track={"workdir": "../repo"},
    )
    key = TaskKey("t", "K")
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(started.exists)
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)
        attempts = live.engine.store.attempts(key)
    assert [(a.state, a.verdict) for a in attempts] == [("interrupted", None), ("finished", "PASS")]
    assert git(repo, "status", "--porcelain") == ""
    assert sorted(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == [
        "a.txt",
        "b.txt",
    ]


async def test_an_attempt_waiting_for_its_tree_does_not_start_once_the_track_is_over_budget(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Two tasks of a track with two slots share the track's tree: one runs, the other waits
    for the tree. The first crosses the track's budget, which pauses the track: the waiting one
    must not start its agent then (nothing new starts), but go back to pending."""
    make_repo(tmp_path / "repo")
    steps = {i: [{"write": {f"{i}.txt": "x\n"}, "json": True, "cost": 0.3}] for i in "KL"}
    agent = fake_agent(tmp_path / "agent", {"tasks": steps})
    write_config(tmp_path, f'[budgets]\ntrack_usd = 0.1\n\n[agents.claude]\nbinary = "{agent}"\n')
    write_track(
        "t",
        [{"id": i, "agent": "claude", "description": f"make {i}"} for i in "KL"],
        track={"workdir": "../repo", "concurrency": 2},
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: bool(live.kinds("budget_exceeded")))
        await live.until(lambda: not live.engine.busy())
        ran = sorted(p.name for p in (tmp_path / "agent" / "records").iterdir())
        assert len(ran) == 1, ran
        waited = TaskKey("t", "L" if ran[0].startswith("K") else "K")
        assert live.engine.states[waited].status is Status.PENDING
        assert [a.state for a in live.engine.store.attempts(waited)] in ([], ["interrupted"])


async def test_skip_then_retry_while_git_concludes_runs_the_task_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skip, then retry, while git commits a passing attempt (in a thread, which no
    cancellation interrupts): the retry's run is queued behind the ending loop, whose attempt
    is interrupted by the skip; it must not record its PASS over the retry. The run after it
    makes the same change and finds the commit already made: it is recorded, not made again."""
    held = lh.hold(monkeypatch, gitattempt.GitAttempt, "_commit")
    repo = make_repo(tmp_path / "repo")
    write_track(
        "t",
        [{"id": "K", "command": f"echo done > a.txt; {lh.note('K', tmp_path)}"}],
        track={"workdir": "../repo", "concurrency": 2},
    )
    key = TaskKey("t", "K")
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(held.entered.is_set)
        live.engine.order(key, Event.ORDER_SKIP, "not now")
        live.engine.order(key, Event.ORDER_RETRY, "after all")
        assert live.engine.loop_queued(key)
        held.release.set()
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)
        await live.until(lambda: not live.engine.busy())
        assert lh.ledger(tmp_path) == ["K", "K"]
        attempts = live.engine.store.attempts(key)
    assert [(a.state, a.verdict) for a in attempts] == [("interrupted", None), ("finished", "PASS")]
    assert (
        git(repo, "log", "--format=%H", "--grep=^Task: K$", "--all")
        == attempts[-1].details.commit_id
    )


async def _skipped_while_git_commits(
    tmp_path: Path, tracks_dir: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Task ``t:K`` (``command``) skipped while git committed its passing attempt, in a daemon
    that then stopped: the commit stays at HEAD, the attempt was cut short by the order. The
    queue file is returned with the task pending again (retried while no daemon ran)."""
    held = lh.hold(monkeypatch, gitattempt.GitAttempt, "_commit")
    path = tracks_dir / "t.json"
    path.write_text(
        lh.dump({"track": {"workdir": "../repo"}, "features": [{"id": "K", "command": command}]})
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(held.entered.is_set)
        live.engine.order(TaskKey("t", "K"), Event.ORDER_SKIP, "not now")
        held.release.set()
        await live.until(lambda: live.status("t:K") is Status.SKIPPED)
        await live.until(lambda: not live.engine.busy())
    monkeypatch.undo()
    lh.set_status(path, "K", "pending")
    return path


async def test_skipped_while_git_commits_then_retried_after_a_restart_runs_again(
    tmp_path: Path, tracks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry comes to another daemon (another pid) than the one the skip cut the attempt
    in: the person meant it to run again all the same, not to have the commit recorded."""
    repo = make_repo(tmp_path / "repo")
    await _skipped_while_git_commits(
        tmp_path, tracks_dir, f"echo done > a.txt; {lh.note('K', tmp_path)}", monkeypatch
    )
    state = tmp_path / "state"
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert lh.ledger(tmp_path) == ["K", "K"]
    attempts = Store.open(state, SystemClock()).attempts(TaskKey("t", "K"))
    assert [(a.number, a.verdict) for a in attempts] == [(1, None), (1, "PASS")]
    assert git(repo, "status", "--porcelain") == ""


async def test_skipped_then_retried_and_killed_while_run_again_runs_again(
    tmp_path: Path, tracks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipped while git committed, retried, and the run again was killed before it ended:
    the last cut is the daemon's end, but the commit is from before the order, and the person
    meant the attempt to run again: it does, not the commit recorded."""
    make_repo(tmp_path / "repo")
    started = tmp_path / "started"
    ledger = tmp_path / "ledger"
    command = (
        f"{lh.note('K', tmp_path)}; "
        f"if [ $(wc -l < {ledger}) -eq 2 ]; then touch {started}; sleep 60; fi; echo done > a.txt"
    )
    await _skipped_while_git_commits(tmp_path, tracks_dir, command, monkeypatch)
    state = tmp_path / "state"
    ph.kill_when(tracks_dir, state, started.exists)
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert lh.ledger(tmp_path) == ["K", "K", "K"]
    attempts = Store.open(state, SystemClock()).attempts(TaskKey("t", "K"))
    assert [a.verdict for a in attempts] == [None, None, "PASS"]


async def test_an_attempt_waiting_for_its_tree_does_not_start_once_the_track_is_paused(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """As with a budget crossed: one task holds the track's tree, the other waits for it, and
    the track is paused meanwhile. The first finishes; the other does not start (nothing new
    starts) but is pending again, and runs once the track is resumed."""
    make_repo(tmp_path / "repo")
    go = tmp_path / "go"

    def task(ident: str) -> dict[str, str]:
        wait = f"while [ ! -e {go} ]; do sleep 0.02; done"
        return {"id": ident, "command": f"{lh.note(ident, tmp_path)}; {wait}; echo > {ident}"}

    write_track("t", [task("K"), task("L")], track={"workdir": "../repo", "concurrency": 2})
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: len(lh.ledger(tmp_path)) == 1)
        (first,) = lh.ledger(tmp_path)
        other = "L" if first == "K" else "K"
        live.engine.pause_track("t", "a person")
        go.touch()
        await live.until(lambda: live.status(f"t:{first}") is Status.COMPLETE)
        await live.until(lambda: not live.engine.busy())
        assert live.status(f"t:{other}") is Status.PENDING
        assert lh.ledger(tmp_path) == [first]
        live.engine.resume_track("t")
        await live.until(lambda: live.status(f"t:{other}") is Status.COMPLETE)
        assert lh.ledger(tmp_path) == [first, other]
