"""What a daemon killed in a narrow window leaves behind, and how the next start deals with it.

Each test builds the state the kill leaves (the processes, files and records that exist at
that moment) rather than hoping a random kill lands in the window; ``test_chaos`` kills at
random moments.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import structlog.testing

from orchestrator import procs, queuefile
from orchestrator.clock import SystemClock
from orchestrator.model import Owned, Status, TaskKey
from orchestrator.recovery import recover
from orchestrator.states import TaskState
from orchestrator.store import Store

from . import live_harness as lh
from . import process_harness as ph
from .agent_harness import git, make_repo, needs_git, write_config
from .conftest import WriteTrack
from .daemon_harness import run_once
from .fakes import FixedClock
from .test_git_races import kill_at_ref_update

pytestmark = pytest.mark.anyio


async def test_the_temporary_file_of_a_killed_write_is_removed_at_the_next_start(
    write_track: WriteTrack,
) -> None:
    """A write-back writes a temporary file next to the queue file and renames it into place;
    a daemon killed in between leaves it (half written, or whole), one more with each such
    kill: in a repository, `git status` shows them. The next start removes them, and only
    them (a name of that form, next to a queue file), and says so."""
    path = write_track("t", [{"id": "A", "command": "true"}])
    half = path.parent / ".t.json.k1ll3d9x.tmp"
    half.write_text('{"features": [{"id": "A", "sta')
    mine = [path.parent / ".notes.tmp", path.parent / ".t.json.tmp", path.parent / "t.json.bak"]
    mine += [path.parent / ".t.json.old-notes.tmp", path.parent / ".notes.md.k1ll3d9x.tmp"]
    for other in mine:
        other.write_text("someone else's")
    with structlog.testing.capture_logs() as logs:
        run = await run_once(path.parent)
    assert run.code == 0
    assert not half.exists()
    assert all(other.exists() for other in mine)
    removed = [e for e in logs if e["event"].startswith("removed an unfinished write")]
    assert [e["file"] for e in removed] == [queuefile.display_path(half)]


@needs_git
@pytest.mark.parametrize(
    ("worktrees", "ref"),
    [
        (True, "refs/heads/main"),  # merged into the base branch already
        (True, "refs/heads/orchestratord/t"),  # committed on the track's branch only
        (False, "refs/heads/main"),  # committed in the checkout
    ],
)
def test_a_verified_commit_made_before_a_kill_is_recorded_not_run_again(
    worktrees: bool, ref: str, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """SIGKILL right after git moved a branch to an attempt's verified commit, before the store
    recorded the PASS. The commit says the attempt passed (verification and gate first, then
    the commit): after the restart that PASS is recorded, and the commit merged where it is not
    yet, without running the command again. Run again, it would write something else (an agent
    seldom writes the same twice), and a failing run again took the verified work back off the
    branch, perhaps merged already."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, f"[git]\nworktrees = {str(worktrees).lower()}\n")
    runs = tmp_path / "runs"
    command = f"echo x >> {runs}; echo run $(wc -l < {runs}) > a.txt"
    write_track("t", [{"id": "K", "command": command}], track={"workdir": "../repo"})
    state = tmp_path / "state"
    kill_at_ref_update(repo, ref, tracks_dir, state, tmp_path / "hook.pid")
    first = git(repo, "log", "-1", "--format=%H", "--grep=^Task: K$", "--all")
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert runs.read_text().count("x") == 1  # not run again
    store = Store.open(state, SystemClock())
    attempts = store.attempts(TaskKey("t", "K"))
    assert [(a.state, a.verdict) for a in attempts] == [("interrupted", None), ("finished", "PASS")]
    assert attempts[-1].details.commit_id == first
    assert git(repo, "merge-base", "--is-ancestor", first, "main") == ""
    assert git(repo, "show", "main:a.txt") == "run 1"
    assert git(repo, "status", "--porcelain") == ""
    log = Path(attempts[-1].log_path).read_text()
    assert f"--- PASS: verified and committed as {first[:12]} before the daemon stopped" in log
    assert attempts[-1].reason is not None
    assert "not run again" in attempts[-1].reason  # the journal's attempt_finished says so too


