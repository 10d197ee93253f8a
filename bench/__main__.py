"""``python -m bench [NAME ...]``: the benchmarks (all of them by default), figures printed.

Figures and ratios against references measured in the same run; nothing is asserted, because
these machines are shared and noisy.
"""

from __future__ import annotations

import os
import sys
import tempfile

from . import (
    breakdown,
    chainpath,
    dispatch,
    floor,
    gitattempt,
    live,
    load,
    ray,
    resident,
    spawn,
    spawnwait,
    status,
    writeback,
)
from .common import scratch_root

ALL = {
    "load": load.run,
    "dispatch": dispatch.run,
    "writeback": writeback.run,
    "resident": resident.run,
    "ray": ray.run,
    "status": status.run,
    "gitattempt": gitattempt.run,
    "live": live.run,
    "spawn": spawn.run,
    "spawnwait": spawnwait.run,
    "breakdown": breakdown.run,
    "chainpath": chainpath.run,
    "floor": floor.run,
}


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(ALL)}")
    # A daemon works where it is started unless a track says otherwise: in a scratch
    # directory, never in this checkout (a git repository, where every attempt would be a git
    # attempt, with worktrees and branches made in it).
    with tempfile.TemporaryDirectory(prefix="bench-cwd-", dir=scratch_root()) as cwd:
        here = os.getcwd()
        os.chdir(cwd)
        try:
            for name in names or list(ALL):
                ALL[name]()
                print()
        finally:
            os.chdir(here)


main(sys.argv[1:])
