"""Telling a file that is still being written from a file that is broken.

Editors save atomically, but many tools write a file in place, in pieces (``>`` redirections,
streaming writers, "truncate then write"): read at the wrong moment, such a file is half
written and does not parse. A read that fails is therefore not a verdict on the file: only a
version of the file that stays the same for ``quiet`` seconds, and still fails when read again,
is reported. A version is told apart by its inode, size and modification time
(:func:`orchestrator.queuefile.file_id`); a file whose modification time is already ``quiet``
seconds old counts as settled after one more look, ``RECHECK`` later (an old broken file found
by a reload). That look is for a file caught between two writes while the daemon itself was
too busy to read it sooner: its writer gets the moment it needs to finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .queuefile import FileId

RECHECK = 0.05
"""Seconds before the second look at a failing file that has not changed for ``quiet``."""


@dataclass(slots=True)
class Settle:
    """Per file: the version that failed to read and when it was first seen failing."""

    quiet: float
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _seen: dict[Path, tuple[FileId | None, float]] = field(default_factory=dict)

    def wait(self, path: Path, version: FileId | None) -> float:
        """A read of ``version`` of ``path`` failed: seconds to wait before reporting it.

        0 means report now: the same version has failed for ``quiet`` seconds, or for
        ``RECHECK`` seconds when it had not been modified for ``quiet`` when first seen.
        """
        now = self.monotonic()
        seen = self._seen.get(path)
        if seen is None or seen[0] != version:
            if version is not None and self.wall() - version[2] / 1e9 >= self.quiet:
                recheck = min(RECHECK, self.quiet)
                self._seen[path] = (version, now - self.quiet + recheck)
                return recheck
            self._seen[path] = (version, now)
            return self.quiet
        return max(seen[1] + self.quiet - now, 0.0)

    def clear(self, path: Path) -> None:
        """The file read well (or is gone): forget its failures."""
        self._seen.pop(path, None)
