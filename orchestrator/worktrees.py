"""Which working tree each track works in, and what happens to its branch.

A track whose ``workdir`` is in a git repository works, when ``git.worktrees`` is on (``auto``:
when two or more tracks share the repository), in a worktree of its own under the state
directory, on its own branch ``orchestratord/TRACK`` created from the repository's default
branch. No track touches another's tree or the user's checkout. Otherwise it works in the
checkout itself (one attempt at a time per tree: attempts sharing a tree would mix their
changes).

Integration, per track: ``merge`` merges the track's branch into the base branch after each
PASS (computed with ``git merge-tree``, no working tree involved; a base branch checked out in
a checkout is fast-forwarded there, which keeps that checkout's local changes or refuses) and,
before each attempt, brings the track's branch up to date with the base branch so that work
from other tracks is there. ``branch`` leaves the branch for review.

Worktrees of finished tracks are removed (their branches stay); one with uncommitted changes is
kept and reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TypeVar

import anyio
import structlog

from . import gitlocks, gitwork
from .config import Config
from .errors import GitError
from .gitwork import Repo

log = structlog.get_logger("orchestratord")

BRANCH_PREFIX = "orchestratord/"
T = TypeVar("T")
_REF_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]|\.\.|^\.|\.$|\.lock$")


def ref_part(text: str) -> str:
    """``text`` as one component of a git ref name: odd characters %-encoded."""
    if not _REF_UNSAFE.search(text):
        return text
    return "".join(
        c if c.isascii() and (c.isalnum() or c in "_-") else f"%{ord(c):02X}" for c in text
    )


async def in_thread(func: Callable[..., T], *args: object) -> T:
    """Run blocking git work off the event loop."""
    return await anyio.to_thread.run_sync(partial(func, *args))


@dataclass(eq=False)
class Tree:
    """A working tree one track's attempts run in."""

    track: str
    repo: Repo
    root: Path
    """The top of the working tree."""
    cwd: Path
    """Where the track's runs happen (``workdir``, inside ``root``)."""
    own: bool
    """A worktree orchestratord made for this track (it may reset and clean it)."""
    branch: str | None
    base: str | None
    """The base branch (own trees)."""
    integration: str
    excludes: tuple[str, ...]
    """Paths (relative to ``root``) that are never an attempt's changes: the daemon's own."""
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    workdir: Path = field(default_factory=Path)
    """The configured ``workdir`` this tree was made for."""
    remade: str | None = None
    """A half-made worktree found where this one is was removed (what, until reported)."""

    @cached_property
    def index(self) -> Path:
        """The tree's index file (asked of git once: it stays where it is for the tree's life)."""
        return gitwork.git_path(self.root, "index")


@dataclass(frozen=True, slots=True)
class Finished:
    """What became of a finished track's worktree."""

    track: str
    path: Path
    branch: str | None
    files: tuple[str, ...] = ()
    """The uncommitted files that kept it; none: it was removed."""

    @property
    def removed(self) -> bool:
        return not self.files


