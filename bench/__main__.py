"""``python -m bench [NAME ...]``: the benchmarks (all of them by default), figures printed.

Figures and ratios against references measured in the same run; nothing is asserted, because
these machines are shared and noisy.
"""

from __future__ import annotations

import sys

from . import dispatch, gitattempt, live, load, ray, resident, status, writeback

ALL = {
    "load": load.run,
    "dispatch": dispatch.run,
    "writeback": writeback.run,
    "resident": resident.run,
    "ray": ray.run,
    "status": status.run,
    "gitattempt": gitattempt.run,
    "live": live.run,
}


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(ALL)}")
    for name in names or list(ALL):
        ALL[name]()
        print()


main(sys.argv[1:])
