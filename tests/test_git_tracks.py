"""Agents in real git repositories: one worktree per track, trustworthy completion, commits.

The agent is a fake executable (tests/fake_agent.py) run through the built-in ``claude``
profile: it records its argv, stdin and working directory, edits files, prints stream-json
with a cost, and exits as told.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.model import TaskKey

from .agent_harness import (
    commits,
    fake_agent,
    files_in,
    git,
    make_repo,
    message,
    needs_git,
    record,
    write_config,
)
from .conftest import WriteTrack
from .daemon_harness import run_once

pytestmark = [pytest.mark.anyio, needs_git]


def claude_config(tmp_path: Path, plan: dict[str, Any], extra: str = "") -> Path:
    exe = fake_agent(tmp_path / "agent", plan)
    return write_config(
        tmp_path,
        f'[defaults]\nagent = "claude"\nmax_iterations = 3\n\n[agents.claude]\nbinary = "{exe}"\n'
        + extra,
    )


def task(ident: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "description": f"Build {ident.lower()}: the whole of it",
        "completion_promise": "DONE",
        **fields,
    }


async def test_two_tracks_share_a_repository_through_their_own_worktrees(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "a project\n", "src/.keep": ""})
    before = git(repo, "rev-parse", "HEAD")
    plan = {
        "tasks": {
            "A1": [{"write": {"src/alpha.py": "A = 1\n"}, "json": True, "cost": 0.25}],
            "A2": [{"write": {"src/alpha2.py": "A2 = 2\n"}, "json": True, "cost": 0.5}],
            "B1": [{"write": {"src/beta.py": "B = 1\n"}, "json": True, "tokens": [900, 100]}],
        }
    }
    claude_config(tmp_path, plan)
    track = {"workdir": "../repo", "integration": "branch"}
    write_track(
        "alpha",
        {
            "track": track,
            "features": [
                task(
                    "A1",
                    file="src/alpha.py",
                    tests=["tests/test_alpha.py"],
                    acceptance_criteria=["A is 1", "nothing else changes"],
                    verify="test -f src/alpha.py",
                ),
                task("A2", dependencies=["A1"], verify="test -f src/alpha.py -a -f src/alpha2.py"),
            ],
        },
    )
    write_track(
        "beta",
        {"track": track, "features": [task("B1", verify="test -f src/beta.py")]},
    )
    run = await run_once(tracks_dir)
    assert run.code == 0, [run.task("alpha", "A1"), run.task("beta", "B1")]

    # Each track committed on its own branch, one commit per task, exactly its files.
    alpha = commits(repo, "orchestratord/alpha")
    beta = commits(repo, "orchestratord/beta")
    assert alpha[2:] == beta[1:] == [before]
    assert git(repo, "diff", "--name-only", f"{before}", alpha[1]) == "src/alpha.py"
    assert git(repo, "diff", "--name-only", alpha[1], alpha[0]) == "src/alpha2.py"
    assert "src/beta.py" not in files_in(repo, "orchestratord/alpha")
    assert "src/alpha.py" not in files_in(repo, "orchestratord/beta")
    text = message(repo, alpha[1])
    assert text.startswith("A1: Build a1: the whole of it")
    for trailer in ("Task: A1", "Track: alpha", "Verification: PASS", "Attempts: 1"):
        assert trailer in text.splitlines(), text
    assert "Track: beta" in message(repo, beta[0])

    # The user's checkout was never touched.
    assert git(repo, "rev-parse", "HEAD") == before
    assert git(repo, "status", "--porcelain") == ""
    assert sorted(p.name for p in (repo / "src").iterdir()) == [".keep"]

    # Each agent ran in its own worktree and never saw the other track's files.
    agent = tmp_path / "agent"
    a1, b1 = record(agent, "A1"), record(agent, "B1")
    assert a1["cwd"] != b1["cwd"]
    assert str(repo) not in (a1["cwd"], b1["cwd"])
    assert "src/beta.py" not in record(agent, "A2")["seen"]
    assert not any("alpha" in f for f in b1["seen"])

    # The built-in claude profile's command line, and a prompt with every field.
    assert a1["argv"][0] == "-p"
    assert a1["argv"][2:] == [
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
    ]
    prompt = a1["prompt"]
    for part in (
        "task A1 of track alpha",
        "Build a1: the whole of it",
        "File: src/alpha.py",
        "Tests: tests/test_alpha.py",
        "- A is 1",
        "- nothing else changes",
        "<promise>DONE</promise>",
        "<blocked>",
        "on branch orchestratord/alpha",
        "Do not commit",
    ):
        assert part in prompt, part

    # The queue file and the store say what changed, what it cost, and which commit holds it.
    assert run.task("alpha", "A1")["files_actually_changed"] == ["src/alpha.py"]
    assert run.task("beta", "B1")["files_actually_changed"] == ["src/beta.py"]
    attempts = run.store().attempts(TaskKey("alpha", "A1"))
    details = attempts[0].details
    assert (details.agent, details.cost_usd, details.commit_id) == ("claude", 0.25, alpha[1])
    assert details.tokens_in == 100
    assert details.tokens_out == 20
    assert run.store().attempts(TaskKey("beta", "B1"))[0].details.tokens_in == 900
    assert run.store().spend(track="alpha").cost_usd == pytest.approx(0.75)

    # Both tracks finished: their worktrees are gone, their branches stay.
    listed = git(repo, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 1
    assert git(repo, "branch", "--list", "orchestratord/*").split() == [
        "orchestratord/alpha",
        "orchestratord/beta",
    ]


async def test_a_failed_attempt_is_kept_on_a_ref_and_the_next_starts_clean(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    plan = {
        "tasks": {
            "R": [
                {"write": {"calc.py": "VALUE = 41\n", "scratch.txt": "notes\n"}, "json": True},
                {"write": {"calc.py": "VALUE = 42\n"}, "json": True},
            ]
        }
    }
    claude_config(tmp_path, plan)
    check = "import calc, sys; sys.exit(calc.VALUE != 42 and 'got ' + str(calc.VALUE))"
    verify = f'{sys.executable} -c "{check}"'
    write_track(
        "t",
        {"track": {"workdir": "../repo"}, "features": [task("R", verify=verify)]},
    )
    run = await run_once(tracks_dir)
    assert run.code == 0
    agent = tmp_path / "agent"
    second = record(agent, "R", 2)
    assert "previous failure" in second["prompt"]
    assert "got 41" in second["prompt"]
    assert "refs/orchestratord/attempts/t/R/1" in second["prompt"]
    assert "scratch.txt" not in second["seen"]  # the tree was reset
    kept = "refs/orchestratord/attempts/t/R/1"
    assert git(repo, "show", f"{kept}:calc.py") == "VALUE = 41"
    assert "Verification: FAIL" in message(repo, kept)
    # Only the passing attempt's changes are committed (here: in the checkout, one track).
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == "calc.py"
    assert (repo / "calc.py").read_text() == "VALUE = 42\n"
    assert not (repo / "scratch.txt").exists()
    assert "Attempts: 2" in message(repo, "HEAD")
    assert git(repo, "status", "--porcelain") == ""
    store = run.store()
    rows = store.attempts(TaskKey("t", "R"))
    assert rows[0].details.saved_ref == kept
    assert rows[0].details.files_changed == ("calc.py", "scratch.txt")
    assert rows[1].details.commit_id == git(repo, "rev-parse", "HEAD")


async def test_no_changes_fail_unless_allowed(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    claude_config(tmp_path, {"tasks": {}})
    write_track(
        "t",
        {
            "track": {"workdir": "../repo"},
            "features": [
                task("NOTHING", max_iterations=1),
                task("CHECK", allow_no_changes=True),
                {"id": "CMD", "command": "true", "max_iterations": 1},
            ],
        },
    )
    run = await run_once(tracks_dir)
    nothing = run.task("t", "NOTHING")
    assert nothing["status"] == "failed"
    assert nothing["error"].startswith("no changes: the agent changed no file")
    # An empty list is not added to a task that never had the field; the store has it.
    assert nothing.get("files_actually_changed", []) == []
    assert run.store().attempts(TaskKey("t", "NOTHING"))[0].details.files_changed == ()
    assert run.task("t", "CHECK")["status"] == "complete"
    assert run.task("t", "CMD")["error"].startswith("no changes: the command changed no file")
    assert len(commits(repo)) == 1


async def test_guardrails_block_with_evidence_and_respect_the_exemption(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "import os\n"})
    plan = {
        "tasks": {
            "HACK": [{"append": {"app.py": "x = os.sep\ny = 1  # type: ignore\n"}}],
            "OK": [{"write": {"ok.py": "z = 1  # noqa: E501  orchestratord: allow\n"}}],
            "SKIP": [{"write": {"web/a.test.ts": "it.only('x', () => {})\n"}}],
        }
    }
    claude_config(tmp_path, plan)
    write_track(
        "t",
        {
            "track": {"workdir": "../repo"},
            "features": [task("HACK"), task("OK"), task("SKIP", dependencies=["OK"])],
        },
    )
    run = await run_once(tracks_dir)
    hack = run.task("t", "HACK")
    assert hack["status"] == "blocked"
    assert hack["verification_verdict"] == "BLOCKED"
    assert hack["error"] == (
        "guardrail: app.py:3: 'y = 1  # type: ignore' matches '#\\\\s*type:\\\\s*ignore'"
    )
    assert run.task("t", "OK")["status"] == "complete"
    assert "web/a.test.ts:1" in run.task("t", "SKIP")["error"]
    assert (repo / "app.py").read_text() == "import os\n"  # reset, kept on a ref
    assert "# type: ignore" in git(repo, "show", "refs/orchestratord/attempts/t/HACK/1:app.py")


async def test_a_verification_that_runs_no_test_fails(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    make_repo(tmp_path / "repo")
    claude_config(tmp_path, {"tasks": {t: [{"write": {f"{t}.py": "X = 1\n"}}] for t in "EU"}})
    pytest_cmd = f"{sys.executable} -m pytest -q -p no:cacheprovider"
    write_track(
        "t",
        {
            "track": {"workdir": "../repo"},
            "features": [
                task("E", verify=pytest_cmd, max_iterations=1),
                task("U", verify="echo 'Ran 0 tests in 0.000s'; echo OK", max_iterations=1),
            ],
        },
    )
    run = await run_once(tracks_dir)
    empty = run.task("t", "E")
    assert empty["status"] == "failed"
    assert empty["error"].startswith(f"verify 1/1 `{pytest_cmd}` ran no tests")
    assert "ran no tests ('Ran 0 tests')" in run.task("t", "U")["error"]


async def test_merge_integration_brings_other_tracks_work_and_blocks_on_conflicts(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    flags = tmp_path / "flags"
    flags.mkdir()
    plan = {
        "tasks": {
            "API": [{"write": {"api.py": "ROUTE = '/approve'\n"}}],
            "UI": [{"write": {"ui.py": "from api import ROUTE\n"}}],
            # Two agents that start from the same base and write the same file differently.
            "X1": [
                {
                    "touch": str(flags / "x1"),
                    "wait_for": str(flags / "y1"),
                    "write": {"shared.txt": "from x\n"},
                }
            ],
            "Y1": [
                {
                    "touch": str(flags / "y1"),
                    "wait_for": str(flags / "x1"),
                    "write": {"shared.txt": "from y\n"},
                }
            ],
        }
    }
    claude_config(tmp_path, plan)
    write_track(
        "backend",
        {"track": {"workdir": "../repo"}, "features": [task("API", verify="test -f api.py")]},
    )
    write_track(
        "ui",
        {
            "track": {"workdir": "../repo", "start_after": ["backend:API"]},
            "features": [task("UI", verify=f"{sys.executable} -c 'import ui'")],
        },
    )
    write_track("x", {"track": {"workdir": "../repo"}, "features": [task("X1")]})
    write_track("y", {"track": {"workdir": "../repo"}, "features": [task("Y1")]})
    run = await run_once(tracks_dir)
    # The ui track saw the backend's code: merged into main, then into its branch.
    assert run.task("ui", "UI")["status"] == "complete"
    assert (repo / "api.py").exists()
    assert (repo / "ui.py").exists()
    assert git(repo, "status", "--porcelain") == ""
    outcomes = {name: run.task(name, f"{name.upper()}1") for name in ("x", "y")}
    statuses = sorted(t["status"] for t in outcomes.values())
    assert statuses == ["blocked", "complete"]
    blocked = next(t for t in outcomes.values() if t["status"] == "blocked")
    assert "into main conflicts in: shared.txt" in blocked["error"]
    assert "the verified work is committed on orchestratord/" in blocked["error"]
    # The blocked track is not finished: its worktree stays for a person to look at.
    assert git(repo, "worktree", "list").count("\n") == 1  # main + the blocked track's


async def test_in_a_shared_checkout_only_the_attempts_own_changes_are_committed(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"notes.txt": "mine\n", "app.py": "v = 1\n"})
    (repo / "notes.txt").write_text("mine, edited and not committed\n")
    plan = {
        "tasks": {
            # An agent that commits by itself: its commit is replaced by orchestratord's.
            "C1": [{"write": {"app.py": "v = 2\n"}, "commit": True}],
            "C2": [{"write": {"app.py": "v = 3\n", "tmp.txt": "x\n"}, "exit": 1}],
        }
    }
    claude_config(tmp_path, plan)
    write_track(
        "solo",
        {
            "track": {"workdir": "../repo"},
            "features": [task("C1"), task("C2", dependencies=["C1"], max_iterations=1)],
        },
    )
    run = await run_once(tracks_dir)
    assert run.task("solo", "C1")["status"] == "complete"
    assert run.task("solo", "C2")["status"] == "failed"
    log = git(repo, "log", "--format=%s").splitlines()
    assert log == ["C1: Build c1: the whole of it", "first"]
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == "app.py"
    assert git(repo, "show", "HEAD:notes.txt") == "mine"
    # The user's edit is still there, uncommitted; the failed attempt left nothing behind.
    assert (repo / "notes.txt").read_text() == "mine, edited and not committed\n"
    assert git(repo, "status", "--porcelain") == "M notes.txt"
    assert (repo / "app.py").read_text() == "v = 2\n"
    ref = "refs/orchestratord/attempts/solo/C2/1"
    assert git(repo, "show", f"{ref}:app.py") == "v = 3"
    # The kept attempt sits on the tree as it was before it (the user's edit included), so
    # against its first parent it shows only what the attempt changed.
    assert git(repo, "diff", "--name-only", f"{ref}^", ref).splitlines() == ["app.py", "tmp.txt"]
    assert git(repo, "show", f"{ref}^:notes.txt") == "mine, edited and not committed"


async def test_in_a_shared_checkout_a_failed_attempts_own_commit_is_undone(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"notes.txt": "mine\n", "app.py": "v = 1\n"})
    (repo / "notes.txt").write_text("mine, edited and not committed\n")
    before = git(repo, "rev-parse", "HEAD")
    # The agent commits everything (`git add -A && git commit`, the user's edit too), then fails.
    plan = {"tasks": {"K1": [{"write": {"app.py": "v = 2\n"}, "commit": True, "exit": 1}]}}
    claude_config(tmp_path, plan)
    write_track(
        "solo", {"track": {"workdir": "../repo"}, "features": [task("K1", max_iterations=1)]}
    )
    run = await run_once(tracks_dir)
    assert run.task("solo", "K1")["status"] == "failed"
    assert git(repo, "rev-parse", "HEAD") == before
    assert git(repo, "log", "--format=%s").splitlines() == ["first"]
    # The tree and the index are as they were: the user's edit stays, unstaged.
    assert (repo / "app.py").read_text() == "v = 1\n"
    assert (repo / "notes.txt").read_text() == "mine, edited and not committed\n"
    assert git(repo, "diff", "--cached", "--name-only") == ""
    assert git(repo, "diff", "--name-only") == "notes.txt"
    ref = "refs/orchestratord/attempts/solo/K1/1"
    assert git(repo, "show", f"{ref}:app.py") == "v = 2"
    assert git(repo, "diff", "--name-only", f"{ref}^", ref) == "app.py"


async def test_attempts_sharing_a_tree_take_turns(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    plan = {"tasks": {f"P{i}": [{"write": {f"p{i}.py": f"P = {i}\n"}}] for i in range(4)}}
    claude_config(tmp_path, plan)
    write_track(
        "t",
        {
            "track": {"workdir": "../repo", "concurrency": 4},
            "features": [task(f"P{i}") for i in range(4)],
        },
    )
    run = await run_once(tracks_dir)
    assert run.code == 0
    for i in range(4):
        assert run.task("t", f"P{i}")["files_actually_changed"] == [f"p{i}.py"]
    changed = [git(repo, "show", "--name-only", "--format=", c) for c in commits(repo)[:-1]]
    assert sorted(changed) == [f"p{i}.py" for i in range(4)]


async def test_what_git_notes_in_an_attempts_log_are_lines_of_their_own(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    make_repo(tmp_path / "repo", {"README.md": "a project\n"})
    write_track(
        "t",
        {
            "track": {"workdir": "../repo"},
            "features": [{"id": "W", "command": "echo x > w.txt", "verify": "test -f w.txt"}],
        },
    )
    run = await run_once(tracks_dir)
    assert run.task("t", "W")["status"] == "complete"
    [attempt] = run.store().attempts(TaskKey("t", "W"))
    lines = (await anyio.Path(attempt.log_path).read_text()).splitlines()
    at = lines.index("--- changes: 1 file(s): w.txt")
    assert lines[at + 1] == "=== verify 1/1: test -f w.txt ==="


async def test_a_task_for_a_person_is_blocked_without_running(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    write_track("t", [{"id": "M", "agent": "manual", "description": "Call the licensing board"}])
    run = await run_once(tracks_dir)
    task = run.task("t", "M")
    assert task["status"] == "blocked"
    assert task["error"] == (
        "agent 'manual' marks this task for a person: do it, then set its status to \"complete\""
    )
    assert run.store().processes(run.store().attempts(TaskKey("t", "M"))[0].id) == []
