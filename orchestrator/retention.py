"""Retention of the per-attempt files in ``STATE_DIR/logs``: by age and by total size.

Every attempt leaves ``logs/TRACK/ID.attempt-N.log`` (capped at ``log_max_bytes`` each), maybe
``ID.attempt-N.prompt``, and each task a small ``ID.last-failure.txt``. A daemon that runs for
weeks would fill the disk, so :class:`LogRetention`, a daemon service, sweeps the directory at
start-up and then every ``SWEEP_SECONDS``:

- files not modified for ``logs_keep_days`` days are removed (0: no age limit);
- then, while the directory holds more than ``logs_max_total_bytes`` (0: no cap), the oldest
  files are removed first.

The files of running attempts are never removed, whatever their age, nor any file created
after the sweep began. Directories stay: the engine creates each track's directory once.
Both settings are read at every sweep, so a reload (SIGHUP) applies them.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus

if TYPE_CHECKING:
    from .supervisor import Runtime

log = structlog.get_logger("orchestratord")

SWEEP_SECONDS = 600.0
DAY = 86_400.0
MTIME_SLACK = 2.0
"""Seconds of file-system timestamp granularity allowed for "created after the sweep began"."""
_ATTEMPT_LOG = re.compile(r"^(?P<prefix>.*\.)attempt-(?P<n>\d+)\.log$")


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one sweep removed and what the directory holds after it."""

    files: int = 0
    bytes: int = 0
    remaining_bytes: int = 0


def companions(running_logs: Iterable[str]) -> frozenset[str]:
    """The running attempts' logs with their prompt files and their tasks' failure files."""
    out: set[str] = set()
    for path in running_logs:
        out.add(path)
        match = _ATTEMPT_LOG.match(path)
        if match:
            out.add(f"{match['prefix']}attempt-{match['n']}.prompt")
            out.add(f"{match['prefix']}last-failure.txt")
    return frozenset(out)


def prune(
    root: Path,
    *,
    now: float,
    keep_days: float,
    max_total_bytes: int,
    protected: frozenset[str] = frozenset(),
    since: float | None = None,
) -> Pruned:
    """Apply both limits to the files under ``root``; ``now`` and ``since`` are epoch seconds.

    ``protected`` paths and files modified at ``since`` or later are kept whatever the limits.
    """
    files: list[tuple[float, int, str]] = []
    kept_anyway = 0
    for path, stat in _walk(root):
        if path in protected or (since is not None and stat.st_mtime >= since - MTIME_SLACK):
            kept_anyway += stat.st_size
        else:
            files.append((stat.st_mtime, stat.st_size, path))
    removed = removed_bytes = 0
    survivors: list[tuple[float, int, str]] = []
    cutoff = now - keep_days * DAY if keep_days > 0 else None
    for mtime, size, path in files:
        if cutoff is not None and mtime < cutoff and _remove(path):
            removed, removed_bytes = removed + 1, removed_bytes + size
        else:
            survivors.append((mtime, size, path))
    total = kept_anyway + sum(size for _, size, _ in survivors)
    if max_total_bytes > 0 and total > max_total_bytes:
        survivors.sort()
        for _, size, path in survivors:
            if total <= max_total_bytes:
                break
            if _remove(path):
                removed, removed_bytes, total = removed + 1, removed_bytes + size, total - size
    return Pruned(removed, removed_bytes, total)


def _walk(root: Path) -> Iterable[tuple[str, os.stat_result]]:
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        yield entry.path, entry.stat(follow_symlinks=False)


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot remove an old attempt log", path=path, error=exc.strerror)
        return False
    return True


@dataclass(eq=False)
class LogRetention:
    """The daemon service that applies the retention settings (see the module docstring)."""

    interval: float = SWEEP_SECONDS
    sweeps: int = 0
    last: Pruned = field(default_factory=Pruned)
    _swept: anyio.Event = field(default_factory=anyio.Event, repr=False)

    async def __call__(
        self, rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            try:
                await self.sweep(rt)
            except Exception:  # a sweep that fails must not take the daemon down
                log.exception("attempt-log retention: the sweep failed; trying again later")
            await anyio.sleep(self.interval)

    async def sweep(self, rt: Runtime) -> Pruned:
        engine = rt.engine
        settings = engine.cfg.settings
        if settings.logs_keep_days > 0 or settings.logs_max_total_bytes > 0:
            now = engine.clock.now().timestamp()
            protected = companions(engine.running_logs)
            result = await anyio.to_thread.run_sync(
                lambda: prune(
                    engine.cfg.state_dir / "logs",
                    now=now,
                    keep_days=settings.logs_keep_days,
                    max_total_bytes=settings.logs_max_total_bytes,
                    protected=protected,
                    since=now,
                )
            )
            if result.files:
                data = {"files": result.files, "bytes": result.bytes}
                engine.journal("logs_pruned", None, **data)
                log.info("old attempt logs removed", **data, kept_bytes=result.remaining_bytes)
            self.last = result
        self.sweeps += 1
        self._swept.set()
        self._swept = anyio.Event()
        return self.last

    async def wait_sweeps(self, count: int) -> None:
        """Wait until ``count`` sweeps have been made in all."""
        while self.sweeps < count:
            await self._swept.wait()
