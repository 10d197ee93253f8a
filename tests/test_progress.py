"""The live table of the terminal that runs the daemon: what each track's "now" column says."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.clock import SystemClock
from orchestrator.daemon import Engine
from orchestrator.progress import Progress
from orchestrator.store import Store

from .conftest import WriteTrack
from .daemon_harness import run_once

pytestmark = pytest.mark.anyio


def now_column(progress: Progress, live: bool = True) -> dict[str, str]:
    """Track name -> its "now" cell, as the live table (or the summary at the end) shows it."""
    console = Console(record=True, width=200)
    console.print(progress.table(live=live))
    rows = {}
    for line in console.export_text().splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 7 and cells[0] and cells[0] != "track":
            rows[cells[0]] = cells[6]
    return rows


async def test_a_track_with_only_failed_or_blocked_work_left_is_not_waiting(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Nothing of it can run until a person acts: "waiting for dependencies" said otherwise."""
    write_track(
        "stuck",
        [
            {"id": "F", "command": "exit 1", "max_iterations": 1},
            {"id": "B", "command": "echo '<blocked>needs a key</blocked>'"},
        ],
    )
    write_track("held", [{"id": "H", "command": "true", "dependencies": ["stuck:F"]}])
    write_track("fine", [{"id": "OK", "command": "true"}])
    progress = Progress(Console(record=True))

    def attach(engine: Engine) -> None:
        progress.engine = engine

    run = await run_once(tracks_dir, on_ready=attach)
    assert run.code == 1
    assert now_column(progress) == {
        "stuck": "nothing left to run: 1 failed, 1 blocked",
        "held": "waiting for dependencies",
        "fine": "done",
    }
    assert now_column(progress, live=False)["held"] == "1 held by failed or blocked work"


async def test_a_paused_daemon_and_a_task_waiting_for_a_slot_are_said_as_such(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("first", [{"id": "A", "command": "true", "priority": "P0"}])
    write_track("second", [{"id": "B", "command": "true", "priority": "P1"}])
    progress = Progress(Console(record=True))
    seen: list[dict[str, str]] = []

    def attach(engine: Engine) -> None:
        progress.engine = engine
        seen.append(now_column(progress))

    state = tmp_path / "state"
    store = Store.open(state, SystemClock())
    try:
        store.add_events(("daemon_paused", None, {"reason": "for the night"}))
    finally:
        store.close()
    await run_once(tracks_dir, state, on_ready=attach)
    assert seen[0] == {"first": "daemon paused", "second": "daemon paused"}
    store = Store.open(state, SystemClock())
    try:
        store.add_events(("daemon_resumed", None, {}))
    finally:
        store.close()
    run = await run_once(tracks_dir, state, on_ready=attach, max_parallel=1)
    assert run.code == 0
    assert seen[1]["first"] == "starting"  # its attempt is being set up
    assert seen[1]["second"] == "ready: waiting for a slot"
