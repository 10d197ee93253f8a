"""Lock files a killed git left behind in a track's tree: removed when provably stale, else
explained.

Git takes a file ``X`` by creating ``X.lock`` and renaming it over ``X`` when done; a git that
is killed (``systemctl stop`` ends the daemon's whole cgroup, the OOM killer, a power cut)
leaves the ``.lock`` file, and every later git that needs ``X`` fails with "File exists".
Before each attempt (:func:`sweep`, with the track's tree held, so none of the daemon's own
git work runs on it) the lock files the attempt's git work would meet are looked at:

- the daemon's scratch index lock (``STATE_DIR/git/TRACK.index.lock``): the daemon's alone,
  so stale unless a process has it open (the git of a daemon killed a moment ago, still
  running);
- *own* locks, in a worktree the daemon made (its git directory, the track's branch) and the
  daemon's own refs (``refs/orchestratord/...``): stale unless a process has the file open or
  a git process runs in that worktree, or for a ref (which any git of the repository may
  update: ``git gc`` packing refs, ``git branch``) in any worktree of the repository (git
  closes some lock files while it still holds them, and ``git commit`` holds ``index.lock``
  closed while its editor is open). Without ``/proc``: stale when older than the daemon's
  start;
- *shared* locks, which a person's git may hold right now (the git directory of a checkout,
  the base branch, ``packed-refs.lock``): stale only when older than the daemon's start, not
  open in any process, and no git process runs in any worktree of the repository. Without
  ``/proc`` they are never removed.

A stale lock is removed (the caller logs and journals it); any other is left, with the reason,
which :func:`explain` adds to a git error that names the file. One left is reported once while
it stays in place (:class:`Reported`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from . import gitwork, procs
from .errors import GitError
from .lock import LOCK_NAME

Kind = Literal["scratch", "own", "shared"]
_IN_THE_WAY = re.compile(r"Unable to create '([^']+\.lock)': File exists")
_ADVICE = re.compile(
    r"\.?\s*Another git process seems to be running.*?remove the file manually to continue\.",
    re.DOTALL,
)
"""Git's own advice after "File exists": the explanation replaces it."""


@dataclass(frozen=True, slots=True)
class Candidate:
    path: Path
    kind: Kind
    areas: tuple[Path, ...]
    """Where a git process that may hold the lock would run (its working directory)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A lock file found in the way, and what became of it."""

    path: Path
    removed: bool
    why: str
    """Why it was stale (removed), or why it was left."""
    identity: tuple[int, int] | None = None
    """The file's inode and modification time (ns) when it was looked at."""

    def describe(self) -> str:
        if self.removed:
            return f"removed the stale git lock file {self.path}: {self.why}"
        return f"left the git lock file {self.path} in place: {self.why}"


def daemon_started(state_dir: Path) -> float:
    """When the daemon holding ``state_dir`` started: its lock file is written then."""
    try:
        return (state_dir / LOCK_NAME).stat().st_mtime
    except OSError:
        return time.time()


