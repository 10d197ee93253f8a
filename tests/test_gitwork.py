"""Git plumbing in real repositories, and the guardrails read from its diffs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator import gitwork
from orchestrator.config import DEFAULT_GUARDRAILS, DEFAULT_NO_TESTS
from orchestrator.guardrails import Guardrails, NoTests, added_lines, evidence, unquote
from orchestrator.worktrees import ref_part

from .agent_harness import git, make_repo, needs_git


def test_added_lines_of_a_diff_with_their_numbers() -> None:
    diff = (
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n"
        "@@ -2,0 +3,2 @@\n+x = 1\n++++ not a header\n"
        "@@ -10 +11 @@\n-old\n+new  # noqa\n"
        "diff --git a/gone.py b/gone.py\n--- a/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
        'diff --git "a/sp\\303\\251cial.py" "b/sp\\303\\251cial.py"\nnew file mode 100644\n'
        '--- /dev/null\n+++ "b/sp\\303\\251cial.py"\n@@ -0,0 +1 @@\n+.only(\n'
        "\\ No newline at end of file\n"
    )
    found = [(a.path, a.number, a.text) for a in added_lines(diff)]
    assert found == [
        ("a.py", 3, "x = 1"),
        ("a.py", 4, "+++ not a header"),
        ("a.py", 11, "new  # noqa"),
        ("spécial.py", 1, ".only("),
    ]
    assert unquote('"tab\\there"') == "tab\there"


def test_guardrails_patterns_exemptions_and_ignored_paths() -> None:
    guard = Guardrails.build(DEFAULT_GUARDRAILS, "orchestratord: allow", ["vendor/*"])
    diff = (
        "diff --git a/t.ts b/t.ts\n--- a/t.ts\n+++ b/t.ts\n@@ -0,0 +1,4 @@\n"
        "+// @ts-ignore\n+describe.only('x')\n+// eslint-disable-line orchestratord: allow\n"
        "+ok()\n"
        "diff --git a/vendor/x.py b/vendor/x.py\n--- a/vendor/x.py\n+++ b/vendor/x.py\n"
        "@@ -0,0 +1 @@\n+import x  # type: ignore\n"
        "diff --git a/t.py b/t.py\n--- a/t.py\n+++ b/t.py\n@@ -0,0 +1,2 @@\n"
        "+@pytest.mark.skip(reason='later')\n+x = 1  #type:ignore[misc]\n"
    )
    hits = guard.scan(diff)
    assert [(h.path, h.number, h.pattern) for h in hits] == [
        ("t.ts", 1, "@ts-ignore"),
        ("t.ts", 2, r"\.only\("),
        ("t.py", 1, r"pytest\.mark\.skip"),
        ("t.py", 2, r"#\s*type:\s*ignore"),
    ]
    assert evidence(hits) == (
        "guardrail: t.ts:1: '// @ts-ignore' matches '@ts-ignore' (and 3 more)"
    )
    assert Guardrails.build([]).scan(diff) == []


def test_no_tests_patterns() -> None:
    check = NoTests.build(DEFAULT_NO_TESTS)
    assert check.found(b"\nno tests ran in 0.01s\n") == "no tests ran"
    assert check.found(b"----\nRan 0 tests in 0.000s\n\nNO TESTS RAN\n") == "Ran 0 tests"
    assert check.found(b"No tests found, exiting with code 1\n") == "No tests found"
    assert check.found(b"  0 passing (2ms)\n") == "0 passing"
    assert check.found(b"Ran 10 tests in 0.1s\nOK\n") is None
    assert check.found(b"10 passing\n") is None


def test_ref_parts_are_valid_ref_names() -> None:
    assert ref_part("PROVIDER-013") == "PROVIDER-013"
    assert ref_part("v1.2") == "v1.2"
    assert ref_part("a..b") == "a%2E%2Eb"
    assert ref_part("x.lock") == "x%2Elock"
    assert ref_part("a b/c:d") == "a%20b%2Fc%3Ad"


@needs_git
def test_a_snapshot_sees_tracked_and_untracked_files_but_not_ignored_or_excluded(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo", {".gitignore": "build/\n", "a.txt": "a\n", "b.txt": "b\n"})
    (repo / "a.txt").write_text("user's own edit\n")  # dirty before the attempt
    (repo / "tracks").mkdir()
    scratch = tmp_path / "scratch.index"
    before = gitwork.snapshot(repo, ["tracks"], scratch)
    (repo / "b.txt").write_text("B\n")
    (repo / "new dir").mkdir()
    (repo / "new dir" / "n.txt").write_text("n\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_text("ignored\n")
    (repo / "tracks" / "q.json").write_text("{}\n")  # the daemon's own file
    (repo / "a.txt").unlink()
    git(repo, "add", "b.txt")  # staging changes nothing about what the attempt did
    after = gitwork.snapshot(repo, ["tracks"], scratch)
    changes = gitwork.changes(repo, before, after)
    assert [(c.status, c.path) for c in changes] == [
        ("D", "a.txt"),
        ("M", "b.txt"),
        ("A", "new dir/n.txt"),
    ]
    assert not scratch.exists()
    # Putting the paths back restores the tree as it was, the user's edit included.
    gitwork.restore_paths(repo, before, changes, scratch)
    assert (repo / "a.txt").read_text() == "user's own edit\n"
    assert (repo / "b.txt").read_text() == "b\n"
    assert not (repo / "new dir").exists()
    assert gitwork.snapshot(repo, ["tracks"], scratch) == before


@needs_git
def test_a_commit_of_exactly_the_attempts_changes_over_a_dirty_checkout(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"mine.txt": "1\n", "code.py": "x = 1\n"})
    head = gitwork.head(repo)
    (repo / "mine.txt").write_text("2 (not committed by the user)\n")
    scratch = tmp_path / "s.index"
    before = gitwork.snapshot(repo, [], scratch)
    (repo / "code.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 1\n")
    after = gitwork.snapshot(repo, [], scratch)
    changes = gitwork.changes(repo, before, after)
    tree = gitwork.apply_changes(repo, gitwork.tree_of(repo, head), after, changes, scratch)
    commit = gitwork.commit_tree(repo, tree, [head or ""], "attempt\n", {})
    assert git(repo, "diff", "--name-only", f"{head}", commit).split() == ["code.py", "new.py"]
    assert git(repo, "show", f"{commit}:mine.txt") == "1"


@needs_git
def test_a_snapshot_sees_a_change_git_can_tell_only_by_content(tmp_path: Path) -> None:
    """A "racy git" case: a file rewritten with the same size in the second it was indexed looks
    unchanged by its stat; git reads it again because the index is not older than the file.
    A scratch copy of the index keeps that time, or the snapshot misses the change."""
    repo = make_repo(tmp_path / "repo", {"code.py": "x = 1\n"})
    git(repo, "config", "core.checkStat", "minimal")  # whole seconds and size, as on CIFS
    second = (int(time.time()) - 100) * 1_000_000_000
    os.utime(repo / "code.py", ns=(second, second))
    git(repo, "update-index", "--refresh")  # the index records that second for code.py
    (repo / "code.py").write_text("x = 2\n")
    os.utime(repo / "code.py", ns=(second, second))
    index = repo / ".git" / "index"
    os.utime(index, ns=(second, second))  # the index was written in that second too
    assert git(repo, "--no-optional-locks", "status", "--porcelain") == "M code.py"
    scratch = tmp_path / "s.index"
    snap = gitwork.snapshot(repo, [], scratch)
    assert git(repo, "show", f"{snap}:code.py") == "x = 2"
    gitwork.copy_index(index, scratch)
    assert scratch.stat().st_mtime_ns == second
    gitwork.copy_index(tmp_path / "none", scratch)  # no index: no copy left over
    assert not scratch.exists()


@needs_git
def test_default_branch_is_detected(tmp_path: Path) -> None:
    assert gitwork.default_branch(make_repo(tmp_path / "a", branch="master")) == "master"
    trunk = make_repo(tmp_path / "b", branch="develop")
    assert gitwork.default_branch(trunk) == "develop"  # the main checkout's branch
    git(trunk, "branch", "main")
    assert gitwork.default_branch(trunk) == "main"
    origin = make_repo(tmp_path / "c", branch="trunk-line")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "branch", "main")
    assert gitwork.default_branch(clone) == "trunk-line"  # origin's HEAD comes first
    assert gitwork.find_repo(tmp_path) is None


@needs_git
@pytest.mark.parametrize("old_git", [False, True], ids=["merge-tree", "worktree"])
def test_merge_trees_reports_conflicting_files(
    tmp_path: Path, old_git: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo", {"f.txt": "base\n", "g.txt": "g\n"})
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "f.txt").write_text("side\n")
    git(repo, "commit", "-qam", "side")
    git(repo, "checkout", "-q", "-b", "other", "main")
    (repo / "g.txt").write_text("other\n")
    git(repo, "commit", "-qam", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "f.txt").write_text("main\n")
    git(repo, "commit", "-qam", "main")
    if old_git:
        monkeypatch.setattr(gitwork, "version", lambda: (2, 34))
    elif gitwork.version() < (2, 38):
        pytest.skip("git merge-tree --write-tree needs git 2.38")
    scratch = tmp_path / "scratch"
    assert gitwork.merge_trees(repo, "main", "side", scratch) == gitwork.Merged(None, ("f.txt",))
    clean = gitwork.merge_trees(repo, "main", "other", scratch)
    assert clean.tree is not None
    assert git(repo, "show", f"{clean.tree}:f.txt") == "main"
    assert git(repo, "show", f"{clean.tree}:g.txt") == "other"
    assert git(repo, "worktree", "list").count("\n") == 0  # the scratch worktree is gone
    assert git(repo, "status", "--porcelain") == ""


@needs_git
@pytest.mark.anyio
async def test_own_worktrees_leftovers_and_clean_up(tmp_path: Path) -> None:
    from orchestrator import config
    from orchestrator.gitattempt import GitAttempt
    from orchestrator.model import TaskDef, TaskKey
    from orchestrator.worktrees import Trees

    repo = make_repo(tmp_path / "repo", {"app/main.py": "x = 1\n"})
    cfg = config.load(flags={"state_dir": str(tmp_path / "state")}, env={}, cwd=tmp_path)
    trees = Trees(cfg)
    workdirs = {"a": repo / "app", "b": repo}
    tree = await trees.prepare("a", repo / "app", lambda: workdirs, "merge")
    assert tree is not None
    assert tree.own
    assert tree.branch == "orchestratord/a"
    assert tree.cwd == tree.root / "app"
    assert (tree.cwd / "main.py").read_text() == "x = 1\n"
    assert trees.planned("b", repo, workdirs) == ("orchestratord/b", True)
    # An interrupted attempt left changes: the next attempt keeps them on a ref, starts clean.
    (tree.cwd / "half.py").write_text("half done\n")
    task = TaskDef(TaskKey("a", "T"), 0, 2, description="t")
    attempt = GitAttempt(trees, tree, task, 2, Guardrails.build([]), tmp_path / "s.idx", "STAMP")
    notes = await attempt.begin()
    assert "kept on refs/orchestratord/leftovers/a/STAMP" in notes[0]
    assert not (tree.cwd / "half.py").exists()
    assert git(repo, "show", "refs/orchestratord/leftovers/a/STAMP:app/half.py") == "half done"
    # A finished track's worktree goes, unless it has uncommitted changes.
    (tree.cwd / "stray.txt").write_text("?\n")
    kept = await trees.finish("a")
    assert kept is not None
    assert kept.files == ("app/stray.txt",)
    assert not kept.removed
    assert tree.root.exists()
    (tree.cwd / "stray.txt").unlink()
    removed = await trees.finish("a")
    assert removed is not None
    assert removed.removed
    assert not tree.root.exists()
    assert await trees.finish("a") is None
    assert git(repo, "branch", "--list", "orchestratord/a") == "orchestratord/a"
