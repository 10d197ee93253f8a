"""What git costs per attempt: worktrees, snapshots, commits and merges, against no git.

Two tracks of 20 tasks share a repository of 2,000 files (so each works in a worktree of its
own, merging into the default branch after every task); each task's command writes one file.
The same tracks run in a plain directory with the same files as the reference. Also measured:
one snapshot of the tree (what each attempt takes twice) against ``git status`` on the same
tree, the closest thing a person would run.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator import gitwork

from .common import run_daemon, scratch_root

FILES = 2000
TASKS = 20


def _files(root: Path) -> None:
    for i in range(FILES):
        path = root / f"pkg{i % 100:03d}" / f"mod{i:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""module {i}"""\n' + "x = 1\n" * 30)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _tracks(root: Path, workdir: str) -> Path:
    tracks = root / "tracks"
    tracks.mkdir()
    command = "mkdir -p out && echo $ORCHESTRATORD_TASK_ID > out/$ORCHESTRATORD_TASK_ID.txt"
    for name in ("a", "b"):
        doc = {
            "track": {"workdir": workdir},
            "features": [
                {"id": f"{name.upper()}{i}", "command": command, "verify": []} for i in range(TASKS)
            ],
        }
        (tracks / f"{name}.json").write_text(json.dumps(doc))
    return tracks


def _median(func: object, times: int = 7) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run() -> None:
    if shutil.which("git") is None:
        print("gitattempt: git is not installed; skipped")
        return
    base = Path(tempfile.mkdtemp(prefix="bench-git-", dir=scratch_root()))
    try:
        repo = base / "git" / "repo"
        repo.mkdir(parents=True)
        _files(repo)
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "files")
        plain = base / "plain" / "repo"
        shutil.copytree(repo, plain, ignore=shutil.ignore_patterns(".git"))

        git_run = run_daemon(_tracks(base / "git", "../repo"), base / "git" / "state")
        plain_run = run_daemon(_tracks(base / "plain", "../repo"), base / "plain" / "state")
        assert git_run["code"] == 0, "the git run did not complete"
        assert plain_run["code"] == 0, "the plain run did not complete"
        tasks = 2 * TASKS
        per_git = git_run["wall"] / tasks * 1000
        per_plain = plain_run["wall"] / tasks * 1000
        merged = subprocess.run(
            ["git", "log", "--no-merges", "--oneline", "--grep=^Task: ", "main"],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.count("\n")  # fmt: skip

        scratch = base / "scratch.index"
        snap = _median(lambda: gitwork.snapshot(repo, [], scratch))
        status = _median(
            lambda: subprocess.run(
                ["git", "status", "--porcelain"], cwd=repo, check=True, capture_output=True
            )
        )
        print(f"gitattempt: {tasks} tasks in 2 tracks sharing a repository of {FILES:,} files")
        print(f"  in git (worktrees, commit + merge each): {per_git:7.1f} ms per task wall"
              f"  ({git_run['cpu'] / tasks * 1000:.1f} ms daemon CPU)")  # fmt: skip
        print(f"  plain directory (reference):            {per_plain:7.1f} ms per task wall")
        print(f"  git adds {per_git - per_plain:.1f} ms per attempt "
              f"({per_git / per_plain:.1f}x); {merged} task commits on main")  # fmt: skip
        print(f"  one snapshot: {snap * 1000:.1f} ms; git status: {status * 1000:.1f} ms "
              f"(ratio {snap / status:.2f})")  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
