"""What edits mean, end to end: status orders and definition changes on a running daemon."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator import explain, gitattempt, worktrees
from orchestrator.model import Status, TaskKey

from . import live_harness as lh
from .agent_harness import fake_agent, make_repo, needs_git, write_config
from .conftest import WriteTrack

pytestmark = pytest.mark.anyio


def counting(ident: str, tmp_path: Path, passes_from: int) -> str:
    """Fails until its ``passes_from``-th run (counted in a file), then passes."""
    count = tmp_path / f"{ident}.count"
    return (
        f"echo x >> {count}; n=$(wc -l < {count}); echo {ident}-$n >> {tmp_path / 'ledger'}; "
        f'[ "$n" -ge {passes_from} ]'
    )


def edit(path: Path, change: dict[str, dict[str, Any] | None]) -> None:
    """Save ``path`` with fields of some tasks changed (None deletes the task)."""
    doc = json.loads(path.read_text())
    items = doc["features"]
    for ident, fields in change.items():
        index = next(i for i, t in enumerate(items) if t["id"] == ident)
        if fields is None:
            del items[index]
        else:
            items[index].update(fields)
    lh.write_and_rename(path, lh.dump(doc))


async def test_pending_runs_a_finished_task_again_with_a_fresh_budget(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track(
        "t",
        [
            {"id": "F", "command": counting("F", tmp_path, 3), "max_iterations": 2},
            {"id": "C", "command": lh.note("C", tmp_path)},
        ],
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:F") is Status.FAILED)
        await live.until(lambda: live.status("t:C") is Status.COMPLETE)
        await live.settled("t")
        edit(path, {"F": {"status": "pending"}, "C": {"status": "pending"}})
        await live.until(lambda: lh.ledger(tmp_path).count("C") == 2)
        await live.until(lambda: live.status("t:F") is Status.COMPLETE)
        await live.until(lambda: live.status("t:C") is Status.COMPLETE)
        doc = await live.settled("t")
        store = live.engine.store
        attempts = store.attempts(TaskKey("t", "F"))
        # History kept; the new budget counts from 1 again.
        assert [(a.number, a.iteration, a.verdict) for a in attempts] == [
            (1, 1, "FAIL"),
            (2, 2, "FAIL"),
            (3, 1, "PASS"),
        ]
        assert doc["features"][0]["attempts"] == 3
        assert doc["features"][1]["attempts"] == 2
        plan = live.kinds("reload_plan")[0][2]
        assert plan["orders"] == {"F": "pending", "C": "pending"}


async def test_pending_on_a_running_task_gives_it_a_fresh_budget(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    marker = tmp_path / "go"
    command = f"while [ ! -e {marker} ]; do sleep 0.02; done; rm -f {marker}; exit 1"
    path = write_track("t", [{"id": "R", "command": command, "max_iterations": 2}])
    async with lh.live_daemon(tracks_dir) as live:
        key = TaskKey("t", "R")
        await live.until(lambda: live.engine.states[key].owned.attempts == 0)
        await live.until(lambda: live.task("t", "R").get("status") == "in_progress")
        marker.touch()  # attempt 1 fails
        await live.until(lambda: live.engine.states[key].owned.attempts == 1)
        await live.until(lambda: live.task("t", "R").get("attempts") == 1)
        edit(path, {"R": {"status": "pending"}})  # during attempt 2 of 2
        await live.until(lambda: live.engine.states[key].budget_base == 1)
        marker.touch()  # attempt 2 fails: the first of the fresh budget, so a third runs
        await live.until(lambda: live.engine.states[key].owned.attempts == 2)
        assert live.status("t:R") is Status.IN_PROGRESS
        marker.touch()
        await live.until(lambda: live.status("t:R") is Status.FAILED)
        # Attempt 2 began as the second of the old budget; the order made it the first of
        # the fresh one, and its record says so (as its log line and ``status`` did).
        iterations = [(a.number, a.iteration) for a in live.engine.store.attempts(key)]
        assert iterations == [(1, 1), (2, 1), (3, 2)]


@asynccontextmanager
async def ordered_while_running(
    status: str, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> AsyncIterator[lh.Live]:
    """Track t: R runs (``sleep 30``) and D, depending on it, notes itself in the ledger;
    once R is running, ``status`` is written to it in the file."""
    path = write_track(
        "t",
        [
            {"id": "R", "command": "sleep 30"},
            {"id": "D", "command": lh.note("D", tmp_path), "dependencies": ["R"]},
        ],
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.task("t", "R").get("status") == "in_progress")
        edit(path, {"R": {"status": status}})
        yield live


async def test_skipped_cancels_a_running_task_and_dependents_proceed(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    async with ordered_while_running("skipped", tmp_path, tracks_dir, write_track) as live:
        await live.until(lambda: lh.ledger(tmp_path) == ["D"])
        await live.until(lambda: live.status("t:D") is Status.COMPLETE)
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == "skipped"
        (attempt,) = live.engine.store.attempts(TaskKey("t", "R"))
        assert attempt.state == "interrupted"
        assert attempt.reason == "status set to skipped in the file"


async def test_complete_accepts_a_running_task_without_its_verdict(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    async with ordered_while_running("complete", tmp_path, tracks_dir, write_track) as live:
        await live.until(lambda: live.status("t:D") is Status.COMPLETE)
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == "complete"
        assert doc["features"][0]["completed_at"]
        assert live.engine.store.attempts(TaskKey("t", "R"))[0].state == "interrupted"


async def test_blocked_stops_a_running_task_and_dependents_wait(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    async with ordered_while_running("blocked", tmp_path, tracks_dir, write_track) as live:
        await live.until(
            lambda: live.engine.store.attempts(TaskKey("t", "R"))[0].ended_at is not None
        )
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == "blocked"
        assert doc["features"][0]["error"] == "status set to blocked in the file"
        assert live.status("t:D") is Status.PENDING
        assert not live.engine.busy()
        lines = explain.describe(live.engine.graph, TaskKey("t", "D"), lambda k: None)
        assert any("t:R (blocked)" in line for line in lines), lines
        assert lh.ledger(tmp_path) == []


async def test_a_running_task_keeps_its_attempt_and_its_next_one_uses_the_new_definition(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    marker = tmp_path / "go"
    first = (
        f"echo v1 >> {tmp_path / 'ledger'}; while [ ! -e {marker} ]; do sleep 0.02; done; exit 1"
    )
    path = write_track("t", [{"id": "R", "command": first, "max_iterations": 3}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: lh.ledger(tmp_path) == ["v1"])
        edit(path, {"R": {"command": lh.note("v2", tmp_path), "description": "second try"}})
        await live.until(lambda: live.engine.defs[TaskKey("t", "R")].description == "second try")
        assert live.status("t:R") is Status.IN_PROGRESS  # not restarted
        marker.touch()
        await live.until(lambda: live.status("t:R") is Status.COMPLETE)
        assert lh.ledger(tmp_path) == ["v1", "v2"]
        attempts = live.engine.store.attempts(TaskKey("t", "R"))
        assert [(a.number, a.verdict) for a in attempts] == [(1, "FAIL"), (2, "PASS")]
        plan = live.kinds("reload_plan")[0][2]
        assert plan["changed"] == {"R": ["description", "command"]}


async def test_a_task_removed_from_the_file_is_cancelled_and_dropped(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track(
        "t",
        [{"id": "K", "command": "sleep 30"}, {"id": "L", "command": lh.note("L", tmp_path)}],
        track={"concurrency": 1},
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.task("t", "K").get("status") == "in_progress")
        edit(path, {"K": None})
        await live.until(lambda: lh.ledger(tmp_path) == ["L"])
        assert TaskKey("t", "K") not in live.engine.graph
        (attempt,) = live.engine.store.attempts(TaskKey("t", "K"))
        assert (attempt.state, attempt.reason) == ("interrupted", "removed from its queue file")


async def test_a_task_removed_while_its_attempt_waits_for_a_thread_is_dropped(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal cancels the attempt while git's look at the workdir runs in a thread, which
    no cancellation interrupts: the attempt must see it before it plans, not fail for want of
    the task's definition (which took the daemon down)."""
    held = lh.hold(monkeypatch, worktrees.Trees, "repo_of")
    path = write_track(
        "t",
        [
            {"id": "K", "command": lh.note("K", tmp_path)},
            {"id": "L", "command": lh.note("L", tmp_path)},
        ],
        track={"concurrency": 1},
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(held.entered.is_set)
        edit(path, {"K": None})
        await live.until(lambda: TaskKey("t", "K") not in live.engine.defs)
        held.release.set()
        await live.until(lambda: lh.ledger(tmp_path) == ["L"])
        (attempt,) = live.engine.store.attempts(TaskKey("t", "K"))
        assert (attempt.state, attempt.reason) == ("interrupted", "removed from its queue file")


@needs_git
@pytest.mark.parametrize("by", ["command", "agent"])
async def test_a_task_removed_while_its_failed_attempt_is_put_aside_is_dropped(
    by: str,
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same between attempts: the removal comes while git keeps the failed attempt's
    changes aside (in a thread). The Ralph loop must not begin another attempt, and an agent's
    spending is still checked against the track's budgets."""
    held = lh.hold(monkeypatch, gitattempt.GitAttempt, "_save_and_reset")
    make_repo(tmp_path / "repo")
    if by == "agent":
        agent = fake_agent(tmp_path / "agent", {"tasks": {"K": [{"json": True, "cost": 0.3}]}})
        write_config(
            tmp_path, f'[budgets]\ntrack_usd = 0.1\n\n[agents.claude]\nbinary = "{agent}"\n'
        )
        doomed: dict[str, Any] = {"id": "K", "agent": "claude", "verify": "false"}
    else:
        doomed = {"id": "K", "command": "false"}
    path = write_track(
        "t",
        [
            {**doomed, "max_iterations": 3},
            {"id": "L", "command": "true", "allow_no_changes": True},
        ],
        track={"workdir": "../repo", "concurrency": 1},
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(held.entered.is_set)
        edit(path, {"K": None})
        await live.until(lambda: TaskKey("t", "K") not in live.engine.defs)
        held.release.set()
        if by == "agent":  # over the track's budget: the track pauses, L waits
            await live.until(lambda: bool(live.kinds("budget_exceeded")))
            live.engine.resume_track("t")
        await live.until(lambda: live.status("t:L") is Status.COMPLETE)
        (attempt,) = live.engine.store.attempts(TaskKey("t", "K"))
        assert (attempt.state, attempt.verdict) == ("finished", "FAIL")
        assert live.engine.states[TaskKey("t", "K")].status is Status.PENDING
        doc = await live.settled("t")
        assert [t["id"] for t in doc["features"]] == ["L"]
        assert doc["summary"]["total"] == 1
