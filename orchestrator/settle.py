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

:class:`Later` is the waiting itself: what is to be looked at again and when, and the wake-up
of the loop that looks (the reloader's per path, the write-back's per track).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import anyio

from .queuefile import FileId

K = TypeVar("K", bound=Hashable)

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


class Later(Generic[K]):
    """What a loop is to look at again, each at a time of ``monotonic``, and its wake-up.

    The loop awaits :meth:`due`; anyone may :meth:`wake` it early (new work), and setting a
    time wakes it to wait for the new earliest one.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self._at: dict[K, float] = {}
        self._wake = anyio.Event()

    @property
    def pending(self) -> Mapping[K, float]:
        """Key -> when it is due (read-only view)."""
        return self._at

    def at(self, key: K, when: float) -> None:
        """Look at ``key`` again at ``when``."""
        self._at[key] = when
        self._wake.set()

    def after(self, key: K, seconds: float) -> None:
        """Look at ``key`` again ``seconds`` from now."""
        self.at(key, self.monotonic() + seconds)

    def cancel(self, key: K) -> None:
        self._at.pop(key, None)

    def clear(self) -> None:
        self._at.clear()

    def wake(self) -> None:
        """Something else is to be done: end the current :meth:`due` wait now."""
        self._wake.set()

    async def due(self) -> list[K]:
        """Wait for a wake-up or the earliest time; the keys due then (no longer pending)."""
        wait = min(self._at.values(), default=math.inf) - self.monotonic()
        with anyio.move_on_after(max(wait, 0)):
            await self._wake.wait()
        self._wake = anyio.Event()
        now = self.monotonic()
        due = [key for key, at in self._at.items() if at <= now]
        for key in due:
            del self._at[key]
        return due
