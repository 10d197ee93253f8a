"""The advice `explain` gives about the task at the root of a wait, on a real daemon's state."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.clock import SystemClock
from orchestrator.store import Store

from .conftest import WriteTrack
from .daemon_harness import run_once


@pytest.mark.anyio
async def test_a_task_for_a_person_is_to_be_marked_complete_not_retried(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "CALL", "agent": "manual", "description": "Call the licensing board"},
            {"id": "FIX", "command": "echo '<blocked>no API key</blocked>'"},
            {"id": "B", "command": "true", "dependencies": ["CALL"]},
        ],
    )
    run = await run_once(tracks_dir)
    where = ["--tracks", str(tracks_dir), "--state-dir", str(run.state)]

    def explain(ref: str) -> list[str]:
        result = CliRunner().invoke(cli, ["explain", ref, *where], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    root = explain("B")[-1]
    assert root.startswith("    t:CALL is blocked: agent 'manual' marks this task for a person")
    assert root.endswith(
        ': once it is done, set its "status" to "complete" in its queue file (a retry only '
        "blocks it again; `orchestratord skip t:CALL` goes on without it)."
    )
    assert 'set its "status" to "complete" in its queue file' in explain("CALL")[-1]
    assert explain("FIX")[-1] == (
        "Its dependents wait for it; fix the cause, then `orchestratord retry t:FIX` "
        "(or `skip t:FIX`)."
    )


def test_a_pending_root_of_a_wait_says_what_holds_it_back(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Not "it is pending but held back": its paused track, or the task's own pause."""
    write_track(
        "ui",
        [
            {"id": "U1", "command": "true", "dependencies": ["api:A1", "api:A2"]},
        ],
    )
    write_track(
        "api",
        {
            "track": {"paused": True},
            "features": [{"id": "A1", "command": "true"}],
        },
    )
    write_track(
        "more",
        [{"id": "A2", "command": "true", "paused": True}],
    )
    (tracks_dir / "ui.json").write_text(
        (tracks_dir / "ui.json").read_text().replace("api:A2", "more:A2")
    )
    where = ["--tracks", str(tracks_dir), "--state-dir", str(tracks_dir.parent / "state")]
    result = CliRunner().invoke(cli, ["explain", "U1", *where], catch_exceptions=False)
    assert result.stdout.splitlines()[-2:] == [
        "    api:A1 is pending: its track 'api' is paused (`orchestratord resume api` continues).",
        "    more:A2 is pending: the task itself is paused (its `paused` field is true).",
    ]


def test_a_ready_root_of_a_wait_starts_once_a_paused_daemon_is_resumed(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}, {"id": "B", "dependencies": ["A"]}])
    state = tracks_dir.parent / "state"
    store = Store.open(state, SystemClock())
    try:
        store.add_events(("daemon_paused", None, {"reason": "for the night"}))
    finally:
        store.close()
    where = ["--tracks", str(tracks_dir), "--state-dir", str(state)]
    result = CliRunner().invoke(cli, ["explain", "B", *where], catch_exceptions=False)
    assert result.stdout.splitlines()[-1] == (
        "    t:A is pending: it is ready and starts once the daemon is resumed."
    )
