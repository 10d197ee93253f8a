"""Git, as a subprocess: repositories, snapshots of a working tree, commits, refs, worktrees.

Everything here is blocking and short; callers on the event loop run it in a worker thread.
Commands run with the user's git configuration, except that automatic garbage collection is
off (it would race with parallel worktrees) and paths are printed unquoted. Nothing here reads
or writes the user's index: snapshots and commits go through a scratch index
(``GIT_INDEX_FILE``), so the only changes to a checkout are the ones a caller asks for.

A *snapshot* is the tree object of a working tree as ``git add -A`` would see it (tracked and
untracked files, ignored ones left out, excluded paths as they stand in the index): the
difference between two snapshots is exactly what changed on disk in between, whatever was
committed or staged meanwhile.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import GitError

TIMEOUT = 300.0
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
FALLBACK_IDENT = {
    "GIT_AUTHOR_NAME": "orchestratord",
    "GIT_AUTHOR_EMAIL": "orchestratord@localhost",
    "GIT_COMMITTER_NAME": "orchestratord",
    "GIT_COMMITTER_EMAIL": "orchestratord@localhost",
}
_CLEAN_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR")


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    env["LC_ALL"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.update(extra or {})
    return env


def run(
    root: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    argv = ["git", "-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "core.quotePath=false"]
    try:
        done = subprocess.run(
            [*argv, *args],
            cwd=root,
            env=_env(env),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (FileNotFoundError, NotADirectoryError):
        if not root.is_dir():
            raise GitError(f"{root}: no such directory") from None
        raise GitError("git is not installed (or not on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took more than {TIMEOUT:g} s in {root}") from None
    if check and done.returncode != 0:
        message = (
            done.stderr.decode("utf-8", "replace").strip()
            or done.stdout.decode("utf-8", "replace").strip()
        )
        raise GitError(f"git {' '.join(args[:2])} failed in {root}: {message}")
    return done


def out(root: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    return run(root, *args, env=env).stdout.decode("utf-8", "replace").strip()


@functools.cache
def version() -> tuple[int, int]:
    if shutil.which("git") is None:
        return (0, 0)
    text = out(Path.cwd(), "--version").split()[-1]
    major, minor, *_ = [*(int(p) for p in text.split(".")[:2] if p.isdigit()), 0, 0]
    return major, minor


# ------------------------------------------------------------------ repositories


@dataclass(frozen=True, slots=True)
class Repo:
    top: Path
    """The top of the checkout a path is in."""
    common: Path
    """The repository's common git directory: the same for all its worktrees."""


def find_repo(path: Path) -> Repo | None:
    """The git checkout ``path`` is in, or None (no repository, a bare one, or no git)."""
    if not path.is_dir() or shutil.which("git") is None:
        return None
    done = run(path, "rev-parse", "--show-toplevel", "--git-common-dir", check=False)
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode != 0 or len(lines) < 2:
        return None
    top = Path(lines[0]).resolve()
    return Repo(top, (path / lines[1]).resolve())


