"""The Markdown kanban: its rendering (pure) and the board file a daemon keeps current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.control import board
from orchestrator.model import Status

from .conftest import WriteTrack
from .control_harness import running_daemon

COLUMNS = ["pending", "in_progress", "complete", "blocked", "failed", "skipped"]


def counts(**given: int) -> dict[str, int]:
    out = dict.fromkeys(COLUMNS, 0) | given
    return {"total": sum(out.values()), **out}


def card(track: str, ident: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"ref": f"{track}:{ident}", "track": track, "id": ident, "status": status} | extra


def document(cards: list[dict[str, Any]], tracks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "generated_at": "2026-01-02T03:04:05+00:00",
        "seq": 9,
        "daemon": {"running": True, "pid": 42, "paused": False},
        "columns": COLUMNS,
        "tracks": tracks,
        "cards": cards,
    }


def test_a_lane_per_track_and_a_column_per_status() -> None:
    doc = document(
        [
            card("api", "A1", "complete", attempts=1, verdict="PASS"),
            card("api", "A2", "in_progress", attempts=1, max_iterations=3),
            card(
                "api",
                "A3",
                "failed",
                attempts=3,
                verdict="FAIL",
                error="verify 1/1 `pytest`\nfailed",
            ),
            card("ui", "U|1", "blocked", verdict="BLOCKED", error="needs <credentials>"),
            card("ui", "U2", "pending"),
        ],
        [
            {
                "name": "api",
                "paused": False,
                "counts": counts(complete=1, in_progress=1, failed=1),
                "trigger": None,
            },
            {
                "name": "ui",
                "paused": True,
                "counts": counts(blocked=1, pending=1),
                "trigger": {"refs": ["api:A3"], "holds": False, "waiting_on": ["api:A3"]},
            },
        ],
    )
    text = board.render(doc)
    lines = text.splitlines()
    assert lines[0] == "# orchestratord board"
    assert lines[2] == (
        "_Updated 2026-01-02T03:04:05+00:00 · daemon running (pid 42) · 5 tasks: "
        "1 pending, 1 in progress, 1 complete, 1 blocked, 1 failed_"
    )
    assert lines[4] == "| track | pending | in progress | complete | blocked | failed | skipped |"
    assert lines[6] == (
        "| **api**<br>1/3 done |  | A2 (attempt 2/3) | A1 |  | A3 (FAIL, 3 attempts) |  |"
    )
    assert lines[7] == (
        "| **ui**<br>0/2 done<br>paused<br>waits for api:A3 | U2 |  |  | U\\|1 (BLOCKED) |  |  |"
    )
    assert "- **api:A3** failed after 3 attempts (FAIL): verify 1/1 `pytest` failed" in lines
    assert "- **ui:U|1** blocked (BLOCKED): needs <credentials>" in lines
    assert "- **ui** starts after api:A3: waiting on api:A3" in lines


def test_a_card_in_progress_after_a_retry_shows_its_place_in_the_fresh_budget() -> None:
    """Two attempts failed, then a retry order gave a fresh budget of 2: the third attempt is
    the first of that budget, as `status` says, not "attempt 3/2"."""
    doc = document(
        [
            card("api", "R", "in_progress", attempts=2, iteration=0, max_iterations=2),
            card("api", "S", "in_progress", attempts=1, iteration=1, max_iterations=2),
        ],
        [{"name": "api", "paused": False, "counts": counts(in_progress=2), "trigger": None}],
    )
    row = next(line for line in board.render(doc).splitlines() if line.startswith("| **api**"))
    assert "R (attempt 3, iteration 1/2)<br>S (attempt 2/2)" in row


def test_the_daemon_line_says_paused_and_stopping_with_or_without_a_daemon() -> None:
    tracks = [{"name": "a", "paused": False, "counts": counts(pending=1), "trigger": None}]
    doc = document([card("a", "X", "pending")], tracks)
    stopping = doc | {"daemon": {"running": True, "pid": 42, "paused": False, "stopping": True}}
    assert " · daemon running (pid 42), stopping · " in board.render(stopping)
    stopped = doc | {"daemon": {"running": False, "source": "state", "paused": True}}
    assert " · daemon not running, PAUSED · " in board.render(stopped)


def test_crowded_cells_are_cut_with_a_count() -> None:
    cards = [card("big", f"T{i}", "pending") for i in range(board.CARDS_PER_CELL + 7)]
    tracks = [
        {"name": "big", "paused": False, "counts": counts(pending=len(cards)), "trigger": None}
    ]
    text = board.render(document(cards, tracks))
    row = next(line for line in text.splitlines() if line.startswith("| **big**"))
    assert row.count("<br>T") == board.CARDS_PER_CELL - 1
    assert "... +7 more" in row


def test_body_ignores_only_the_clock() -> None:
    doc = document(
        [card("a", "X", "pending")],
        [{"name": "a", "paused": False, "counts": counts(pending=1), "trigger": None}],
    )
    later = doc | {"generated_at": "2030-01-01T00:00:00+00:00"}
    assert board.render(doc) != board.render(later)
    assert board.body(board.render(doc)) == board.body(board.render(later))


@pytest.mark.anyio
async def test_the_daemon_keeps_the_board_file_current(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    gate = tmp_path / "gate"
    write_track("t", [{"id": "A", "command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}])
    path = tmp_path / "BOARD.md"
    async with running_daemon(tracks_dir, board_path=str(path)) as live:
        await live.until_status("t:A", Status.IN_PROGRESS)
        await live.poll(lambda: path.exists() and "A (attempt 1/10)" in path.read_text())
        gate.touch()
        await live.until_status("t:A", Status.COMPLETE)
        await live.poll(lambda: "| **t**<br>1/1 done |  |  | A |" in path.read_text())
    assert not list(tmp_path.glob(".BOARD*"))  # noqa: ASYNC240 (the daemon has stopped)
    # The file outlives the daemon: it must not say one runs.
    assert " · daemon not running · 1 task: 1 complete_" in path.read_text()