def clock(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


# ------------------------------------------------------------------ processes (Linux)


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    command: str


def inspectable() -> bool:
    """Whether other processes' open files and directories can be seen (``/proc``)."""
    return (procs.PROC / "self" / "fd").is_dir()


def _pids() -> Iterator[int]:
    """Every other process's id."""
    me = os.getpid()
    return (pid for pid in procs.pids() if pid != me)


def _command(pid: int) -> str:
    try:
        raw = (procs.PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)[:200]


def holders(paths: Iterable[Path]) -> dict[Path, Process]:
    """The processes that have any of ``paths`` open (that this user may look at)."""
    wanted = {os.path.realpath(p): p for p in paths}
    found: dict[Path, Process] = {}
    if not wanted:
        return found
    for pid in _pids():
        fd_dir = procs.PROC / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target in wanted and wanted[target] not in found:
                found[wanted[target]] = Process(pid, _command(pid))
    return found


def gits(theirs: bool = False) -> list[tuple[Process, Path]]:
    """Every live git process (that this user may look at), with its working directory;
    ``theirs``: leave out those this daemon runs itself."""
    out: list[tuple[Process, Path]] = []
    me = str(os.getpid())
    for pid in _pids():
        base = procs.PROC / str(pid)
        try:
            comm = (base / "comm").read_text().strip()
            if comm != "git" and not comm.startswith("git-"):
                continue
            if theirs and (base / "stat").read_text().rpartition(")")[2].split()[1:2] == [me]:
                continue
            cwd = Path(os.readlink(base / "cwd"))
        except OSError:
            continue
        out.append((Process(pid, _command(pid)), cwd))
    return out


def _within(path: Path, areas: Iterable[Path]) -> bool:
    return any(path == area or path.is_relative_to(area) for area in areas)


def git_at_work(areas: Iterable[Path], theirs: bool = False) -> str | None:
    """Which git process runs in ``areas`` (a directory or below it), or None: none does.
    ``theirs``: the daemon's own gits do not count."""
    wanted = [area.resolve() for area in areas]
    for proc, cwd in gits(theirs):
        if _within(cwd, wanted):
            return f"git process {proc.pid} ({proc.command}) runs in {cwd}"
    return None


# ------------------------------------------------------------------ what is in the way


def repository_areas(root: Path, common: Path) -> tuple[Path, ...]:
    """Where a git that works on the repository of ``root`` runs: its git directory and every
    worktree of it."""
    try:
        trees = [t.path for t in gitwork.worktrees(root)]
    except GitError:
        trees = []
    return (common.resolve(), *(t.resolve() for t in trees))


def in_the_way(message: str) -> Path | None:
    """The lock file a git error says was in its way ("File exists"), if it says so."""
    match = _IN_THE_WAY.search(message)
    return Path(match.group(1)) if match else None


def candidates(
    root: Path,
    gitdir: Path,
    common: Path,
    own: bool,
    branch: str | None,
    base: str | None,
    scratch: Path,
    own_refs: Iterable[str] = (),
) -> list[Candidate]:
    """Lock files that exist now and are in the way of an attempt's git work in the tree at
    ``root`` (git directory ``gitdir``, common directory ``common``)."""
    found: list[Candidate] = []
    scratch_lock = scratch.with_name(scratch.name + ".lock")
    if scratch_lock.exists():
        found.append(Candidate(scratch_lock, "scratch", ()))
    own_areas = (root.resolve(), gitdir.resolve())
    shared_areas: tuple[Path, ...] | None = None

    def shared() -> tuple[Path, ...]:
        nonlocal shared_areas
        if shared_areas is None:
            shared_areas = (*own_areas, *repository_areas(root, common))
        return shared_areas

    def add(path: Path, own_kind: bool, ref: bool) -> None:
        if path.is_file() and all(c.path != path for c in found):
            areas = own_areas if own_kind and not ref else shared()
            found.append(Candidate(path, "own" if own_kind else "shared", areas))

    try:
        names = sorted(os.listdir(gitdir))
    except OSError:
        names = []
    for name in names:
        if name.endswith(".lock"):
            add(gitdir / name, own, ref=False)
    if branch:
        add(common / "refs" / "heads" / f"{branch}.lock", own, ref=True)
    if base:
        add(common / "refs" / "heads" / f"{base}.lock", False, ref=True)
    add(common / "packed-refs.lock", False, ref=True)
    for ref in own_refs:
        add(common / f"{ref}.lock", True, ref=True)
    return found


def judge(candidate: Candidate, started: float) -> str | None:
    """Why ``candidate`` may be live (it is left), or None: it is stale."""
    path = candidate.path
    try:
        made = path.stat().st_mtime
    except OSError:
        return None  # gone meanwhile: nothing to do
    young = made >= started
    if not inspectable():
        if candidate.kind == "scratch":
            return None
        if candidate.kind == "own" and not young:
            return None
        return (
            f"it was made at {clock(made)} and this system does not show which processes "
            "hold files, so a git running now may own it"
            if candidate.kind == "shared"
            else f"it was made at {clock(made)}, after the daemon started "
            f"({clock(started)}), and this system does not show which processes hold files"
        )
    held = holders([path]).get(path)
    if held is not None:
        return f"process {held.pid} ({held.command}) has it open"
    if candidate.kind == "scratch":
        return None
    running = git_at_work(candidate.areas)
    if running is not None:
        return f"{running} and may own it"
    if candidate.kind == "shared" and young:
        return (
            f"it was made at {clock(made)}, after the daemon started ({clock(started)}): "
            "a git of yours that ran since may still own it"
        )
    return None


def _stale_reason(candidate: Candidate, started: float) -> str:
    """Why a lock :func:`judge` let go is stale."""
    if candidate.kind == "scratch":
        return "the daemon's own scratch index, which it is not using, and no process has it open"
    if not inspectable():
        return f"in the daemon's own worktree or refs, and older than its start ({clock(started)})"
    if candidate.kind == "own":
        return (
            "in the daemon's own worktree or refs, no process has it open and no git that may "
            "own it runs (in that worktree; for a ref, in the repository)"
        )
    return (
        f"older than the daemon's start ({clock(started)}), no process has it open and no git "
        "runs in the repository"
    )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


def sweep(found: list[Candidate], started: float) -> list[Found]:
    """Remove the stale ones of ``found``; what became of each."""
    out: list[Found] = []
    for candidate in found:
        before = _identity(candidate.path)
        why = judge(candidate, started)
        if why is None:
            reason = _stale_reason(candidate, started)
            if before is None or _identity(candidate.path) != before:
                continue  # gone, or made again meanwhile (by a git that runs now): not ours
            try:
                candidate.path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                out.append(Found(candidate.path, False, f"it could not be removed: {exc}"))
                continue
            out.append(Found(candidate.path, True, reason, before))
        else:
            out.append(Found(candidate.path, False, why, before))
    return out


class Reported:
    """The lock files left in place that were reported (logged, journaled): each once while it
    stays the same file (its path, inode and modification time), and again once it changed,
    or came back after it was gone. Without this, a lock left in place for hours is reported
    at every attempt of every track that meets it."""

    def __init__(self) -> None:
        self._left: dict[Path, tuple[int, int]] = {}

    def new(self, found: Iterable[Found]) -> list[Found]:
        """Those of ``found`` to report: every removal, and each left lock not reported yet."""
        for path, identity in list(self._left.items()):
            if _identity(path) != identity:
                del self._left[path]  # gone or made again since: news when met again
        out: list[Found] = []
        for item in found:
            if item.removed or item.identity is None:
                out.append(item)
            elif self._left.get(item.path) != item.identity:
                self._left[item.path] = item.identity
                out.append(item)
        return out


def explain(message: str, left: Iterable[Found]) -> str:
    """``message`` (a git error) with, when it names a lock file in the way, which file to
    remove and why the daemon did not (``left``: what :func:`sweep` found)."""
    match = _IN_THE_WAY.search(message)
    if match is None:
        return message
    path = Path(match.group(1))
    why = next((f.why for f in left if f.path == path and not f.removed), None)
    if why is None:
        why = (
            "it was not there when the attempt started (or is not one the daemon clears by "
            "itself, such as the index of the checkout a merge updates): a git running now "
            "(yours, or in another worktree of this repository) may own it"
        )
    rest = _ADVICE.sub("", message[match.end() :], count=1)
    return (
        f"{message[: match.end()]}; the daemon left it in place: {why}. If no git is running "
        f"there, remove it (rm '{path}') and set the task back to pending{rest}"
    )
