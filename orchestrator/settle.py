"""Telling a file that is still being written from a file that is broken.

Editors save atomically, but many tools write a file in place, in pieces (``>`` redirections,
streaming writers, "truncate then write"): read at the wrong moment, such a file is half
written and does not parse. A read that fails is therefore not a verdict on the file: only a
version of the file that stays the same for ``quiet`` seconds, and still fails when read again,
is reported. A version is told apart by its inode, size and modification time
(:func:`orchestrator.queuefile.file_id`); a file whose modification time is already ``quiet``
seconds old counts as settled at once (an old broken file found by a reload).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .queuefile import FileId


@dataclass(slots=True)
class Settle:
    """Per file: the version that failed to read and when it was first seen failing."""

    quiet: float
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _seen: dict[Path, tuple[FileId | None, float]] = field(default_factory=dict)

    def wait(self, path: Path, version: FileId | None) -> float:
        """A read of ``version`` of ``path`` failed: seconds to wait before reporting it.

        0 means report now: the same version has failed for ``quiet`` seconds, or the file
        has not been modified for that long.
        """
        now = self.monotonic()
        seen = self._seen.get(path)
        if seen is None or seen[0] != version:
            self._seen[path] = (version, now)
            if version is not None and self.wall() - version[2] / 1e9 >= self.quiet:
                return 0.0
            return self.quiet
        return max(seen[1] + self.quiet - now, 0.0)

    def clear(self, path: Path) -> None:
        """The file read well (or is gone): forget its failures."""
        self._seen.pop(path, None)
