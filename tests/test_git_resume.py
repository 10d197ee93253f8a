"""An attempt taken up again that finds its own verified commit at HEAD (git, own worktree).

The commit was made, and the daemon stopped before the store recorded the PASS. Cut short by
the daemon's end, the PASS was decided: it is recorded as it is. Cut short by an order (a skip,
then a retry), the person meant it to run again: it runs, and that commit's changes count as
its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import verification
from orchestrator.attempt import AttemptResult
from orchestrator.gitattempt import GitAttempt, commit_message
from orchestrator.guardrails import Guardrails
from orchestrator.model import TaskDef, TaskKey, Verdict
from orchestrator.worktrees import Tree, Trees

from .agent_harness import GIT_TASK, git, git_attempt, git_tree, needs_git

pytestmark = [needs_git, pytest.mark.anyio]

TASK = GIT_TASK
PASS = AttemptResult(Verdict.PASS, None, 0)
VERIFIES = verification.fingerprint(("make test",), None, Guardrails.build([]), None)


def _verified_commit(tree: Tree, text: str) -> str:
    """What a killed daemon left: this attempt's PASS commit of ``text`` at the tree's HEAD."""
    (tree.root / "app.txt").write_text(text)
    git(tree.root, "commit", "-q", "-am", commit_message(TASK, 1))
    return git(tree.root, "rev-parse", "HEAD")


def _attempt(
    trees: Trees,
    tree: Tree,
    tmp_path: Path,
    *,
    after_stop: bool,
    recorded: str | None = None,
    verifies: str = VERIFIES,
) -> GitAttempt:
    """The attempt taken up again; ``recorded``: the commit the store recorded its PASS
    making before the branch moved (verified against :data:`VERIFIES`)."""
    intents = {recorded: VERIFIES} if recorded else {}
    return git_attempt(
        trees,
        tree,
        tmp_path,
        resumed=True,
        after_stop=after_stop,
        intents=intents,
        verifies=verifies,
    )


async def test_cut_short_by_the_daemons_end_its_pass_is_recorded(tmp_path: Path) -> None:
    _, trees, tree = await git_tree(tmp_path)
    made = _verified_commit(tree, "done\n")
    attempt = _attempt(trees, tree, tmp_path, after_stop=True, recorded=made)
    notes = await attempt.begin()
    assert attempt.verified == made
    assert any("its PASS is recorded, nothing is run again" in note for note in notes)
    outcome = await attempt.conclude(PASS, True)
    assert outcome.result.verdict is Verdict.PASS
    assert outcome.commit == made
    assert outcome.files == ("app.txt",)
    assert git(tree.root, "rev-parse", "HEAD") == made


async def test_in_a_checkout_a_persons_other_edits_do_not_count(tmp_path: Path) -> None:
    """A shared checkout holds a person's own uncommitted work too: edits of other files made
    since do not make the tree differ from the commit's work."""
    repo, trees, tree = await git_tree(tmp_path, own=False)
    made = _verified_commit(tree, "done\n")
    (repo / "notes.txt").write_text("a person's notes\n")
    attempt = _attempt(trees, tree, tmp_path, after_stop=True, recorded=made)
    await attempt.begin()
    assert attempt.verified == made
    outcome = await attempt.conclude(PASS, True)
    assert outcome.commit == made
    assert (repo / "notes.txt").read_text() == "a person's notes\n"  # still there, not committed
    assert git(repo, "show", f"{made}:app.txt") == "done"


async def test_in_a_checkout_an_edit_of_its_work_since_runs_it_again(tmp_path: Path) -> None:
    """The commit's own file changed since (a person, or a half-finished write): the tree no
    longer holds exactly the verified work, so the attempt runs again, as before."""
    repo, trees, tree = await git_tree(tmp_path, own=False)
    made = _verified_commit(tree, "done\n")
    (repo / "app.txt").write_text("done, then changed\n")
    attempt = _attempt(trees, tree, tmp_path, after_stop=True, recorded=made)
    notes = await attempt.begin()
    assert attempt.verified is None
    assert attempt.adopted == made
    assert any("the tree changed since, so the attempt runs again" in note for note in notes)
    (repo / "app.txt").write_text("run again\n")  # what it commits is what the run again wrote
    outcome = await attempt.conclude(PASS, True)
    assert outcome.commit is not None
    assert git(repo, "rev-parse", f"{outcome.commit}^") == made
    assert git(repo, "show", f"{outcome.commit}:app.txt") == "run again"


async def test_a_commit_at_head_other_than_the_one_recorded_is_not_taken_as_verified(
    tmp_path: Path,
) -> None:
    """The commit recorded, then amended by a person (its trailers kept; the same tree): HEAD
    is not what verification passed. The attempt runs again, its changes its own; the same
    work verified again keeps the person's commit."""
    _, trees, tree = await git_tree(tmp_path)
    made = _verified_commit(tree, "done\n")
    git(tree.root, "commit", "-q", "--amend", "-m", "edited\n\n" + commit_message(TASK, 1))
    amended = git(tree.root, "rev-parse", "HEAD")
    attempt = _attempt(trees, tree, tmp_path, after_stop=True, recorded=made)
    notes = await attempt.begin()
    assert attempt.verified is None
    assert attempt.adopted == amended
    assert any("not the commit the daemon recorded making" in note for note in notes)
    outcome = await attempt.conclude(PASS, True)
    assert outcome.commit == amended


