"""The file watcher: a daemon service that hands saved queue files to the reloader.

It watches the tracks *directory* (editors replace files when they save, so a watch on a file
would be lost with its inode), and keeps only ``*.json`` files that are not hidden, editor
swap, backup or temporary files (``queuefile.is_queue_file_name``). The several events of one
save (a temp file written, renamed over the original, the backup removed) arrive together: a
batch of changes ends once the directory has been quiet for ``STEP_MS``.

On Linux it reads inotify from the event loop (``inotify.py``): nothing runs while nothing
changes. Elsewhere (macOS) it uses watchfiles, whose thread looks for changes every ``STEP_MS``
(about 0.2-0.5% of a core while idle, measured on Linux by forcing it).

The daemon's own writes are not handed on: a file whose inode, size and modification time are
those of the daemon's last write is its own. Any other change is handed on; the write-back then
compares the file's content with the digest of what it last wrote, so a file touched or saved
unchanged is not an edit either.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus
from watchfiles import awatch

from . import inotify, queuefile
from .live import Reloader
from .writeback import Writeback

if TYPE_CHECKING:
    from .supervisor import Runtime

log = structlog.get_logger("orchestratord")

STEP_MS = 8
"""A batch of changes ends once nothing changed for this long (watchfiles ``step``).

Measured here: a save reaches the daemon 15 ms after it is made with 10 ms, 70 ms with the
default 50 ms; the events of one atomic save come within a millisecond of each other.
"""
DEBOUNCE_MS = 400
"""The longest a batch collects changes while they keep coming (a file streamed for long)."""
_NO_INOTIFY = (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOSYS)
"""inotify refused for want of instances or watches (or not built in): fall back to watchfiles."""
RETRY_SECONDS = 2.0
"""How long to wait before watching again when the directory cannot be watched."""


async def watch_tracks(
    rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """The service: watch ``rt.cfg.tracks_dir`` until the daemon stops."""
    if not rt.cfg.settings.watch or rt.reloader is None:
        log.info("not watching the tracks directory: edits apply on SIGHUP or reload")
        task_status.started()
        return
    watcher = Watcher(rt.reloader, rt.writeback, rt.cfg.tracks_dir)
    await watcher.run(task_status=task_status)


class Watcher:
    def __init__(self, reloader: Reloader, writeback: Writeback, directory: Path) -> None:
        self.reloader = reloader
        self.writeback = writeback
        self.directory = directory.resolve()

    @staticmethod
    def wanted(name: str) -> bool:
        """Only the directory's own queue files (not swap, backup or temporary files)."""
        return queuefile.is_queue_file_name(name)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(self._watch, stop)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                # The watch thread looks at this every STEP_MS: the service ends at once, not
                # after watchfiles' own timeout.
                stop.set()

    async def _watch(
        self, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        while True:
            try:
                try:
                    batches = self._batches(stop)
                finally:
                    if not started:  # the daemon starts even if the first watch fails
                        started = True
                        task_status.started()
                # Look at every file once the watch is in place (it is, by the time the
                # reloader runs: the watch is set up before the first batch is awaited):
                # nothing saved between start-up and now is missed.
                self.reloader.changed(None)
                async for paths in batches:
                    await self._forward(paths)
            except (OSError, RuntimeError) as exc:
                log.warning(
                    "cannot watch the tracks directory; trying again",
                    directory=str(self.directory),
                    error=str(exc),
                    retry_in=RETRY_SECONDS,
                )
                await anyio.sleep(RETRY_SECONDS)
            else:
                return

    def _batches(self, stop: anyio.Event) -> AsyncIterator[list[Path]]:
        """The changed queue files, a batch per save (inotify where there is, else watchfiles).

        Raises :class:`OSError` when the directory cannot be watched (now, or any more).
        """
        if inotify.available():
            try:
                return self._inotify(inotify.DirWatch(self.directory))
            except OSError as exc:
                if exc.errno not in _NO_INOTIFY:
                    raise
                log.warning(
                    "inotify is not available; watching with watchfiles instead",
                    error=str(exc),
                    hint="raise fs.inotify.max_user_instances / max_user_watches",
                )
        return self._watchfiles(stop)

    async def _inotify(self, watch: inotify.DirWatch) -> AsyncIterator[list[Path]]:
        """Batches from the kernel's queue: a batch ends when nothing more came for ``STEP_MS``
        (or after ``DEBOUNCE_MS`` of changes that keep coming)."""
        with watch:
            while True:
                await anyio.wait_readable(watch.fileno())
                first = anyio.current_time()
                names: set[str] = set()
                rescan = False
                while True:
                    events = watch.read()
                    if events.gone:
                        raise OSError(f"{self.directory} was removed or moved")
                    if not events.names and not events.overflow:
                        break  # quiet for STEP_MS: the batch is complete
                    names |= events.names
                    rescan |= events.overflow
                    if anyio.current_time() - first > DEBOUNCE_MS / 1000:
                        break
                    await anyio.sleep(STEP_MS / 1000)
                if rescan:
                    self.reloader.changed(None)
                wanted = [self.directory / n for n in sorted(names) if self.wanted(n)]
                if wanted:
                    yield wanted

    async def _watchfiles(self, stop: anyio.Event) -> AsyncIterator[list[Path]]:
        changes = awatch(
            self.directory,
            watch_filter=lambda change, path: self.wanted(path.rsplit("/", 1)[-1]),
            step=STEP_MS,
            debounce=DEBOUNCE_MS,
            recursive=False,
            stop_event=stop,
        )
        async for batch in changes:
            yield [Path(path) for _, path in batch]

    async def _forward(self, paths: Iterable[Path]) -> None:
        """Hand on every changed path that is not the daemon's own write."""
        engine = self.writeback.engine
        by_path = {t.path: name for name, t in engine.tracks.items()}
        todo: set[Path] = set()
        for path in paths:
            name = by_path.get(path.resolve())
            if name is not None and self.writeback.is_own(name, path):
                continue
            todo.add(path)
        if todo:
            engine.stats["files_changed"] = engine.stats.get("files_changed", 0) + len(todo)
            self.reloader.changed(todo)
