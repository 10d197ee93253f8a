"""Orders and edits at awkward moments of a running daemon: while a cut-short attempt ends,
while a task waits for its last loop to end (a retry queued behind it), in quick succession,
with a pause or a stop in between, and dependencies edited while a task runs.

The slow-to-end attempts are :func:`live_harness.stubborn` runs (they ignore SIGTERM and end
at the kill grace); overlapping runs would show in its ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import worker
from orchestrator.clock import SystemClock
from orchestrator.daemon import Engine
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event
from orchestrator.store import Store

from . import live_harness as lh
from .conftest import WriteTrack

pytestmark = pytest.mark.anyio


async def test_skip_retry_twice_while_the_attempt_ends_frees_every_slot(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Three slots: the second skip and retry find the task queued behind its ending attempt;
    each order must give back the slot of the launch it drops."""
    key = lh.QUEUED
    async with lh.retry_queued(tmp_path, tracks_dir, write_track, concurrency=3) as (live, _):
        engine = live.engine
        engine.order(key, Event.ORDER_SKIP, "skip it again")
        engine.order(key, Event.ORDER_RETRY, "run it after all, really")
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)
        await live.until(lambda: lh.ledger(tmp_path)[-1:] == ["end"])
        assert lh.ledger(tmp_path) == ["start", "start", "end"]
        await live.until(lambda: not engine.busy())
        assert engine.running["t"] == 0


@pytest.mark.parametrize("pause", ["track", "daemon"])
async def test_a_retry_waiting_for_the_last_attempt_does_not_start_once_paused(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, pause: str
) -> None:
    """A pause given while the retry waits holds it, pending (in the file too), until resumed."""
    async with lh.retry_queued(tmp_path, tracks_dir, write_track) as (live, _):
        engine = live.engine
        if pause == "track":
            engine.pause_track("t", "hold on")
        else:
            engine.pause_daemon("hold on")
        await live.until(lambda: not engine.busy())
        assert lh.ledger(tmp_path) == ["start"]
        assert live.status("t:K") is Status.PENDING
        doc = await live.settled("t")  # the file says so too
        assert doc["summary"]["pending"] == 1
        if pause == "track":
            engine.resume_track("t")
        else:
            engine.resume_daemon()
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)
        assert lh.ledger(tmp_path) == ["start", "start", "end"]


