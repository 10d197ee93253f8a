"""Queue files that come, go, break and get fixed while the daemon runs."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from orchestrator import eventtext, explain, inotify, workspace
from orchestrator.clock import SystemClock
from orchestrator.control.views import DaemonMeta, EngineView, explain_lines
from orchestrator.model import Status, TaskKey
from orchestrator.store import Store
from orchestrator.supervisor import Runtime

from . import live_harness as lh
from . import process_harness as ph
from .conftest import WriteTrack

pytestmark = pytest.mark.anyio


def validate_lines(*paths: Path) -> list[str]:
    """What ``orchestratord validate`` prints for these files."""
    return [p.render() for p in workspace.load(list(paths)).problems]


def save(path: Path, doc: dict[str, Any]) -> None:
    lh.write_and_rename(path, lh.dump(doc))


async def test_the_daemons_own_bytes_put_back_over_a_broken_save_are_valid_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """An editor's undo (or ``cp`` from a backup) puts back exactly what the daemon last wrote:
    the file's problem is gone, and so is its report."""
    path = write_track("a", [{"id": "A1", "command": "sleep 30"}, {"id": "A2", "command": "true"}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.task("a", "A1").get("status") == "in_progress")
        doc = await live.settled("a")
        text = path.read_text()
        assert doc == json.loads(text)
        lh.write_and_rename(path, text.rstrip()[:-1])  # the closing brace is missing
        await live.until(lambda: bool(live.kinds("queue_file_invalid")))
        lh.write_and_rename(path, text)
        await live.until(lambda: live.engine.all_problems() == [])
        assert live.status("a:A1") is Status.IN_PROGRESS
        # The journal says so too: its last word on the file is not that it is broken.
        (fixed,) = live.kinds("queue_file_valid")
        assert fixed[1:] == ("a", {"file": live.engine.tracks["a"].definition.path})
        row = live.engine.store.last_event(("queue_file_valid",))
        assert row is not None
        said = eventtext.sentence(row.type, row.track, row.data)
        assert (
            said == f"track a: {live.engine.tracks['a'].definition.path} is valid again and applied"
        )


async def test_a_broken_save_is_reported_once_quiet_and_the_last_good_version_stays(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    good = [
        {"id": "A1", "command": "sleep 30"},
        {"id": "A2", "command": lh.note("A2", tmp_path), "dependencies": ["A1"]},
    ]
    path = write_track("a", good)
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.task("a", "A1").get("status") == "in_progress")
        text = path.read_text()
        lh.write_and_rename(path, text.rstrip()[:-1])  # the closing brace is missing
        await live.until(lambda: bool(live.kinds("queue_file_invalid")))
        expected = validate_lines(path)
        assert "invalid JSON" in expected[0]
        assert [p.render() for p in live.engine.all_problems()] == expected
        assert live.kinds("queue_file_invalid")[0][2]["problems"] == expected
        assert live.status("a:A1") is Status.IN_PROGRESS  # running work goes on
        assert path.read_text() == text.rstrip()[:-1]  # never written over

        # A cycle introduced by the edit is refused as a whole, with the same words.
        doc = json.loads(text)
        doc["features"][0]["dependencies"] = ["A2"]
        save(path, doc)
        await live.until(lambda: len(live.kinds("queue_file_invalid")) == 2)
        cycle = [p.render() for p in live.engine.all_problems()]
        assert cycle == validate_lines(path)
        assert "dependency cycle: a:A1 -> a:A2 -> a:A1" in cycle[0]
        assert live.engine.defs[TaskKey("a", "A1")].deps == ()
        view = EngineView(live.engine, DaemonMeta(started_at="now"))
        said = explain_lines(view, TaskKey("a", "A2"))
        assert said[-2].endswith(
            "has 1 error(s): its last save was refused; the daemon runs the version before it"
            " until it is fixed:"
        )
        assert "dependency cycle: a:A1 -> a:A2 -> a:A1" in said[-1]

        # The next good save is picked up.
        doc["features"][0]["dependencies"] = []
        doc["features"].append({"id": "A3", "command": lh.note("A3", tmp_path)})
        save(path, doc)
        await live.until(lambda: TaskKey("a", "A3") in live.engine.graph)
        assert live.engine.all_problems() == []
        assert [e[0] for e in live.kinds("reload_plan")] == ["reload_plan"]
        assert live.status("a:A1") is Status.IN_PROGRESS


async def test_a_file_written_slowly_in_pieces_is_never_reported_nor_applied_half(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track("a", [{"id": "A0", "command": "true"}])
    items = [{"id": f"T{i}", "command": "true", "description": "x" * 200} for i in range(300)]
    text = lh.dump({"features": [{"id": "A0", "command": "true"}, *items]})
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("a:A0") is Status.COMPLETE)
        await live.settled("a")
        # 20 pieces, 50 ms apart: a second in all, each pause shorter than the quiet time.
        await lh.write_in_pieces(path, text, pieces=20, pause=0.05)
        await live.until(
            lambda: live.engine.graph.remaining("a") == 0 and len(live.engine.graph) == 301
        )
        assert live.kinds("queue_file_invalid") == []
        plans = live.kinds("reload_plan")
        assert len(plans) == 1
        assert plans[0][2]["counts"]["added"] == 300


async def test_a_file_that_refers_to_a_task_not_there_yet_is_loaded_once_it_is(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    a = write_track("a", [{"id": "A1", "command": lh.note("A1", tmp_path)}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("a:A1") is Status.COMPLETE)
        b = tracks_dir / "b.json"
        save(
            b,
            {
                "features": [
                    {"id": "B1", "command": lh.note("B1", tmp_path), "dependencies": ["a:A2"]}
                ]
            },
        )
        await live.until(lambda: bool(live.kinds("queue_file_invalid")))
        assert "b" not in live.engine.tracks
        problems = [p.render() for p in live.engine.all_problems()]
        assert problems == validate_lines(a, b)
        assert "unknown task" in problems[0]
        doc = await live.settled("a")
        doc["features"].append({"id": "A2", "command": lh.note("A2", tmp_path)})
        save(a, doc)
        await live.until(lambda: lh.ledger(tmp_path)[-1:] == ["B1"])
        assert lh.ledger(tmp_path) == ["A1", "A2", "B1"]
        assert live.engine.all_problems() == []
        assert (
            "track_added",
            "b",
            {"file": live.engine.tracks["b"].definition.path},
        ) in live.events

        # The same for an edit of a track in force: refused until the task it needs exists.
        doc_b = await live.settled("b")
        doc_b["features"].append(
            {"id": "B2", "command": lh.note("B2", tmp_path), "dependencies": ["a:A3"]}
        )
        save(b, doc_b)
        await live.until(lambda: bool(live.engine.tracks["b"].problems))
        assert TaskKey("b", "B2") not in live.engine.graph
        doc = await live.settled("a")
        doc["features"].append({"id": "A3", "command": lh.note("A3", tmp_path)})
        save(a, doc)
        await live.until(lambda: lh.ledger(tmp_path)[-1:] == ["B2"])
        assert live.engine.all_problems() == []


async def test_a_new_file_with_a_taken_track_name_is_refused(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("a", [{"id": "A1", "command": "true"}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("a:A1") is Status.COMPLETE)
        save(tracks_dir / "copy.json", {"track": {"name": "a"}, "features": [{"id": "Z"}]})
        await live.until(lambda: bool(live.engine.all_problems()))
        (problem,) = live.engine.all_problems()
        assert problem.path == "track.name"
        assert "duplicate track name 'a'" in problem.message
        assert [k.id for k in live.engine.graph.keys("a")] == ["A1"]
        (tracks_dir / "copy.json").unlink()
        await live.until(lambda: not live.engine.all_problems())


async def test_a_removed_file_stops_its_track_and_putting_it_back_resumes_it(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    original: list[dict[str, Any]] = [
        {"id": "A1", "command": lh.note("A1", tmp_path)},
        {"id": "A2", "command": f"{lh.note('A2', tmp_path)}; sleep 30", "dependencies": ["A1"]},
    ]
    a = write_track("a", original)
    write_track("b", [{"id": "B1", "command": lh.note("B1", tmp_path), "dependencies": ["a:A2"]}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: lh.ledger(tmp_path) == ["A1", "A2"])
        a.unlink()
        await live.until(lambda: "a" not in live.engine.tracks)
        a2 = TaskKey("a", "A2")
        await live.until(lambda: live.engine.store.attempts(a2)[0].ended_at is not None)
        (attempt,) = live.engine.store.attempts(a2)
        assert attempt.state == "interrupted"
        assert "was removed" in (attempt.reason or "")
        lines = explain.describe(live.engine.graph, TaskKey("b", "B1"), lambda k: None)
        assert "a:A2 (missing: the queue file of track 'a' is gone)" in "\n".join(lines)
        assert live.engine.states[TaskKey("a", "A1")].status is Status.COMPLETE  # kept
        plan = live.kinds("reload_plan")[-1][2]
        assert (plan["action"], plan["removed_running"]) == ("remove", ["A2"])

        # Back from version control, every status written as pending (an old commit of the
        # file): the store wins, this is not an order, and the track resumes where it stopped.
        restored = [{**task, "status": "pending"} for task in original]
        lh.write_and_rename(a, lh.dump({"features": restored}))
        await live.until(lambda: lh.ledger(tmp_path).count("A2") == 2)
        assert lh.ledger(tmp_path) == ["A1", "A2", "A2"]  # A1 is not run again
        doc = await live.settled("a")
        assert [t.get("status") for t in doc["features"]] == ["complete", "in_progress"]
        assert doc["features"][0]["attempts"] == 1


async def test_the_daemons_own_writes_never_trigger_a_reload(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    items = [
        {"id": f"T{i}", "command": "sleep 0.05", "dependencies": [f"T{i - 1}"] if i else []}
        for i in range(8)
    ]
    path = write_track("a", items)
    runtimes: list[Runtime] = []

    async def keep_runtime(
        rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        runtimes.append(rt)
        task_status.started()

    async with lh.live_daemon(tracks_dir, services=[keep_runtime]) as live:
        await live.until(lambda: live.engine.graph.remaining("a") == 0)
        await live.settled("a")
        writeback = runtimes[0].writeback
        await writeback.flush()  # every write the daemon has to make is made
        stats = live.engine.stats
        writes = stats["file_writes"]
        assert writes >= 3

        # Touched: seen, but not an edit. Its event comes after those of the daemon's writes:
        # once it is handed on, theirs were too (however late), and none was taken for an edit.
        os.utime(path)
        await live.until(lambda: stats.get("files_changed", 0) >= 1)
        assert stats["files_changed"] == 1

        # Saved with the same bytes: not an edit either. Once the file is read (by the pass
        # the touch started, or by its own) it is the daemon's again: its event, handed on or
        # not, starts nothing more.
        lh.write_and_rename(path, path.read_text())
        await live.until(lambda: writeback.is_own("a", path))
        assert live.control.reload is not None
        await live.control.reload()  # a pass of its own, after the ones these saves started
        assert live.kinds("reload_plan") == []
        assert stats["file_writes"] == writes


async def test_reload_reads_every_file_without_a_watcher(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    a = write_track("a", [{"id": "A1", "command": lh.note("A1", tmp_path)}])
    gone = write_track("gone", [{"id": "G1", "command": "true"}])
    async with lh.live_daemon(tracks_dir, watch=False) as live:
        await live.until(lambda: live.status("a:A1") is Status.COMPLETE)
        doc = await live.settled("a")
        doc["features"].append({"id": "A2", "command": lh.note("A2", tmp_path)})
        save(a, doc)
        save(
            tracks_dir / "new.json",
            {"features": [{"id": "N1", "command": lh.note("N1", tmp_path)}]},
        )
        save(tracks_dir / "bad.json", {"features": [{"id": "X", "dependencies": ["nowhere"]}]})
        gone.unlink()
        await anyio.sleep(0.2)
        assert "new" not in live.engine.tracks  # nothing watches: nothing happened yet
        assert live.control.reload is not None
        result = await live.control.reload()
        assert (result.added, result.removed, result.changed) == (("new",), ("gone",), ("a",))
        assert [p.render() for p in result.problems] == [
            p for p in validate_lines(tracks_dir) if "bad.json" in p
        ]
        await live.until(lambda: sorted(lh.ledger(tmp_path)) == ["A1", "A2", "N1"])


def test_sighup_reloads_a_daemon_that_does_not_watch(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    a = write_track(
        "a", [{"id": "A1", "command": lh.note("A1", tmp_path)}, {"id": "W", "command": "sleep 30"}]
    )
    proc = ph.daemon(tracks_dir, tmp_path / "state", watch="false")
    try:
        ph.wait_for(lambda: lh.ledger(tmp_path) == ["A1"])
        ph.wait_for(lambda: json.loads(a.read_text())["features"][1].get("status") == "in_progress")
        doc = json.loads(a.read_text())
        doc["features"].append({"id": "A2", "command": lh.note("A2", tmp_path)})
        doc["track"] = {"concurrency": 2}
        save(a, doc)
        proc.send_signal(signal.SIGHUP)
        ph.wait_for(lambda: lh.ledger(tmp_path) == ["A1", "A2"])
    finally:
        assert ph.stop(proc) == 0
    store = Store.open(tmp_path / "state", SystemClock())
    plans = [e for e in store.events() if e.type == "reload_plan"]
    assert len(plans) == 1
    assert plans[0].data["settings"] == {"concurrency": [1, 2]}
    assert os.path.exists(tmp_path / "daemon.log")


def _refused(directory: Path) -> inotify.DirWatch:
    raise OSError(errno.EMFILE, "inotify_init1: Too many open files")


@pytest.mark.parametrize("backend", ["inotify", "watchfiles", "inotify-refused"])
async def test_the_watch_comes_back_when_the_directory_does(
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
) -> None:
    if backend.startswith("inotify") and not inotify.available():
        pytest.skip("no inotify on this system")
    if backend == "watchfiles":
        monkeypatch.setattr(inotify, "available", lambda: False)
    if backend == "inotify-refused":  # out of inotify instances: watchfiles takes over
        monkeypatch.setattr(inotify, "DirWatch", _refused)
    path = write_track("a", [{"id": "A1", "command": lh.note("A1", tmp_path)}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("a:A1") is Status.COMPLETE)
        await live.settled("a")
        aside = tmp_path / "aside"
        os.rename(tracks_dir, aside)  # a checkout switched, a directory restored from backup
        await anyio.sleep(0.3)
        os.rename(aside, tracks_dir)
        doc = json.loads(path.read_text())
        doc["features"].append({"id": "A2", "command": lh.note("A2", tmp_path)})
        save(path, doc)
        a2 = TaskKey("a", "A2")
        await live.until(
            lambda: a2 in live.engine.states and live.status("a:A2") is Status.COMPLETE
        )
        assert lh.ledger(tmp_path) == ["A1", "A2"]


async def test_a_file_gone_for_a_moment_does_not_stop_its_track(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    gate = tmp_path / "gate"
    a = write_track("a", [{"id": "A1", "command": f"while [ ! -f {gate} ]; do sleep 0.01; done"}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("a:A1") is Status.IN_PROGRESS)
        aside = tmp_path / "a.json.moved"
        os.rename(a, aside)  # a tool that moves the file out and back (a checkout, a sync)
        await anyio.sleep(lh.QUIET / 3)  # seen missing by the watcher, not for watch_quiet
        os.rename(aside, a)
        await anyio.sleep(lh.QUIET * 2)
        assert live.kinds("track_removed") == []
        assert live.status("a:A1") is Status.IN_PROGRESS  # its attempt was never stopped
        gate.touch()
        await live.until(lambda: live.status("a:A1") is Status.COMPLETE)
