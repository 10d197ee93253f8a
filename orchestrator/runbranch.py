"""A remote run's result arrives as a git branch: fetch it into the track's repository.

With ``workspace = "git"`` a run on a cluster works in a fresh checkout on its node and pushes
what it changed to a branch named after the run (``orchestratord/JOB``). The daemon fetches
that branch into the repository of the track's working directory, under the same name, so the
commit step finds the attempt's changes there: ``git diff HEAD...orchestratord/JOB``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio

from . import gitwork
from .errors import GitError


class RunBranchError(Exception):
    """The run's branch could not be fetched (a FAIL of the attempt, with this reason)."""


async def fetch(repository: str, remote: str, branch: str, commit: str) -> str:
    """Fetch ``branch`` from ``remote`` into ``repository``; return the local ref."""
    ref = f"refs/heads/{branch}"
    root = Path(repository)
    try:
        args = ("fetch", "--quiet", "--no-tags", remote, f"+{ref}:{ref}")
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
