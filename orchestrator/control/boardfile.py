"""The board file: with ``board_path`` set, the daemon keeps a Markdown kanban there.

Every event marks the board stale; rewrites are coalesced (at most one per
:data:`MIN_DELAY` seconds, or ``writeback_delay`` when longer), atomic (a complete file is
renamed over the old one), and skipped when nothing but the clock changed. The last one, as the
daemon stops, says that no daemon runs.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus

from .. import queuefile
from ..store import EventRow
from . import board
from .views import EngineView, board_document

log = structlog.get_logger("orchestratord")

MIN_DELAY = 0.5


class BoardFile:
    def __init__(self, view: EngineView, path: Path, delay: float) -> None:
        self.view = view
        self.path = path
        self.delay = max(MIN_DELAY, delay)
        self.seq = 0
        self._wake = anyio.Event()
        self._last = ""
        self._warned = False
        self.writes = 0

    def mark(self, row: EventRow) -> None:
        """The event hub's consumer: the board is stale."""
        self.seq = max(self.seq, row.seq)
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.write()
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                await anyio.sleep(self.delay)
                self._wake = anyio.Event()
                await self.write()
        finally:
            with anyio.CancelScope(shield=True):
                await self.write(stopped=True)

    async def write(self, *, stopped: bool = False) -> None:
        """``stopped``: the last write, as the daemon stops: the file outlives the daemon and
        must not say that it runs."""
        doc = board_document(self.view, seq=self.seq)
        if stopped:
            doc["daemon"] = {"running": False, "source": "daemon", "paused": self.view.paused}
        text = board.render(doc)
        if board.body(text) == self._last and not stopped:
            return
        try:
            await anyio.to_thread.run_sync(queuefile.write_atomic, self.path, text)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write the board file", path=str(self.path), error=str(exc))
                self._warned = True
            return
        self._warned = False
        self._last = board.body(text)
        self.writes += 1
