"""A remote run's result arrives as a git branch: fetch it into the track's repository.

With ``workspace = "git"`` a run on a cluster works in a fresh checkout on its node and pushes
what it changed to a branch named after the run (``orchestratord/JOB``). The daemon fetches
that branch into the repository of the track's working directory, under the same name, so the
commit step finds the attempt's changes there: ``git diff HEAD...orchestratord/JOB``.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import anyio
import structlog

from . import gitlocks, gitwork
from .errors import GitError

log = structlog.get_logger("orchestratord")


class RunBranchError(Exception):
    """The run's branch could not be fetched (a FAIL of the attempt, with this reason)."""


async def fetch(repository: str, remote: str, branch: str, commit: str) -> str:
    """Fetch ``branch`` from ``remote`` into ``repository``; return the local ref.

    A fetch killed with the daemon leaves the lock of the run's ref, and the run's attempt,
    re-attached by the next daemon, fetches the same ref: a stale lock (the rule of
    :mod:`gitlocks` for the daemon's own refs) is removed, logged, and the fetch made again.
    """
    ref = f"refs/heads/{branch}"
    root = Path(repository)
    args = ("fetch", "--quiet", "--no-tags", remote, f"+{ref}:{ref}")
    try:
        try:
            await anyio.to_thread.run_sync(partial(gitwork.run, root, *args))
        except GitError as error:
            found = await anyio.to_thread.run_sync(_clear_lock, root, ref, str(error))
            if found is None:
                raise
            if not found.removed:
                raise GitError(gitlocks.explain(str(error), [found])) from None
            log.warning("stale git lock file removed", path=str(found.path), reason=found.why)
            await anyio.to_thread.run_sync(partial(gitwork.run, root, *args))
    except GitError as error:
        detail = " ".join(str(error).split())[-400:]
        raise RunBranchError(
            f"cannot fetch the run's branch {branch} from {remote}: {detail}"
        ) from None
    head = await anyio.to_thread.run_sync(partial(gitwork.run, root, "rev-parse", ref, check=False))
    got = head.stdout.decode().strip()
    if head.returncode != 0 or got != commit:
        raise RunBranchError(
            f"the run's branch {branch} is at {got or 'nothing'} after fetching, "
            f"not at the commit the run pushed ({commit}): was it pushed to since?"
        )
    return ref


def _clear_lock(root: Path, ref: str, message: str) -> gitlocks.Found | None:
    """The lock of the run's ``ref`` when ``message`` (a failed fetch) says it was in the
    way, removed if it is stale; None for any other failure."""
    path = gitlocks.in_the_way(message)
    if path is None or not gitlocks.inspectable():
        return None  # (without /proc no lock of a ref is proved stale here: no start is known)
    repo = gitwork.find_repo(root)
    if repo is None or path.resolve() != (repo.common / f"{ref}.lock").resolve():
        return None
    lock = gitlocks.Candidate(path, "own", gitlocks.repository_areas(root, repo.common))
    found = gitlocks.sweep([lock], started=time.time())  # (its age plays no part with /proc)
    return found[0] if found else gitlocks.Found(path, True, "it is gone")
