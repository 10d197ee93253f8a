"""The git side of an attempt re-attached after a daemon's end (its runs on a cluster went on).

Its runs may still work in the tree: nothing there is touched when it is taken up again, and
what they changed before the restart is theirs. Its own verified commit found at HEAD, made
after it began, means its runs were over: it is ``settled``, not attached to. A commit of the
attempt that its first begin had found already (the daemon killed twice) is not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.attempt import AttemptResult
from orchestrator.gitattempt import GitAttempt, commit_message
from orchestrator.model import Verdict
from orchestrator.worktrees import Tree, Trees

from .agent_harness import GIT_TASK, git, git_attempt, git_tree, needs_git

pytestmark = [needs_git, pytest.mark.anyio]

TASK = GIT_TASK
PASS = AttemptResult(Verdict.PASS, None, 0)


def _attempt(
    trees: Trees,
    tree: Tree,
    tmp_path: Path,
    *,
    resumed: bool = False,
    reattached: bool = False,
    recorded: str | None = None,
) -> GitAttempt:
    """``recorded``: the commit the store recorded the PASS of the run attached to making."""
    return git_attempt(
        trees,
        tree,
        tmp_path,
        resumed=resumed or reattached,
        reattached=reattached,
        intents={recorded: ""} if recorded else {},
    )


def _commit_as_its_pass(tree: Tree) -> str:
    """What git made of the attempt's verified work before the daemon was killed."""
    git(tree.root, "commit", "-q", "-am", commit_message(TASK, 1))
    return git(tree.root, "rev-parse", "HEAD")


@pytest.mark.parametrize("own", [True, False], ids=["worktree", "checkout"])
async def test_what_the_run_wrote_before_the_restart_is_its_own(own: bool, tmp_path: Path) -> None:
    """Begun, the run writes (the daemon is killed meanwhile), re-attached: the tree is left as
    the run has it (not put aside and reset), and the commit holds what the run wrote."""
    _, trees, tree = await git_tree(tmp_path, own)
    first = _attempt(trees, tree, tmp_path)
    await first.begin()
    start = first.start
    (tree.root / "app.txt").write_text("written by the run\n")  # before the daemon's end
    again = _attempt(trees, tree, tmp_path, reattached=True)
    await again.begin()
    assert again.settled is None
    assert (again.start, again.t0) == (start, first.t0)
    assert (tree.root / "app.txt").read_text() == "written by the run\n"
    assert git(tree.root, "for-each-ref", "refs/orchestratord/") == ""  # nothing put aside
    (tree.root / "new.txt").write_text("and after it\n")  # the run goes on
    outcome = await again.conclude(PASS, True)
    assert outcome.files == ("app.txt", "new.txt")
    assert outcome.commit is not None
    assert git(tree.root, "rev-parse", f"{outcome.commit}^") == start


@pytest.mark.parametrize("own", [True, False], ids=["worktree", "checkout"])
async def test_its_verified_commit_made_after_it_began_settles_it(
    own: bool, tmp_path: Path
) -> None:
    _, trees, tree = await git_tree(tmp_path, own)
    await _attempt(trees, tree, tmp_path).begin()
    (tree.root / "app.txt").write_text("done\n")
    made = _commit_as_its_pass(tree)
    (tree.root / "build.log").write_text("left by verification\n")
    # (as the store recorded it before the branch moved)
    again = _attempt(trees, tree, tmp_path, reattached=True, recorded=made)
    notes = await again.begin()
    assert again.settled == made
    assert any("its runs on the cluster were over" in note for note in notes)
    assert (tree.root / "build.log").exists()  # untouched: the next attempt takes it up
    follows = _attempt(trees, tree, tmp_path, resumed=True)
    follows.after_stop = True
    follows.intents = {made: ""}  # (as the store recorded it before the branch moved)
    await follows.begin()
    assert follows.verified == made


async def test_a_commit_its_first_begin_had_found_does_not_settle_it(tmp_path: Path) -> None:
    """Killed after git made the commit, then run again (the tree had changed since) and killed
    again while its run goes on: that commit at HEAD is older than the run, which is attached
    to. Its changes still count as the attempt's: the same work keeps that commit."""
    _, trees, tree = await git_tree(tmp_path, own=True)
    base = git(tree.root, "rev-parse", "HEAD")
    (tree.root / "app.txt").write_text("done\n")
    made = _commit_as_its_pass(tree)
    first = _attempt(trees, tree, tmp_path, resumed=True)  # cut short by an order: runs again
    await first.begin()
    assert first.adopted == made
    again = _attempt(trees, tree, tmp_path, reattached=True)
    await again.begin()
    assert again.settled is None
    assert (again.adopted, again.start) == (made, base)
    (tree.root / "app.txt").write_text("done\n")  # what the run again writes
    outcome = await again.conclude(PASS, True)
    assert outcome.commit == made


@pytest.mark.parametrize("recorded", [False, True], ids=["nothing-recorded", "another-recorded"])
async def test_a_commit_with_its_trailers_it_did_not_record_does_not_settle_it(
    recorded: bool, tmp_path: Path
) -> None:
    """While its run still goes on (the daemon down), a person commits with the attempt's
    trailers (its message copied; or an amend of the commit the store recorded, which never
    reached the branch): its runs are attached to, not cut short, and the tree is untouched."""
    _, trees, tree = await git_tree(tmp_path, own=True)
    first = _attempt(trees, tree, tmp_path)
    await first.begin()
    (tree.root / "app.txt").write_text("a person's\n")
    copied = _commit_as_its_pass(tree)
    (tree.root / "run.txt").write_text("the run goes on\n")
    intent = git(tree.root, "commit-tree", "-m", "x", f"{copied}^{{tree}}") if recorded else None
    again = _attempt(trees, tree, tmp_path, reattached=True, recorded=intent)
    notes = await again.begin()
    assert again.settled is None
    assert (again.start, again.t0) == (first.start, first.t0)
    assert any("not the commit the daemon recorded making" in note for note in notes)
    assert (tree.root / "run.txt").read_text() == "the run goes on\n"
