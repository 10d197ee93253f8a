"""``python -m bench``: every benchmark, one after the other."""

from __future__ import annotations

from . import load


def main() -> None:
    load.run()


main()
