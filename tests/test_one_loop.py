"""One Ralph loop per task at a time: a task made runnable again while its cut-short attempt is
still ending (its process given the kill grace) waits for that attempt, however many slots
its track has."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.model import Status, TaskKey

from . import live_harness as lh
from .conftest import WriteTrack

pytestmark = pytest.mark.anyio

GRACE = lh.STUBBORN_GRACE


async def test_skipped_then_pending_again_runs_once_more_after_the_attempt_ends(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track(
        "t", [{"id": "K", "command": lh.stubborn(tmp_path)}], track={"concurrency": 2}
    )
    key = TaskKey("t", "K")
    async with lh.live_daemon(tracks_dir, kill_grace=GRACE) as live:
        await live.until(lambda: lh.ledger(tmp_path) == ["start"])
        lh.set_status(path, "K", "skipped")
        await live.until(lambda: live.status("t:K") is Status.SKIPPED)
        lh.set_status(path, "K", "pending")
        await live.until(lambda: live.engine.states[key].budget_base == 0 and live.engine.busy())
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)
        assert lh.ledger(tmp_path) == ["start", "start", "end"]  # no overlap
        attempts = live.engine.store.attempts(key)
        assert [(a.state, a.verdict) for a in attempts] == [
            ("interrupted", None),
            ("finished", "PASS"),
        ]
        assert live.engine.running["t"] == 0


async def test_a_task_removed_and_put_back_runs_again_after_its_attempt_ends(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Put back, the task is in progress still (its state is the store's, kept while its
    attempt ends), so it is not dispatched before that attempt's loop has ended: this holds
    even without the queue of ``dispatch``, and guards the path through the reload."""
    path = write_track(
        "t", [{"id": "K", "command": lh.stubborn(tmp_path)}], track={"concurrency": 2}
    )
    original = path.read_text()
    async with lh.live_daemon(tracks_dir, kill_grace=GRACE) as live:
        await live.until(lambda: lh.ledger(tmp_path) == ["start"])
        lh.set_status(path, "K", None)
        await live.until(lambda: TaskKey("t", "K") not in live.engine.graph)
        lh.write_and_rename(path, original)
        await live.until(lambda: lh.ledger(tmp_path)[-1:] == ["end"])
        assert lh.ledger(tmp_path) == ["start", "start", "end"]
        await live.until(lambda: live.status("t:K") is Status.COMPLETE)


async def test_a_run_waiting_for_its_last_attempt_is_dropped_if_the_task_goes(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The queued run's slot frees as the task leaves its file, not when the attempt ends."""
    key = lh.QUEUED
    others = ({"id": "L", "command": "true"},)
    async with lh.retry_queued(tmp_path, tracks_dir, write_track, others=others) as (live, path):
        assert live.engine.running["t"] == 2  # the ending attempt, and the run after it
        lh.set_status(path, "K", None)
        await live.until(lambda: key not in live.engine.graph)
        # Only the loop still ending holds a slot (none once it has ended).
        assert live.engine.running["t"] == len(live.engine.running_keys())
        await live.until(lambda: not live.engine.busy())
        assert lh.ledger(tmp_path) == ["start"]
        assert live.engine.running["t"] == 0