@pytest.mark.parametrize(
    ("verifies", "said"),
    [
        (
            verification.fingerprint(("make check",), None, Guardrails.build([]), None),
            "(the verification commands)",
        ),
        (
            verification.fingerprint(("make test",), "DONE", Guardrails.build(["x"]), None),
            "(the completion promise, the guardrails)",
        ),
        ("", "(the verification commands, the completion promise, the guardrails, the no-tests"),
    ],
    ids=["verify", "promise-and-guardrails", "unreadable"],
)
async def test_a_commit_verified_against_what_is_no_longer_asked_is_not_taken_as_verified(
    verifies: str, said: str, tmp_path: Path
) -> None:
    _, trees, tree = await git_tree(tmp_path)
    made = _verified_commit(tree, "done\n")
    attempt = _attempt(trees, tree, tmp_path, after_stop=True, recorded=made, verifies=verifies)
    notes = await attempt.begin()
    assert attempt.verified is None
    assert attempt.adopted == made
    assert any(f"what it was verified against changed since {said}" in n for n in notes), notes


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "trailers-only"])
async def test_cut_short_by_an_order_it_runs_again_on_top_of_its_commit(
    recorded: bool, tmp_path: Path
) -> None:
    _, trees, tree = await git_tree(tmp_path)
    made = _verified_commit(tree, "run 1\n")
    attempt = _attempt(trees, tree, tmp_path, after_stop=False, recorded=made if recorded else None)
    notes = await attempt.begin()
    assert attempt.verified is None
    assert attempt.adopted == made
    # Called its verified commit only when the store recorded making it (else it may be a
    # person's commit with its trailers).
    said = (
        "is this attempt's verified commit, made before it was cut short and never recorded;"
        if recorded
        else "carries this attempt's trailers;"
    )
    assert any(f"{said} its changes count as this attempt's" in n for n in notes), notes
    (tree.root / "app.txt").write_text("run 2\n")  # the run again writes something else
    outcome = await attempt.conclude(PASS, True)
    assert outcome.commit is not None
    assert git(tree.root, "rev-parse", f"{outcome.commit}^") == made  # on top: it stays
    assert git(tree.root, "show", f"{outcome.commit}:app.txt") == "run 2"
    message = " ".join(git(tree.root, "log", "-1", "--format=%B", outcome.commit).split())
    assert f"cut short before its verified commit {made[:12]}" in message  # says why on top


async def test_commits_of_the_attempt_stacked_count_from_before_the_first(tmp_path: Path) -> None:
    """Cut short twice after its commit: a run again that writes what the first run did has
    changes (against where the attempt started), not "no changes" (against its second commit)."""
    _, trees, tree = await git_tree(tmp_path)
    base = git(tree.root, "rev-parse", "HEAD")
    _verified_commit(tree, "run 1\n")
    second = _verified_commit(tree, "run 2\n")
    attempt = _attempt(trees, tree, tmp_path, after_stop=False)
    await attempt.begin()
    assert attempt.start == base
    (tree.root / "app.txt").write_text("run 1\n")
    outcome = await attempt.conclude(PASS, True)
    assert outcome.result.verdict is Verdict.PASS
    assert outcome.commit is not None
    assert git(tree.root, "rev-parse", f"{outcome.commit}^") == second
    assert git(tree.root, "show", f"{outcome.commit}:app.txt") == "run 1"


@pytest.mark.parametrize(
    "message",
    [
        commit_message(TASK, 2),  # another attempt of the task (a PASS recorded, then reopened)
        commit_message(TaskDef(TaskKey("b", "T"), 0, 2, description="t"), 1),  # another track
        commit_message(TaskDef(TaskKey("a", "U"), 0, 2, description="t"), 1),  # another task
        commit_message(TASK, 1, "FAIL", "kept"),  # not a PASS
    ],
    ids=["attempt", "track", "task", "verdict"],
)
async def test_a_commit_at_head_that_is_not_this_attempts_pass_is_left_alone(
    message: str, tmp_path: Path
) -> None:
    """Only this very attempt's PASS commit is taken for its own: another's at HEAD with the
    tree holding its work must not be recorded as this attempt's PASS (nothing was run)."""
    _, trees, tree = await git_tree(tmp_path)
    (tree.root / "app.txt").write_text("done\n")
    git(tree.root, "commit", "-q", "-am", message)
    head = git(tree.root, "rev-parse", "HEAD")
    attempt = _attempt(trees, tree, tmp_path, after_stop=True)
    await attempt.begin()
    assert attempt.adopted is None
    assert attempt.verified is None
    assert attempt.start == head
