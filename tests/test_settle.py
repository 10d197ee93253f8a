"""Telling a half-written file from a broken one: report only what stays the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.settle import RECHECK, Settle


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall


def version(mtime: float, size: int = 10, inode: int = 1) -> tuple[int, int, int]:
    return (inode, size, int(mtime * 1e9))


def test_a_failed_read_waits_for_the_same_version_to_stay_quiet() -> None:
    clocks = Clocks()
    settle = Settle(0.5, clocks.monotonic, clocks.time)
    path = Path("t.json")
    fresh = version(clocks.wall)
    assert settle.wait(path, fresh) == 0.5
    clocks.mono += 0.2
    assert settle.wait(path, fresh) == pytest.approx(0.3)
    clocks.mono += 0.3
    assert settle.wait(path, fresh) == 0.0  # the same version for 0.5 s: report it


def test_a_new_version_starts_the_wait_again() -> None:
    clocks = Clocks()
    settle = Settle(0.5, clocks.monotonic, clocks.time)
    path = Path("t.json")
    assert settle.wait(path, version(clocks.wall, size=10)) == 0.5
    clocks.mono += 0.4
    clocks.wall += 0.4
    assert settle.wait(path, version(clocks.wall, size=20)) == 0.5  # still being written
    clocks.mono += 0.5
    assert settle.wait(path, version(clocks.wall, size=20)) == 0.0


def test_an_old_broken_file_is_reported_after_one_more_look_and_clear_forgets() -> None:
    clocks = Clocks()
    settle = Settle(0.5, clocks.monotonic, clocks.time)
    path = Path("t.json")
    assert settle.wait(path, version(clocks.wall - 60)) == pytest.approx(RECHECK)
    clocks.mono += RECHECK
    assert settle.wait(path, version(clocks.wall - 60)) == 0.0
    # Caught between two writes while the daemon was busy: the rest came in the meantime.
    other = Path("u.json")
    assert settle.wait(other, version(clocks.wall - 1)) == pytest.approx(RECHECK)
    assert settle.wait(other, version(clocks.wall, size=20)) == 0.5
    assert settle.wait(Path("gone.json"), None) == 0.5  # a file gone: no age to trust
    settle.clear(path)
    assert settle.wait(path, version(clocks.wall)) == 0.5
