"""The advice `explain` gives about the task at the root of a wait, on a real daemon's state."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli

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
