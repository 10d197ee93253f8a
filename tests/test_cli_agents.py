"""``orchestratord prompt`` and what ``status`` shows of spending and usage-limit waits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from orchestrator.clock import SystemClock
from orchestrator.model import Owned, Status, TaskKey
from orchestrator.states import TaskState
from orchestrator.store import AttemptDetails, HoldRow, Store

from .agent_harness import make_repo, needs_git
from .conftest import WriteTrack


def run(*args: str) -> tuple[int, str]:
    from orchestrator.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@needs_git
def test_prompt_prints_what_the_task_would_get_now(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    make_repo(tmp_path / "repo")
    (tmp_path / "orchestratord.toml").write_text('[defaults]\nagent = "claude"\n')
    task = {
        "id": "BUG-7",
        "agent": "BugFix",
        "description": "Search returns drafts",
        "file": "search.py",
        "tests": ["test_search.py"],
        "completion_promise": "FIXED",
        "max_iterations": 4,
    }
    write_track("backend", {"track": {"workdir": "../repo"}, "features": [task]})
    write_track(
        "ui",
        {
            "track": {"workdir": "../repo"},
            "features": [
                {"id": "U1", "command": "make ui"},
                {"id": "U2", "agent": "nobody"},
                {"id": "U3", "agent": "manual"},
            ],
        },
    )
    state = tmp_path / "state"
    common = ["--config", str(tmp_path / "orchestratord.toml"), "--state-dir", str(state)]
    code, out = run("prompt", "BUG-7", *common, "--tracks", str(tracks_dir))
    assert code == 0, out
    assert out.startswith(
        "You are working on task BUG-7 of track backend.\n\nYour role: bug fixer."
    )
    for part in ("Search returns drafts", "File: search.py", "Tests: test_search.py",
                 "<promise>FIXED</promise>", "on branch orchestratord/backend"):  # fmt: skip
        assert part in out, part
    assert "previous failure" not in out

    # After a failed attempt the daemon recorded: the next attempt's number and the failure.
    store = Store.open(state, SystemClock())
    store.put_task(TaskKey("backend", "BUG-7"), TaskState(Owned(Status.PENDING, attempts=1)))
    store.close()
    failure = state / "logs" / "backend" / "BUG-7.last-failure.txt"
    failure.parent.mkdir(parents=True)
    failure.write_text("verify 1/1 `pytest` exited with status 1\nE   assert 3 == 2\n")
    code, out = run("prompt", "backend:BUG-7", *common, "--tracks", str(tracks_dir))
    assert "This is attempt 2 of 4." in out
    assert "E   assert 3 == 2" in out

    code, out = run("prompt", "U1", *common, "--tracks", str(tracks_dir))
    assert (code, out) == (1, "orchestratord: ui:U1 runs a command, not an agent, and gets no "
                              "prompt: make ui\n")  # fmt: skip
    code, out = run("prompt", "U2", *common, "--tracks", str(tracks_dir))
    assert code == 1
    assert "unknown agent 'nobody'" in out
    code, out = run("prompt", "U3", *common, "--tracks", str(tracks_dir))
    assert "marks a task for a person" in out


def test_status_shows_spending_and_usage_limit_waits(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "agent": "claude"}, {"id": "B", "agent": "claude"}])
    state = tmp_path / "state"
    store = Store.open(state, SystemClock())
    key = TaskKey("t", "A")
    attempt = store.begin_attempt(key, TaskState(Owned(Status.IN_PROGRESS)), 1, 1, "/l")
    details = AttemptDetails(agent="claude", tokens_in=1200, tokens_out=300, cost_usd=0.42)
    store.finish_attempt(attempt, key, TaskState(Owned(Status.FAILED, attempts=1)), "FAIL",
                         "x", 1, details=details)  # fmt: skip
    now = datetime.now(UTC).isoformat(timespec="seconds")
    store.put_hold(HoldRow("claude", now, "2099-01-01T09:00:00+00:00", "limit", ("t",)))
    store.close()
    common = ["--tracks", str(tracks_dir), "--state-dir", str(state)]
    code, out = run("status", "--json", *common)
    assert code == 0
    data = json.loads(out)
    assert data["spend"] == {"tokens": 1500, "cost_usd": 0.42, "attempts": 1}
    track = data["tracks"][0]
    assert track["spend"] == {"tokens": 1500, "cost_usd": 0.42, "attempts": 1}
    assert track["waiting"] == [
        {"agent": "claude", "until": "2099-01-01T09:00:00+00:00", "reason": "limit"}
    ]
    assert data["usage_limits"][0]["tracks"] == ["t"]
    code, out = run("status", *common)
    assert "waiting until 2099-01-01T09:00:00+00:00: usage limit of agent 'claude'" in out
    assert "spent: $0.42, 1,500 tokens" in out
