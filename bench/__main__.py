"""``python -m bench [NAME ...]``: the benchmarks (all of them by default), figures printed.

Figures and ratios against references measured in the same run; nothing is asserted, because
these machines are shared and noisy.
"""

from __future__ import annotations

import sys

from . import dispatch, live, load, resident, writeback

ALL = {
    "load": load.run,
    "dispatch": dispatch.run,
    "writeback": writeback.run,
    "resident": resident.run,
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