def commit_of(root: Path, ref: str) -> str | None:
    """The commit ``ref`` names (a branch, ``HEAD``, ``X^1``); None when it names none."""
    done = run(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if done.returncode != 0:
        return None
    return done.stdout.decode().strip() or None


def ref_exists(root: Path, ref: str) -> bool:
    return commit_of(root, ref) is not None


def rev(root: Path, ref: str) -> str:
    return out(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def head(root: Path) -> str | None:
    """The commit checked out at ``root``; None in a repository without commits."""
    return commit_of(root, "HEAD")


def tree_of(root: Path, commit: str | None) -> str:
    return out(root, "rev-parse", f"{commit}^{{tree}}") if commit else EMPTY_TREE


def current_branch(root: Path) -> str | None:
    """The branch checked out at ``root`` (``main``), or None when HEAD is detached."""
    done = run(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if done.returncode != 0:
        return None
    return done.stdout.decode().strip() or None


def default_branch(root: Path) -> str:
    """The repository's default branch, detected: origin's HEAD, ``init.defaultBranch``,
    ``main``/``master``/``trunk``, else the branch of the main checkout."""
    candidates: list[str] = []
    done = run(root, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", check=False)
    if done.returncode == 0:
        candidates.append(done.stdout.decode().strip().removeprefix("origin/"))
    done = run(root, "config", "--get", "init.defaultBranch", check=False)
    if done.returncode == 0:
        candidates.append(done.stdout.decode().strip())
    candidates += ["main", "master", "trunk"]
    for name in candidates:
        if name and ref_exists(root, f"refs/heads/{name}"):
            return name
    main = worktrees(root)[:1]
    if main and main[0].branch:
        return main[0].branch
    raise GitError(
        f"{root}: cannot tell the repository's default branch (no origin/HEAD, main or master); "
        "set git.base_branch in the config"
    )


@functools.cache
def _identity(common: Path) -> bool:
    done = run(common, "config", "--get", "user.email", check=False)
    return done.returncode == 0 and bool(done.stdout.strip())


def ident_env(repo: Repo) -> dict[str, str]:
    """Who commits: the repository's configured user, else ``orchestratord``."""
    return {} if _identity(repo.common) else dict(FALLBACK_IDENT)


# ------------------------------------------------------------------ worktrees


@dataclass(frozen=True, slots=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None
    """Short branch name, or None (detached or bare)."""


def worktrees(root: Path) -> list[Worktree]:
    """Every worktree of the repository; the main checkout first."""
    text = out(root, "worktree", "list", "--porcelain")
    found: list[Worktree] = []
    path: Path | None = None
    head_id: str | None = None
    branch: str | None = None
    for line in [*text.splitlines(), ""]:
        if line.startswith("worktree "):
            path = Path(line[len("worktree ") :])
        elif line.startswith("HEAD "):
            head_id = line[5:]
        elif line.startswith("branch "):
            branch = line[len("branch ") :].removeprefix("refs/heads/")
        elif not line and path is not None:
            found.append(Worktree(path, head_id, branch))
            path, head_id, branch = None, None, None
    return found


def checked_out_at(root: Path, branch: str) -> Path | None:
    for tree in worktrees(root):
        if tree.branch == branch:
            return tree.path
    return None


def add_worktree(root: Path, path: Path, branch: str, start: str) -> None:
    """Check ``branch`` out at ``path``, creating the branch from ``start`` if it is new."""
    run(root, "worktree", "prune")
    path.parent.mkdir(parents=True, exist_ok=True)
    if ref_exists(root, f"refs/heads/{branch}"):
        elsewhere = checked_out_at(root, branch)
        if elsewhere is not None and elsewhere.resolve() != path.resolve():
            raise GitError(
                f"branch {branch} is checked out at {elsewhere}; check out another branch "
                "there so that orchestratord can use it"
            )
        run(root, "worktree", "add", "--quiet", str(path), branch)
    else:
        run(root, "worktree", "add", "--quiet", "-b", branch, str(path), start)


def remove_worktree(root: Path, path: Path) -> None:
    run(root, "worktree", "remove", "--force", str(path))


ADDING = "initializing"
"""What ``git worktree add`` writes in the new worktree's ``locked`` file until it is done
(in the C locale, which every git here runs in)."""


def interrupted_add(common: Path, path: Path) -> Path | None:
    """The ``locked`` file of a worktree at ``path`` whose ``git worktree add`` never finished
    (killed: git locks the new entry "initializing" and unlocks it when the checkout is done);
    None when there is none."""
    try:
        names = os.listdir(common / "worktrees")
    except OSError:
        return None
    wanted = os.path.realpath(path / ".git")
    for name in names:
        admin = common / "worktrees" / name
        try:
            if (admin / "locked").read_text(encoding="utf-8", errors="replace").strip() != ADDING:
                continue
            gitdir = (admin / "gitdir").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if os.path.realpath(gitdir) == wanted:
            return admin / "locked"
    return None


def discard_worktree_command(root: Path, path: Path) -> str:
    """The shell command that does :func:`discard_worktree`, for a person to run."""
    return " && ".join(
        shlex.join(argv)
        for argv in (
            ["rm", "-rf", str(path)],
            ["git", "-C", str(root), "worktree", "unlock", str(path)],
            ["git", "-C", str(root), "worktree", "prune"],
        )
    )


def discard_worktree(root: Path, path: Path) -> None:
    """Remove a half-made worktree at ``path``: its files, then git's record of it, whatever
    git had made of it (``git worktree remove`` refuses one without its ``.git`` file)."""
    if path.exists():
        shutil.rmtree(path)
    run(root, "worktree", "unlock", str(path))
    run(root, "worktree", "prune")


# ------------------------------------------------------------------ snapshots and changes


def git_path(root: Path, name: str) -> Path:
    return (root / out(root, "rev-parse", "--git-path", name)).resolve()


def copy_index(real: Path, dest: Path) -> None:
    """Make ``dest`` a copy of the index file ``real`` with its modification time, or remove
    ``dest`` when there is no index. Git trusts an entry whose file looks unchanged only if the
    file is older than the index (a file changed in the second the index was written is read
    again: "racy git"), so a copy made later must not look newer than the index it is: the
    change would be missed. The time comes from the file copied, even if git replaces the
    index meanwhile."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        source = real.open("rb")
    except FileNotFoundError:
        dest.unlink(missing_ok=True)
        return
    with source:
        stat = os.fstat(source.fileno())
        with dest.open("wb") as copy:
            shutil.copyfileobj(source, copy)
    os.utime(dest, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def snapshot(root: Path, excludes: Sequence[str], scratch: Path, index: Path | None = None) -> str:
    """The tree of the working tree at ``root`` now (see the module docstring); ``index``:
    the tree's index file, when the caller knows it."""
    real = index or git_path(root, "index")
    copy_index(real, scratch)
    env = {"GIT_INDEX_FILE": str(scratch)}
    spec = [".", *(f":(exclude,literal){e}" for e in excludes)]
    run(root, "add", "--all", "--ignore-errors", "--", *spec, env=env, check=False)
    tree = out(root, "write-tree", env=env)
    scratch.unlink(missing_ok=True)
    return tree


@dataclass(frozen=True, slots=True)
class Change:
    status: str
    """``A`` added, ``M`` modified, ``D`` deleted, ``T`` type changed."""
    path: str


def changes(root: Path, before: str, after: str) -> list[Change]:
    if before == after:
        return []
    data = run(root, "diff-tree", "-r", "-z", "--no-renames", "--name-status", before, after).stdout
    parts = data.decode("utf-8", "surrogateescape").split("\0")
    return [Change(parts[i][:1], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]


def diff(root: Path, before: str, after: str) -> str:
    """The unified diff (no context) between two trees."""
    if before == after:
        return ""
    data = run(root, "diff-tree", "-r", "-p", "-U0", "--no-renames", before, after).stdout
    return data.decode("utf-8", "replace")


# ------------------------------------------------------------------ commits and refs


def commit_tree(
    root: Path, tree: str, parents: Sequence[str], message: str, env: Mapping[str, str]
) -> str:
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    return run(root, *args, env=env, stdin=message.encode()).stdout.decode().strip()


def apply_changes(
    root: Path, base_tree: str, source: str, paths: Sequence[Change], scratch: Path
) -> str:
    """``base_tree`` with ``paths`` as they are in tree ``source`` (removed where ``D``)."""
    env = {"GIT_INDEX_FILE": str(scratch)}
    scratch.unlink(missing_ok=True)
    run(root, "read-tree", base_tree, env=env)
    wanted = {c.path.encode("utf-8", "surrogateescape") for c in paths if c.status != "D"}
    info: list[bytes] = []
    if wanted:
        listing = run(root, "ls-tree", "-r", "-z", "--full-tree", source).stdout
        for entry in listing.split(b"\0"):
            meta, _, path = entry.partition(b"\t")
            if path in wanted:
                fields = meta.split()
                info.append(fields[0] + b" " + fields[-1] + b"\t" + path)
    for change in paths:
        if change.status == "D":
            path = change.path.encode("utf-8", "surrogateescape")
            info.append(b"0 " + b"0" * 40 + b"\t" + path)
    if info:
        run(root, "update-index", "-z", "--index-info", env=env, stdin=b"\0".join(info) + b"\0")
    tree = out(root, "write-tree", env=env)
    scratch.unlink(missing_ok=True)
    return tree


def update_ref(root: Path, ref: str, new: str, old: str | None = None) -> None:
    run(root, "update-ref", ref, new, *([old] if old else []))


def restore_paths(root: Path, tree: str, paths: Sequence[Change], scratch: Path) -> None:
    """Put ``paths`` back as they are in ``tree`` on disk; files not in it are deleted."""
    env = {"GIT_INDEX_FILE": str(scratch)}
    scratch.unlink(missing_ok=True)
    run(root, "read-tree", tree, env=env)
    existing = [c.path for c in paths if c.status != "A"]
    if existing:
        run(
            root,
            "checkout-index",
            "--force",
            "-z",
            "--stdin",
            env=env,
            stdin=b"\0".join(p.encode("utf-8", "surrogateescape") for p in existing) + b"\0",
        )
    scratch.unlink(missing_ok=True)
    for change in paths:
        if change.status == "A":
            target = root / change.path
            if target.is_file() or target.is_symlink():
                target.unlink()
            parent = target.parent
            while parent != root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent


def reset_hard(root: Path, commit: str) -> None:
    """Make a worktree of ours exactly ``commit``: tracked files reset, untracked removed."""
    run(root, "reset", "--quiet", "--hard", commit)
    run(root, "clean", "-d", "--force", "--quiet")


def dirty_files(root: Path) -> list[str]:
    """Files that differ from HEAD (untracked included, ignored not)."""
    text = run(root, "status", "--porcelain", "-z", "--untracked-files=all").stdout.decode(
        "utf-8", "replace"
    )
    out_: list[str] = []
    parts = text.split("\0")
    i = 0
    while i < len(parts):
        entry = parts[i]
        if len(entry) > 3:
            out_.append(entry[3:])
            if entry[0] in "RC":
                i += 1  # the rename's source follows
        i += 1
    return out_


# ------------------------------------------------------------------ merging


@dataclass(frozen=True, slots=True)
class Merged:
    tree: str | None
    conflicts: tuple[str, ...] = ()


def merge_trees(root: Path, ours: str, theirs: str, scratch: Path) -> Merged:
    """The merge of two commits, as a tree, or the files in conflict.

    With git 2.38 or newer no working tree is involved (``git merge-tree --write-tree``);
    older versions merge in a temporary detached worktree at ``scratch``, removed afterwards.
    """
    if version() < (2, 38):
        return _merge_in_worktree(root, ours, theirs, scratch)
    done = run(
        root,
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        ours,
        theirs,
        check=False,
    )
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode == 0 and lines:
        return Merged(lines[0])
    if done.returncode == 1 and lines:
        files = tuple(dict.fromkeys(line for line in lines[1:] if line))
        return Merged(None, files)
    raise GitError(f"git merge-tree failed in {root}: {done.stderr.decode().strip()}")


def _merge_in_worktree(root: Path, ours: str, theirs: str, scratch: Path) -> Merged:
    if scratch.exists():
        run(root, "worktree", "remove", "--force", str(scratch), check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    run(root, "worktree", "prune")
    scratch.parent.mkdir(parents=True, exist_ok=True)
    run(root, "worktree", "add", "--quiet", "--detach", str(scratch), ours)
    try:
        done = run(
            scratch, "merge", "--no-ff", "--no-commit", "--quiet", theirs,
            env=FALLBACK_IDENT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            conflicts = out(scratch, "diff", "--name-only", "--diff-filter=U").split("\n")
            return Merged(None, tuple(f for f in conflicts if f))
        return Merged(out(scratch, "write-tree"))
    finally:
        run(root, "worktree", "remove", "--force", str(scratch), check=False)


def is_ancestor(root: Path, ancestor: str, descendant: str) -> bool:
    done = run(root, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    return done.returncode == 0


def fast_forward(root: Path, commit: str) -> None:
    """Fast-forward the branch checked out at ``root``; local changes stay (or it refuses)."""
    run(root, "merge", "--ff-only", "--quiet", commit)