@needs_git
def test_a_verified_commit_in_a_checkout_is_recorded_whatever_else_the_checkout_holds(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """As above, in a shared checkout that holds more than the commit's work when the daemon
    starts again: what verification left there (it ran after the changes were measured), and
    a person's file written while the daemon was down. Neither is the attempt's work: the PASS
    is recorded as it is, not run again (which also committed both files as the task's)."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = false\n")
    runs = tmp_path / "runs"
    command = f"echo x >> {runs}; echo run $(wc -l < {runs}) > a.txt"
    task = {"id": "K", "command": command, "verify": "touch verified.out"}
    write_track("t", [task], track={"workdir": "../repo"})
    state = tmp_path / "state"
    kill_at_ref_update(repo, "refs/heads/main", tracks_dir, state, tmp_path / "hook.pid")
    first = git(repo, "rev-parse", "main")
    (repo / "notes.txt").write_text("a person's notes\n")
    again = ph.start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert runs.read_text().count("x") == 1  # not run again
    attempts = Store.open(state, SystemClock()).attempts(TaskKey("t", "K"))
    assert [a.verdict for a in attempts] == [None, "PASS"]
    assert attempts[-1].details.commit_id == first
    assert git(repo, "rev-parse", "main") == first
    assert git(repo, "show", "--name-only", "--format=", first) == "a.txt"
    assert sorted(git(repo, "status", "--porcelain").splitlines()) == [
        "?? notes.txt",
        "?? verified.out",
    ]


def test_sighup_during_start_up_does_not_end_the_daemon(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A SIGHUP while the daemon recovers from a crash (here: waiting ``kill_grace`` for a
    leftover that ignores SIGTERM) ended the daemon there and then, its default action, with
    nothing in the log. It is a reload: the daemon starts, and reloads once it runs."""
    write_track("t", [{"id": "A", "command": "true"}])
    state = tmp_path / "state"
    store = Store.open(state, SystemClock())
    attempt = store.begin_attempt(
        TaskKey("t", "A"), TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l"
    )
    termed = tmp_path / "termed"
    script = f"trap 'touch {termed}' TERM; while :; do sleep 0.05 2>/dev/null; done"
    leftover = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        ticks = procs.process_start_ticks(leftover.pid)
        store.record_process(attempt, "run", ["sh"], "/", leftover.pid, ticks, procs.boot_id())
        store.close()
        log = tmp_path / "daemon.log"
        proc = ph.daemon(tracks_dir, state, log=log, kill_grace="3")
        try:
            ph.wait_for(termed.exists)  # recovery waits for the leftover to go
            proc.send_signal(signal.SIGHUP)
            ph.wait_for(lambda: proc.poll() is not None or "SIGHUP during" in log.read_text())
            assert proc.poll() is None, log.read_text()
            # ... and the reload it asked for is done once the daemon runs
            ph.wait_for(lambda: "config reloaded" in log.read_text().partition("SIGHUP during")[2])
            assert ph.stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        leftover.kill()
        leftover.wait(10)


async def test_orders_in_the_fix_of_a_file_broken_at_start_up_are_orders(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The daemon stopped (or was killed) while a person's save of a queue file was broken;
    it starts without that track. The save that fixes the file also says `pending` on a
    complete task and `skipped` on a failed one: orders against the daemon's last write, as
    any save of that file (they were taken for a file put back, the store's statuses written
    over them, and lost)."""
    path = write_track(
        "t",
        [
            {"id": "A", "command": lh.note("A", tmp_path)},
            {"id": "F", "command": "exit 3", "max_iterations": 1},
        ],
    )
    assert (await run_once(tracks_dir)).code == 1
    good = json.loads(path.read_text())
    assert [t["status"] for t in good["features"]] == ["complete", "failed"]
    lh.write_in_place(path, lh.dump(good)[:-5])  # a save cut short: not JSON
    async with lh.live_daemon(tracks_dir) as live:
        assert "t" not in live.engine.tracks
        good["features"][0]["status"] = "pending"
        good["features"][1]["status"] = "skipped"
        lh.write_and_rename(path, lh.dump(good))
        await live.until(lambda: "t" in live.engine.tracks)
        await live.until(lambda: live.status("t:F") is Status.SKIPPED)
        await live.until(lambda: lh.ledger(tmp_path) == ["A", "A"])
        await live.until(lambda: live.status("t:A") is Status.COMPLETE)
        await live.settled("t")


async def test_a_file_broken_at_start_up_then_removed_and_saved_again_is_a_file_put_back(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """As above, but the broken file is removed before a file is saved there again: that is
    no longer the file the daemon last wrote (a version put back, a copy from elsewhere), so
    its statuses give way to the daemon's record, as for any file put back."""
    path = write_track("t", [{"id": "A", "command": lh.note("A", tmp_path)}])
    assert (await run_once(tracks_dir)).code == 0
    good = json.loads(path.read_text())
    lh.write_in_place(path, lh.dump(good)[:-5])  # a save cut short: not JSON
    async with lh.live_daemon(tracks_dir, watch=False) as live:
        assert "t" not in live.engine.tracks
        path.unlink()
        assert live.control.reload is not None
        await live.control.reload()
        good["features"][0]["status"] = "pending"
        lh.write_and_rename(path, lh.dump(good))
        await live.control.reload()
        assert "t" in live.engine.tracks
        await live.settled("t")
        assert live.status("t:A") is Status.COMPLETE
    assert lh.ledger(tmp_path) == ["A"]


async def test_a_file_broken_at_start_up_elsewhere_than_the_daemon_wrote_is_a_file_put_back(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The same track's file in another place than the daemon last wrote it (the tracks
    directory moved, a copy), not loaded at start-up: fixed, it is not the daemon's own
    last write either, and its statuses give way to the daemon's record."""
    path = write_track("t", [{"id": "A", "command": lh.note("A", tmp_path)}])
    state = tmp_path / "state"
    assert (await run_once(tracks_dir, state)).code == 0
    good = json.loads(path.read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    lh.write_in_place(moved / "t.json", lh.dump(good)[:-5])  # a save cut short: not JSON
    async with lh.live_daemon(moved, state, watch=False) as live:
        assert "t" not in live.engine.tracks
        good["features"][0]["status"] = "pending"
        lh.write_and_rename(moved / "t.json", lh.dump(good))
        assert live.control.reload is not None
        await live.control.reload()
        assert "t" in live.engine.tracks
        await live.settled("t")
        assert live.status("t:A") is Status.COMPLETE
    assert lh.ledger(tmp_path) == ["A"]


def test_an_attempt_killed_again_before_its_run_began_says_so_in_its_log(tmp_path: Path) -> None:
    """Killed while the attempt run again was set up (waiting for its working tree, git
    bringing it up to date), before its run wrote its header: the log said
    `--- interrupted: ...` once per kill, line after line, as if each had output. Each such
    note now says the run had not begun."""
    log = tmp_path / "X.attempt-1.log"
    log.write_text("=== t:X attempt 1 ===\n$ make\nhalf of the output\n")
    store = Store.open(tmp_path / "state", FixedClock())
    key, state = TaskKey("t", "X"), TaskState(Owned(status=Status.IN_PROGRESS))
    for _ in range(3):  # the first run, then two runs again killed before their header
        store.begin_attempt(key, state, 1, 1, str(log))
        recover(store, grace=1.0)
    never = tmp_path / "Y.attempt-1.log"  # killed before its first run wrote anything
    store.begin_attempt(TaskKey("t", "Y"), state, 1, 1, str(never))
    recover(store, grace=1.0)
    why = "the daemon stopped (or was killed) during this attempt"
    assert log.read_text().splitlines()[-4:] == [
        "half of the output",
        f"--- interrupted: {why}",
        f"--- interrupted before its run began: {why}",
        f"--- interrupted before its run began: {why}",
    ]
    assert never.read_text() == f"--- interrupted before its run began: {why}\n"
