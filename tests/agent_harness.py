"""Real git repositories and fake agent executables for the agents-and-git tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import config
from orchestrator.gitattempt import GitAttempt
from orchestrator.guardrails import Guardrails
from orchestrator.model import TaskDef, TaskKey
from orchestrator.worktrees import Tree, Trees

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A repository with one commit of ``files``, on ``branch``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    for name, text in (files or {"README.md": "a project\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def fake_agent(root: Path, plan: dict[str, Any], name: str = "fake-claude") -> Path:
    """An executable that runs :mod:`tests.fake_agent` with ``plan``; records go to root/records."""
    root.mkdir(parents=True, exist_ok=True)
    plan = {"record": str(root / "records"), **plan}
    plan_file = root / f"{name}.plan.json"
    plan_file.write_text(json.dumps(plan))
    exe = root / name
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_AGENT} {plan_file} "$@"\n')
    exe.chmod(0o755)
    return exe


def record(root: Path, task: str, attempt: int = 1) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "records" / f"{task}-{attempt}.json").read_text())
    return data


def write_config(root: Path, text: str) -> Path:
    """``orchestratord.toml`` next to the tracks directory (found by the daemon harness)."""
    path = root / "orchestratord.toml"
    path.write_text(text)
    return path


def commits(repo: Path, ref: str = "HEAD") -> list[str]:
    return git(repo, "log", "--format=%H", ref).split()


def message(repo: Path, ref: str) -> str:
    return git(repo, "log", "-1", "--format=%B", ref)


def files_in(repo: Path, ref: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", ref).split("\n")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATORD_")}


async def git_tree(tmp_path: Path, own: bool = True) -> tuple[Path, Trees, Tree]:
    """A repository and track ``a``'s tree in it: a worktree of its own (two tracks share the
    repository), or the checkout itself."""
    repo = make_repo(tmp_path / "repo", {"app.txt": "base\n"})
    cfg = config.load(flags={"state_dir": str(tmp_path / "state")}, env={}, cwd=tmp_path)
    trees = Trees(cfg)
    workdirs = {"a": repo, "b": repo} if own else {"a": repo}
    tree = await trees.prepare("a", repo, lambda: workdirs, "branch")
    assert tree is not None
    assert tree.own is own
    return repo, trees, tree


GIT_TASK = TaskDef(TaskKey("a", "T"), 0, 2, description="t")
"""The task of :func:`git_attempt`, in track ``a`` (:func:`git_tree`)."""


def git_attempt(trees: Trees, tree: Tree, tmp_path: Path, **options: Any) -> GitAttempt:
    """Attempt 1 of :data:`GIT_TASK` in ``tree``, without guardrails; ``options`` are
    :class:`GitAttempt`'s (``resumed``, ``after_stop``, ``reattached``, ``intents``, ...)."""
    scratch = tmp_path / "s.idx"
    return GitAttempt(trees, tree, GIT_TASK, 1, Guardrails.build([]), scratch, "STAMP", **options)