class Trees:
    """The trees of every track of one daemon."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.git = cfg.settings.git
        self._repos: dict[Path, Repo | None] = {}
        self._trees: dict[str, Tree] = {}
        self._tree_locks: dict[Path, anyio.Lock] = {}
        self._repo_locks: dict[Path, anyio.Lock] = {}
        self._bases: dict[Path, str] = {}

    @property
    def worktree_root(self) -> Path:
        configured = self.git.worktree_dir
        return (
            (self.cfg.state_dir / configured).resolve()
            if configured
            else (self.cfg.state_dir / "worktrees")
        )

    @cached_property
    def started(self) -> float:
        """When this daemon started: a git lock file in a checkout is stale only if older."""
        return gitlocks.daemon_started(self.cfg.state_dir)

    def repo_of(self, workdir: Path) -> Repo | None:
        """The repository a workdir is in (cached: blocking, call from a thread)."""
        if workdir not in self._repos:
            self._repos[workdir] = gitwork.find_repo(workdir)
        return self._repos[workdir]

    def repo_lock(self, repo: Repo) -> anyio.Lock:
        return self._repo_locks.setdefault(repo.common, anyio.Lock())

    def tree(self, track: str) -> Tree | None:
        return self._trees.get(track)

    def _excludes(self, top: Path) -> tuple[str, ...]:
        out: list[str] = []
        for path in (self.cfg.tracks_dir, self.cfg.state_dir, self.worktree_root):
            try:
                rel = path.resolve().relative_to(top)
            except ValueError:
                continue
            if str(rel) != ".":  # the whole tree is never excluded
                out.append(str(rel))
        out.extend(self.git.exclude)
        return tuple(dict.fromkeys(out))

    def wants_worktree(self, repo: Repo, workdirs: dict[str, Path]) -> bool:
        """``git.worktrees``; ``auto``: two or more tracks share the repository."""
        if self.git.worktrees != "auto":
            return bool(self.git.worktrees)
        sharing = 0
        for workdir in workdirs.values():
            other = self.repo_of(workdir)
            if other is not None and other.common == repo.common:
                sharing += 1
        return sharing >= 2

    def base_branch(self, repo: Repo) -> str:
        if self.git.base_branch:
            return self.git.base_branch
        if repo.common not in self._bases:
            self._bases[repo.common] = gitwork.default_branch(repo.top)
        return self._bases[repo.common]

    def planned(
        self, track: str, workdir: Path, workdirs: dict[str, Path]
    ) -> tuple[str | None, bool] | None:
        """The branch a track works on and whether in its own worktree; None outside git.

        Blocking, and changes nothing (for ``orchestratord prompt``).
        """
        if not self.git.enabled:
            return None
        repo = self.repo_of(workdir)
        if repo is None:
            return None
        if self.wants_worktree(repo, workdirs):
            return BRANCH_PREFIX + ref_part(track), True
        return gitwork.current_branch(repo.top), False

    async def prepare(
        self,
        track: str,
        workdir: Path,
        workdirs: Callable[[], dict[str, Path]],
        integration: str,
    ) -> Tree | None:
        """The tree ``track`` works in now (made if needed); None outside git.

        ``workdirs`` gives every track's workdir, asked for only when a tree is decided.
        """
        if not self.git.enabled:
            return None
        current = self._trees.get(track)
        if current is not None and current.workdir == workdir and current.root.is_dir():
            current.integration = integration
            return current
        if workdir in self._repos:
            repo = self._repos[workdir]  # no thread hop for what is known (most attempts)
        else:
            repo = await in_thread(self.repo_of, workdir)
        if repo is None:
            return None
        if not await in_thread(self.wants_worktree, repo, workdirs()):
            root = repo.top
            tree = Tree(
                track=track,
                repo=repo,
                root=root,
                cwd=workdir,
                own=False,
                branch=await in_thread(gitwork.current_branch, root),
                base=None,
                integration="branch",
                excludes=self._excludes(root),
                lock=self._tree_locks.setdefault(root, anyio.Lock()),
                workdir=workdir,
            )
        else:
            async with self.repo_lock(repo):
                tree = await in_thread(self._worktree, track, repo, workdir, integration)
        self._trees[track] = tree
        return tree

    def worktree_path(self, track: str, repo: Repo) -> Path:
        """Where the worktree of ``track`` in ``repo`` is (or would be)."""
        tag = hashlib.sha256(str(repo.common).encode()).hexdigest()[:8]
        return self.worktree_root / f"{repo.top.name}-{tag}" / ref_part(track)

    async def existing(self, track: str, workdir: Path, integration: str) -> Tree | None:
        """The track's own worktree if it is there, known or not (one a daemon that stopped
        left), without making one where there is none."""
        known = self._trees.get(track)
        if known is not None:
            return known if known.own else None
        repo = await in_thread(self.repo_of, workdir) if self.git.enabled else None
        if repo is None or not (self.worktree_path(track, repo) / ".git").is_file():
            return None
        async with self.repo_lock(repo):
            tree = await in_thread(self._worktree, track, repo, workdir, integration)
        return self._trees.setdefault(track, tree)

    def _worktree(self, track: str, repo: Repo, workdir: Path, integration: str) -> Tree:
        base = self.base_branch(repo)
        if not gitwork.ref_exists(repo.top, f"refs/heads/{base}"):
            raise GitError(
                f"{repo.top}: base branch {base!r} does not exist (the repository needs a "
                "first commit, or set git.base_branch)"
            )
        path = self.worktree_path(track, repo)
        branch = BRANCH_PREFIX + ref_part(track)
        remade = self._half_made(repo, path)
        if not (path / ".git").exists():
            gitwork.add_worktree(repo.top, path, branch, base)
            log.info("worktree made", track=track, path=str(path), branch=branch, base=base)
        else:
            branch = gitwork.current_branch(path) or branch
        cwd = path / workdir.resolve().relative_to(repo.top)
        cwd.mkdir(parents=True, exist_ok=True)
        return Tree(
            track=track,
            repo=repo,
            root=path,
            cwd=cwd,
            own=True,
            branch=branch,
            base=base,
            integration=integration,
            excludes=self._excludes(repo.top),
            lock=self._tree_locks.setdefault(path, anyio.Lock()),
            workdir=workdir,
            remade=remade,
        )

    def _half_made(self, repo: Repo, path: Path) -> str | None:
        """Remove the worktree at ``path`` if a ``git worktree add`` of it was cut short (the
        daemon killed while it made it): it would block the track. What was done, or None.

        Only when no git that may still be making it runs: none (but the daemon's own, which
        make worktrees under the repository's lock, held here) in the repository's checkout
        or git directory (where the add runs) or in the worktree (its checkout). Without
        ``/proc``: when git began it before the daemon started. Otherwise the reason says what
        to run.
        """
        locked = gitwork.interrupted_add(repo.common, path)
        if locked is None:
            return None
        if gitlocks.inspectable():
            busy = gitlocks.git_at_work((repo.top, repo.common, path), theirs=True)
        else:
            try:
                begun = locked.stat().st_mtime
            except FileNotFoundError:
                return None  # the add has just finished
            busy = (
                None
                if begun < self.started
                else f"it was begun after the daemon started ({gitlocks.clock(self.started)}) "
                "and this system does not show which processes run"
            )
        what = (
            f"the worktree {path} is half-made: a `git worktree add` of it was cut short "
            f"({locked} says {gitwork.ADDING!r})"
        )
        if busy is not None:
            command = gitwork.discard_worktree_command(repo.top, path)
            raise GitError(
                f"{what}, and the daemon left it: {busy}. If no git is making it any more, "
                f"run: {command}; then set the task back to pending"
            )
        gitwork.discard_worktree(repo.top, path)
        log.warning("half-made worktree removed", path=str(path), locked=str(locked))
        return f"{what}; it was removed and made again"

    # ------------------------------------------------------------------ base branch

    def sync(self, tree: Tree) -> str | None:
        """Bring an own tree's branch up to date with the base branch (merge integration).

        Blocking; the tree must be clean. Returns a note for the attempt's log, or None.
        """
        if not tree.own or tree.integration != "merge" or tree.base is None:
            return None
        root = tree.root
        base_tip = gitwork.rev(root, f"refs/heads/{tree.base}")
        here = gitwork.head(root)
        if here is None or gitwork.is_ancestor(root, base_tip, here):
            return None
        env = gitwork.ident_env(tree.repo)
        done = gitwork.run(
            root,
            "merge",
            "--no-edit",
            "--quiet",
            "-m",
            f"Merge {tree.base} into {tree.branch}",
            base_tip,
            env=env,
            check=False,
        )
        if done.returncode == 0:
            return f"brought {tree.branch} up to date with {tree.base}"
        conflicts = gitwork.out(root, "diff", "--name-only", "--diff-filter=U").split("\n")
        gitwork.run(root, "merge", "--abort", check=False)
        gitwork.reset_hard(root, here)
        files = ", ".join(f for f in conflicts if f) or "unknown files"
        return (
            f"could not bring {tree.branch} up to date with {tree.base} (conflicts in {files}); "
            "working on the branch as it is"
        )

    async def integrate(self, tree: Tree, commit: str, message: str) -> str | None:
        """Merge ``commit`` into the base branch; the reason when it cannot be done."""
        if not tree.own or tree.integration != "merge" or tree.base is None:
            return None
        async with self.repo_lock(tree.repo):
            return await in_thread(self._merge, tree, commit, message)

    def _merge(self, tree: Tree, commit: str, message: str) -> str | None:
        top, base = tree.repo.top, tree.base
        assert base is not None
        ref = f"refs/heads/{base}"
        old = gitwork.rev(top, ref)
        if gitwork.is_ancestor(top, commit, old):
            return None  # merged already (by a daemon stopped before it recorded the PASS)
        if gitwork.is_ancestor(top, old, commit):
            new = commit
        else:
            scratch = self.cfg.state_dir / "git" / f"merge-{ref_part(tree.track)}"
            merged = gitwork.merge_trees(top, old, commit, scratch)
            if merged.tree is None:
                files = ", ".join(merged.conflicts) or "unknown files"
                return (
                    f"merging {tree.branch} into {base} conflicts in: {files} "
                    f"(the verified work is committed on {tree.branch})"
                )
            new = gitwork.commit_tree(
                top, merged.tree, [old, commit], message, gitwork.ident_env(tree.repo)
            )
        where = gitwork.checked_out_at(top, base)
        try:
            if where is not None:
                gitwork.fast_forward(where, new)
            else:
                gitwork.update_ref(top, ref, new, old)
        except GitError as exc:
            return (
                f"could not update {base}{f' checked out at {where}' if where else ''}: {exc} "
                f"(the verified work is committed on {tree.branch})"
            )
        return None

    # ------------------------------------------------------------------ clean-up

    async def finish(self, track: str) -> Finished | None:
        """Remove the worktree of a finished track, or keep one with uncommitted changes; None:
        the track has no worktree of its own.

        It waits for the tree: an attempt holds it until its processes have ended (a cut-short
        attempt's take up to ``kill_grace``), so no worktree goes while anything runs in it.
        """
        tree = self._trees.get(track)
        if tree is None or not tree.own:
            return None
        async with tree.lock:
            if self._trees.get(track) is not tree:
                return None  # removed (or replaced) while this waited
            if not tree.root.exists():
                self._trees.pop(track, None)
                return None
            dirty = await in_thread(gitwork.dirty_files, tree.root)
            if dirty:
                return Finished(track, tree.root, tree.branch, tuple(dirty))
            async with self.repo_lock(tree.repo):
                await in_thread(gitwork.remove_worktree, tree.repo.top, tree.root)
            self._trees.pop(track, None)
        return Finished(track, tree.root, tree.branch)