async def test_a_retry_waiting_for_the_last_attempt_is_not_an_attempt_when_the_daemon_stops(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    key = lh.QUEUED
    async with lh.retry_queued(tmp_path, tracks_dir, write_track) as (live, _):
        live.control.request_stop()
        await live.until(lambda: not live.engine.busy())
        assert live.status("t:K") is Status.PENDING
    # The skipped attempt is recorded interrupted (the skip says why); the retry waiting for it
    # never began a loop, so nothing says an attempt of it was interrupted.
    assert live.task("t", "K")["status"] == "pending"
    store = Store.open(live.state, SystemClock())
    stored = store.task(key)
    assert stored is not None
    assert stored.status is Status.PENDING
    assert [a.state for a in store.attempts(key)] == ["interrupted"]
    assert [e for e in store.events() if e.type == "attempt_interrupted"] == []


async def test_orders_on_a_task_launched_but_not_begun_leave_the_store_true_when_it_stops(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Retry, skip, retry in one go on a failed task: the first retry hands it to a runner
    that has not taken it yet when the second retry comes. Whatever runs it, a stop during its
    attempt leaves it pending in the store, as a clean stop does."""
    first, ledger = tmp_path / "first", tmp_path / "ledger"
    command = f"[ -e {first} ] || {{ touch {first}; exit 1; }}; echo start >> {ledger}; sleep 30"
    write_track(
        "t", [{"id": "K", "command": command, "max_iterations": 1}], track={"concurrency": 2}
    )
    key = TaskKey("t", "K")
    async with lh.live_daemon(tracks_dir) as live:
        engine = live.engine
        await live.until(lambda: live.status("t:K") is Status.FAILED)
        engine.order(key, Event.ORDER_RETRY, "again")
        engine.order(key, Event.ORDER_SKIP, "no")
        engine.order(key, Event.ORDER_RETRY, "yes, again")
        await live.until(lambda: lh.ledger(tmp_path) == ["start"])
        live.control.request_stop()
        await live.until(lambda: not engine.busy())
        assert live.status("t:K") is Status.PENDING
    stored = Store.open(live.state, SystemClock()).task(key)
    assert stored is not None
    assert stored.status is Status.PENDING


@pytest.mark.parametrize("edit", ["dependencies", "start_after"])
async def test_a_running_task_given_a_dependency_not_done_waits_for_it_between_attempts(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, edit: str
) -> None:
    """The edit does not cut the running attempt short; the next attempt waits for L, then
    goes on in the same iteration budget."""
    go, ledger = tmp_path / "go", tmp_path / "ledger"
    command = f"echo K >> {ledger}; while [ ! -e {go} ]; do sleep 0.02; done; exit 1"
    path = write_track("t", [{"id": "K", "command": command, "max_iterations": 2}])
    write_track("u", [{"id": "L", "command": "true", "paused": True}])
    key = TaskKey("t", "K")
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: lh.ledger(tmp_path) == ["K"])
        doc = json.loads(path.read_text())
        if edit == "dependencies":
            doc["features"][0]["dependencies"] = ["u:L"]
        else:
            doc["track"] = {"start_after": ["u:L"]}
        lh.write_and_rename(path, lh.dump(doc))
        await live.until(lambda: bool(live.kinds("reload_plan")))
        go.touch()
        await live.until(lambda: live.status("t:K") is Status.PENDING)
        assert lh.ledger(tmp_path) == ["K"]
        live.engine.order(TaskKey("u", "L"), Event.ORDER_SKIP, "not needed")
        await live.until(lambda: live.status("t:K") is Status.FAILED)
        assert lh.ledger(tmp_path) == ["K", "K"]
        attempts = live.engine.store.attempts(key)
        assert [(a.number, a.iteration, a.verdict) for a in attempts] == [
            (1, 1, "FAIL"),
            (2, 2, "FAIL"),
        ]


@pytest.mark.parametrize("what", ["track", "daemon"])
async def test_a_pause_holds_a_running_task_before_its_next_attempt(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, what: str
) -> None:
    """Paused while an attempt that fails runs: that attempt finishes, the next does not begin
    (nothing new starts); resumed, the task goes on at its next iteration."""
    go, ledger = tmp_path / "go", tmp_path / "ledger"
    passing = tmp_path / "go.2"
    command = (
        f"echo K >> {ledger}; [ -e {passing} ] && exit 0; "
        f"while [ ! -e {go} ]; do sleep 0.02; done; exit 1"
    )
    write_track("t", [{"id": "K", "command": command, "max_iterations": 3}])
    key = TaskKey("t", "K")
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: lh.ledger(tmp_path) == ["K"])
        if what == "track":
            live.engine.pause_track("t", "a person")
        else:
            live.engine.pause_daemon("a person")
        go.touch()
        await live.until(lambda: live.status("t:K") is Status.PENDING)
        assert not live.engine.busy()
        assert lh.ledger(tmp_path) == ["K"]
        passing.touch()
        if what == "track":
            live.engine.resume_track("t")
        else:
            live.engine.resume_daemon()
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)
        attempts = live.engine.store.attempts(key)
        assert [(a.number, a.iteration, a.verdict) for a in attempts] == [
            (1, 1, "FAIL"),
            (2, 2, "PASS"),
        ]


@pytest.mark.parametrize("held", [False, True])
async def test_a_defect_in_the_cut_short_loop_leaves_the_retry_queued_behind_it_alone(
    tmp_path: Path,
    tracks_dir: Path,
    write_track: WriteTrack,
    monkeypatch: pytest.MonkeyPatch,
    held: bool,
) -> None:
    """A defect of orchestratord in a loop that orders cut short and superseded (skip, then
    retry while its attempt ended) is logged, and does not block the task: the retry is a
    person's, and its own loop runs (at once, or when the pause that held it is lifted)."""
    interrupted = worker._interrupted

    def faulty(engine: Engine, key: TaskKey, attempt_id: int | None) -> None:
        interrupted(engine, key, attempt_id)
        if engine.loop_queued(key):  # the old loop, its attempt ended, the retry behind it
            raise RuntimeError("a defect")

    monkeypatch.setattr(worker, "_interrupted", faulty)
    async with lh.retry_queued(tmp_path, tracks_dir, write_track) as (live, _):
        engine = live.engine
        if held:
            engine.pause_track("t", "hold on")
            await live.until(lambda: not engine.busy())
            assert live.status("t:K") is Status.PENDING
            engine.resume_track("t")
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)
        assert lh.ledger(tmp_path) == ["start", "start", "end"]
        assert not live.kinds("task_blocked")
