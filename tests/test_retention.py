"""Retention of attempt logs: by age, by total size, never the running attempts' files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.retention import DAY, LogRetention, companions, prune
from orchestrator.supervisor import Control, serve

from .conftest import WriteTrack
from .daemon_harness import settings
from .process_harness import wait_for

NOW = 1_800_000_000.0


def _file(root: Path, name: str, size: int, age_days: float) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = NOW - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def test_old_files_go_first_then_the_oldest_until_under_the_cap(tmp_path: Path) -> None:
    old = _file(tmp_path, "t/A.attempt-1.log", 100, 40)
    keep = _file(tmp_path, "t/A.attempt-2.log", 100, 3)
    older = _file(tmp_path, "u/B.attempt-1.log", 300, 10)
    newer = _file(tmp_path, "u/B.attempt-2.log", 300, 1)
    result = prune(tmp_path, now=NOW, keep_days=30, max_total_bytes=500)
    assert not old.exists()  # too old
    assert not older.exists()  # the oldest while over the cap
    assert keep.exists()
    assert newer.exists()
    assert (result.files, result.bytes, result.remaining_bytes) == (2, 400, 400)
    assert (tmp_path / "t").is_dir()  # directories stay


def test_running_attempts_and_fresh_files_are_never_removed(tmp_path: Path) -> None:
    running = _file(tmp_path, "t/A.attempt-3.log", 1000, 90)
    prompt = _file(tmp_path, "t/A.attempt-3.prompt", 10, 90)
    failure = _file(tmp_path, "t/A.last-failure.txt", 10, 90)
    fresh = _file(tmp_path, "t/B.attempt-1.log", 1000, 0)
    other = _file(tmp_path, "t/C.last-failure.txt", 10, 90)
    protected = companions([str(running)])
    assert protected == {str(running), str(prompt), str(failure)}
    result = prune(
        tmp_path, now=NOW, keep_days=30, max_total_bytes=1, protected=protected, since=NOW
    )
    assert all(p.exists() for p in (running, prompt, failure, fresh))
    assert not other.exists()
    assert result.remaining_bytes == 2020


def test_zero_means_no_limit(tmp_path: Path) -> None:
    path = _file(tmp_path, "t/A.attempt-1.log", 5000, 3650)
    assert prune(tmp_path, now=NOW, keep_days=0, max_total_bytes=0).files == 0
    assert path.exists()
    assert prune(tmp_path / "missing", now=NOW, keep_days=1, max_total_bytes=1).files == 0


@pytest.mark.anyio
async def test_the_service_sweeps_in_the_background_and_spares_running_logs(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    gate, marker = tmp_path / "gate", tmp_path / "marker"
    write_track(
        "t",
        [
            {"id": "OLD", "command": "true", "status": "complete"},
            {"id": "RUN", "command": f"touch {marker}; while [ ! -f {gate} ]; do sleep 0.02; done"},
        ],
    )
    state = tmp_path / "state"
    stale = state / "logs" / "t" / "OLD.attempt-1.log"
    stale.parent.mkdir(parents=True)
    stale.write_text("an old attempt\n")
    long_ago = time.time() - 60 * DAY
    os.utime(stale, (long_ago, long_ago))
    cfg = settings(tracks_dir, state, logs_keep_days=30)
    retention = LogRetention(interval=0.01)
    control = Control()
    kept: list[bool] = []

    async def scenario(engine: Engine) -> None:
        await anyio.to_thread.run_sync(wait_for, marker.exists)
        (running,) = engine.running_logs
        os.utime(running, (long_ago, long_ago))  # as old as the stale one, but running
        await retention.wait_sweeps(retention.sweeps + 2)
        kept.append(await anyio.Path(running).exists())
        gate.touch()
        while any(engine.running.values()):
            await engine.wait_changed()
        control.request_stop()

    async with LocalExecutor(1.0) as executor, anyio.create_task_group() as tg:

        def ready(engine: Engine) -> None:
            tg.start_soon(scenario, engine)

        code = await serve(
            cfg,
            executor,
            control=control,
            handle_signals=False,
            services=[retention],
            on_ready=ready,
        )
    assert code == 0
    assert kept == [True]
    assert not stale.exists()
    assert retention.sweeps >= 3
