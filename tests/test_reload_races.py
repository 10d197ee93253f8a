"""A reload, a person's order or the daemon stopping while something waits on a thread.

A wait in a worker thread (``anyio.to_thread.run_sync``) is not interrupted: what was decided
meanwhile (a track removed, a task gone, a worktree removed) must be seen by the code that
runs once the wait ends. Each test here holds a thread function on a ``threading.Event``,
changes the daemon's state meanwhile, and then lets it go: deterministic, no sleeping.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import anyio
import pytest

from orchestrator import agentrun, gitattempt, gitwork, queuefile, writeback
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event

from . import live_harness as lh
from .agent_harness import make_repo, needs_git, write_config
from .conftest import WriteTrack

pytestmark = pytest.mark.anyio


async def test_a_track_removed_while_its_file_is_read_for_write_back_stays_removed(
    tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-back reads the file in a thread; the file is deleted and a reload removes
    the track meanwhile. The write-back must drop what it read, not count the tasks of a track
    the graph no longer has (a KeyError that took the daemon down) nor put the track back."""
    entered, release = threading.Event(), threading.Event()
    armed = threading.Event()
    read = writeback._read

    def held(path: Path, fid: object) -> object:
        done = read(path, fid)  # type: ignore[arg-type]
        if armed.is_set() and path.name == "t.json":  # read: the file is deleted now
            armed.clear()
            entered.set()
            release.wait(10)
        return done

    monkeypatch.setattr(writeback, "_read", held)
    path = write_track("t", [{"id": "K", "command": "true"}])
    write_track("u", [{"id": "U", "command": "true"}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:K").done and live.status("u:U").done)
        await live.settled("t")
        armed.set()
        live.engine.pause_track("t", "a person's pause")  # the file is written back
        await live.until(entered.is_set)
        path.unlink()
        reload = live.control.reload
        assert reload is not None

        async def reloading() -> None:  # waits for the write-back: a task of its own
            await reload()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reloading)
            await live.until(lambda: "t" not in live.engine.tracks)
            release.set()
        assert "t" not in live.engine.tracks
        assert "t" in live.engine.removed
        assert not path.exists()
        live.engine.pause_track("u", "still answering")  # the write-back still runs
        await live.until(lambda: live.doc("u").get("track", {}).get("paused") is True)


async def test_a_track_removed_while_its_edited_file_is_parsed_for_write_back_stays_removed(
    tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same while the write-back parses a file someone else changed (a full sync, in a
    thread): what it parsed must not put the removed track back in force."""
    path = write_track("t", [{"id": "K", "command": "true"}])
    write_track("u", [{"id": "U", "command": "true"}])
    # No file watcher: the write-back, not a reload, reads the edit.
    async with lh.live_daemon(tracks_dir, watch=False) as live:
        await live.until(lambda: live.status("t:K").done and live.status("u:U").done)
        await live.settled("t")
        held = lh.hold(monkeypatch, writeback.Writeback, "_parse")
        doc = json.loads(path.read_text())
        doc["features"][0]["description"] = "edited by a person"
        path.write_text(json.dumps(doc))
        live.engine.pause_track("t", "a person's pause")  # the file is written back
        await live.until(held.entered.is_set)
        path.unlink()
        reload = live.control.reload
        assert reload is not None

        async def reloading() -> None:
            await reload()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reloading)
            await live.until(lambda: "t" not in live.engine.tracks)
            held.release.set()
        live.engine.pause_track("u", "still answering")  # the write-back has gone on
        await live.until(lambda: live.doc("u").get("track", {}).get("paused") is True)
        assert "t" not in live.engine.tracks
        assert "t" in live.engine.removed


async def test_the_daemons_write_seen_by_the_watcher_before_it_returns_is_its_own(
    tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-back renames the new version into place in a thread, then fsyncs the
    directory: on a slow disk the watcher sees the rename, and looks at the file, before the
    write returns. That file is the daemon's own all the same: no change is handed on (the
    write was counted as an edit of the file, and the file read again for nothing)."""
    armed, looked = threading.Event(), threading.Event()
    new: list[queuefile.FileId | None] = []
    seen: list[bool] = []
    commit, is_own = queuefile._commit, writeback.Writeback.is_own

    def renamed_then_held(tmp_name: str, path: Path) -> None:
        if not (armed.is_set() and path.name == "t.json"):
            return commit(tmp_name, path)
        armed.clear()
        new.append(queuefile.file_id(Path(tmp_name)))
        commit(tmp_name, path)
        looked.wait(10)  # as the directory's fsync can on a slow disk
        return None

    def looking(self: writeback.Writeback, name: str, path: Path) -> bool:
        own = is_own(self, name, path)
        if new and not looked.is_set() and queuefile.file_id(path) == new[0]:
            seen.append(own)  # the watcher looks at the new version, not yet returned
            looked.set()
        return own

    monkeypatch.setattr(queuefile, "_commit", renamed_then_held)
    monkeypatch.setattr(writeback.Writeback, "is_own", looking)
    write_track("t", [{"id": "K", "command": "true"}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:K").done)
        await live.settled("t")
        stats = live.engine.stats
        writes, changed = stats["file_writes"], stats.get("files_changed", 0)
        armed.set()
        live.engine.pause_track("t", "a person's pause")  # the file is written back
        await live.until(looked.is_set)  # and what the watcher does with its answer is done
        assert seen == [True]
        assert stats.get("files_changed", 0) == changed
        await live.until(
            lambda: (
                stats["file_writes"] > writes
                and live.doc("t").get("track", {}).get("paused") is True
            )
        )
        assert live.kinds("reload_plan") == []


@needs_git
async def test_a_task_added_while_its_tracks_worktree_is_removed_gets_a_new_one(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The track's last task done, its worktree is removed (in a thread); a task added to the
    file meanwhile is handed the tree being removed and waits for it. It must work in a tree
    that exists once it has the tree, not be blocked by git failing in a removed directory."""
    held = lh.hold(monkeypatch, gitwork, "remove_worktree")
    make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = true\n")
    path = write_track(
        "t",
        [{"id": "K", "command": "true", "allow_no_changes": True}],
        track={"workdir": "../repo", "concurrency": 2},  # K's runner holds a slot meanwhile
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(held.entered.is_set)  # K is done: its worktree goes
        trees = agentrun.of(live.engine).trees
        tree = trees.tree("t")
        assert tree is not None
        assert tree.lock.locked()
        doc = live.doc("t")
        doc["features"].append({"id": "L", "command": "true", "allow_no_changes": True})
        lh.write_and_rename(path, lh.dump(doc))
        await live.until(lambda: tree.lock.statistics().tasks_waiting == 1)  # L wants it
        held.release.set()
        ended = (Status.COMPLETE, Status.BLOCKED, Status.FAILED)
        await live.until(lambda: live.status("t:L") in ended)
        assert live.status("t:L") is Status.COMPLETE, live.engine.states[TaskKey("t", "L")]


@needs_git
@pytest.mark.parametrize("order", [Event.ORDER_SKIP, Event.ORDER_ACCEPT])
async def test_an_order_given_while_a_failed_attempt_is_put_aside_stands(
    order: Event,
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A person's order comes while git keeps a failed attempt's changes aside (in a thread).
    The order decides the task's fate: the attempt's FAIL must not put the task back to
    pending (which ran it again, as if nobody had said anything)."""
    held = lh.hold(monkeypatch, gitattempt.GitAttempt, "_save_and_reset")
    make_repo(tmp_path / "repo")
    write_track(
        "t",
        [
            {"id": "K", "command": "false", "max_iterations": 3},
            {"id": "L", "command": "true", "allow_no_changes": True},
        ],
        track={"workdir": "../repo", "concurrency": 1},
    )
    k = TaskKey("t", "K")
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(held.entered.is_set)
        live.engine.order(k, order, "a person's order")
        wanted = live.engine.states[k].status
        held.release.set()
        await live.until(lambda: live.status("t:L") is Status.COMPLETE)
        assert live.engine.states[k].status is wanted
        (attempt,) = live.engine.store.attempts(k)
        assert (attempt.state, attempt.reason) == ("interrupted", "a person's order")
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == wanted.value


@needs_git
async def test_a_verified_commit_is_merged_even_when_its_task_is_removed_meanwhile(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task leaves its file while git commits its verified work (in a thread). A commit
    and its merge belong together: the merge must follow, and the PASS be recorded, instead of
    a commit left on the track's branch and an attempt recorded as interrupted (whose next
    attempt would find nothing to change, and fail)."""
    held = lh.hold(monkeypatch, gitattempt.GitAttempt, "_commit")
    repo = make_repo(tmp_path / "repo")
    path = write_track(
        "a", [{"id": "A", "command": "echo done > a.txt"}], track={"workdir": "../repo"}
    )
    # A second track in the repository: each works in a worktree of its own, merged into main.
    write_track(
        "b", [{"id": "B", "command": "true", "status": "complete"}], track={"workdir": "../repo"}
    )
    key = TaskKey("a", "A")
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(held.entered.is_set)
        path.write_text(json.dumps({"track": {"workdir": "../repo"}, "features": []}))
        await live.until(lambda: key not in live.engine.defs)
        held.release.set()
        await live.until(lambda: live.engine.states[key].status is Status.COMPLETE)
        (attempt,) = live.engine.store.attempts(key)
        assert (attempt.state, attempt.verdict) == ("finished", "PASS")
    assert (repo / "a.txt").read_text() == "done\n"
