"""What a daemon killed in a narrow window leaves behind, and how the next start deals with it.

Each test builds the state the kill leaves (the processes, files and records that exist at
that moment) rather than hoping a random kill lands in the window; ``test_chaos`` kills at
random moments.
"""

from __future__ import annotations

import pytest
import structlog.testing

from orchestrator import queuefile

from .conftest import WriteTrack
from .daemon_harness import run_once

pytestmark = pytest.mark.anyio


async def test_the_temporary_file_of_a_killed_write_is_removed_at_the_next_start(
    write_track: WriteTrack,
) -> None:
    """A write-back writes a temporary file next to the queue file and renames it into place;
    a daemon killed in between leaves it (half written, or whole), one more with each such
    kill: in a repository, `git status` shows them. The next start removes them, and only
    them (a name of that form, next to a queue file), and says so."""
    path = write_track("t", [{"id": "A", "command": "true"}])
    half = path.parent / ".t.json.k1ll3d9x.tmp"
    half.write_text('{"features": [{"id": "A", "sta')
    mine = [path.parent / ".notes.tmp", path.parent / ".t.json.tmp", path.parent / "t.json.bak"]
    for other in mine:
        other.write_text("someone else's")
    with structlog.testing.capture_logs() as logs:
        run = await run_once(path.parent)
    assert run.code == 0
    assert not half.exists()
    assert all(other.exists() for other in mine)
    removed = [e for e in logs if e["event"].startswith("removed an unfinished write")]
    assert [e["file"] for e in removed] == [queuefile.display_path(half)]
