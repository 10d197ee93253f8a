"""What an unclean night leaves in git, and what the daemon makes of it: the worktree of a
track that ended some other way than by its last PASS, a ``git worktree add`` that was killed,
a lock file that stays in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import agentrun
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event

from . import live_harness as lh
from .agent_harness import git, make_repo, needs_git, write_config
from .conftest import WriteTrack
from .daemon_harness import run_once

pytestmark = [pytest.mark.anyio, needs_git]


def worktrees(repo: Path) -> list[str]:
    listed = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [line.removeprefix("worktree ") for line in listed if line.startswith("worktree ")]


async def test_a_track_whose_last_task_is_skipped_while_it_runs_loses_its_worktree_after_it_ends(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The skipped attempt's processes take a while to end (they trap SIGTERM): the worktree
    goes only once they have, and its branch stays."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = true\n")
    ledger = tmp_path / "ledger"
    command = (
        f"trap 'sleep 0.5; echo ended >> {ledger}; exit 0' TERM; "
        f"echo started >> {ledger}; sleep 30 & wait"
    )
    write_track("t", [{"id": "K", "command": command}], track={"workdir": "../repo"})
    seen: list[str] = []  # the ledger when the worktree was removed
    async with lh.live_daemon(
        tracks_dir, kill_grace=5, services=[agentrun.service], watch=False
    ) as live:
        live.engine.listeners.append(
            lambda kind, _, __: (
                seen.append(ledger.read_text()) if kind == "worktree_removed" else None
            )
        )
        await live.until(ledger.exists)
        tree = agentrun.of(live.engine).trees.tree("t")
        assert tree is not None
        assert tree.own
        assert tree.root.is_dir()
        live.engine.order(TaskKey("t", "K"), Event.ORDER_SKIP, "not tonight")
        await live.until(lambda: bool(live.kinds("worktree_removed")))
        assert seen == ["started\nended\n"]
        (event,) = live.kinds("worktree_removed")
        assert event[1:] == ("t", {"path": str(tree.root), "branch": "orchestratord/t"})
    assert not tree.root.exists()
    assert worktrees(repo) == [str(repo)]
    assert git(repo, "branch", "--list", "orchestratord/t") == "orchestratord/t"


@pytest.mark.parametrize("how", ["skip", "remove"])
async def test_a_track_that_ends_with_no_task_running_loses_its_worktree(
    how: str, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A ran; B waits for a task of another track that failed. The track ends when B is
    skipped, or removed from the file: no Ralph loop of the track runs then."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = true\n")
    path = write_track(
        "t",
        [
            {"id": "A", "command": "echo a > a.txt"},
            {"id": "B", "command": "echo b > b.txt", "dependencies": ["other:X"]},
        ],
        track={"workdir": "../repo"},
    )
    write_track("other", [{"id": "X", "command": "exit 1", "max_iterations": 1}])
    async with lh.live_daemon(tracks_dir, services=[agentrun.service]) as live:
        await live.until(lambda: live.status("t:A") is Status.COMPLETE)
        await live.until(lambda: live.status("other:X") is Status.FAILED)
        tree = agentrun.of(live.engine).trees.tree("t")
        assert tree is not None
        assert tree.root.is_dir()
        if how == "skip":
            live.engine.order(TaskKey("t", "B"), Event.ORDER_SKIP, "not needed")
        else:
            lh.set_status(path, "B", None)
        await live.until(lambda: bool(live.kinds("worktree_removed")))
    assert not tree.root.exists()
    assert worktrees(repo) == [str(repo)]


async def test_a_track_finished_while_the_daemon_was_stopped_loses_its_worktree_at_start(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """B is skipped in the file while the daemon is stopped: the next daemon finds the track
    done, and the worktree the last one made is removed (one with changes is kept)."""
    repo = make_repo(tmp_path / "repo")
    write_config(tmp_path, "[git]\nworktrees = true\n")

    def tasks(prefix: str) -> list[dict[str, Any]]:
        return [
            {"id": f"{prefix}A", "command": "echo a > a.txt"},
            {"id": f"{prefix}B", "command": "echo b > b.txt", "dependencies": ["other:X"]},
        ]

    path = write_track("t", tasks(""), track={"workdir": "../repo"})
    write_track("u", tasks("U"), track={"workdir": "../repo"})
    write_track("other", [{"id": "X", "command": "exit 1", "max_iterations": 1}])
    first = await run_once(tracks_dir)
    assert first.code == 1
    trees = agentrun.of(first.engine).trees
    repo_of = trees.repo_of(repo)
    assert repo_of is not None
    t_root, u_root = trees.worktree_path("t", repo_of), trees.worktree_path("u", repo_of)
    assert t_root.is_dir()
    assert u_root.is_dir()
    (u_root / "mine.txt").write_text("a person's work\n")
    lh.set_status(path, "B", "skipped")
    lh.set_status(tracks_dir / "u.json", "UB", "skipped")
    again = await run_once(tracks_dir)
    assert again.code == 1  # other:X failed
    assert not t_root.exists()
    assert worktrees(repo) == [str(repo), str(u_root)]
    found = [e for e in again.store().events() if e.type.startswith("worktree")]
    assert sorted((e.type, e.track) for e in found) == [
        ("worktree_kept", "u"),
        ("worktree_removed", "t"),
    ]
