"""The run bookkeeping both executors share: their runs by id, and how leaving ends them.

:class:`RunBook` keeps an executor's runs by id, answers ``wait``, ``status``, ``active`` and
``read_log`` from them, forgets all but the last :data:`KEEP_FINISHED` finished runs, and
leaves the executor's task group in order: stop the runs (``aclose``, shielded, bounded by
``kill_grace`` plus a margin), then cancel what is left, then release the executor's own
resource. How a run starts, is watched and is stopped stays with each executor.
"""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar, Generic, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from ..errors import ExecutorError
from .base import RunInfo, RunState

KEEP_FINISHED = 10_000
"""Finished runs an executor still answers about (``status``, ``wait``, ``read_log``)."""
READ_CAP = 1 << 20
"""Most bytes one ``read_log`` call returns."""


class Run(Protocol):
    """What the book needs of an executor's run."""

    @property
    def info(self) -> RunInfo: ...

    @property
    def done(self) -> anyio.Event:
        """Set once ``info`` is final."""
        ...

    @property
    def log_path(self) -> str: ...


R = TypeVar("R", bound=Run)


class RunBook(ABC, Generic[R]):
    """The runs of one executor, which subclasses it and supplies ``aclose`` and ``_release``."""

    _unknown_reason: ClassVar[str]
    """Why a run id the executor does not know is ``LOST``."""

    def __init__(self, kill_grace: float, close_margin: float) -> None:
        self._kill_grace = max(kill_grace, 0.0)
        self._close_margin = close_margin
        """Seconds beyond ``kill_grace`` that leaving waits for ``aclose`` before using force."""
        self._runs: dict[str, R] = {}
        self._starting: dict[str, anyio.Event] = {}
        """Runs being started: set when the start is over and the run is in ``_runs``."""
        self._finished: collections.deque[str] = collections.deque()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False

    # -- lifetime -----------------------------------------------------------------------

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        if tg is None:
            return None
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self._kill_grace + self._close_margin
            await self.aclose()
        # Ends the watchers, and whatever is still running, by force, if the deadline passed.
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        finally:
            await self._release()

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def _release(self) -> None:
        """Release what the executor holds besides its runs, after its task group is done."""

    async def _close_starts(self) -> None:
        """Refuse new runs, and wait until the starts under way are over (none escapes)."""
        self._closing = True
        while self._starting:
            await next(iter(self._starting.values())).wait()

    async def _stop_all(self, stop: Callable[[R], None]) -> None:
        """Start stopping every unfinished run with ``stop``, then wait until each has ended."""
        running = [run for run in self._runs.values() if not run.done.is_set()]
        for run in running:
            stop(run)
        for run in running:
            await run.done.wait()

    # -- starting -------------------------------------------------------------------------

    async def _started(self, run_id: str) -> R | None:
        """The run with this id, after any start of it under way is over; ``None`` if none."""
        starting = self._starting.get(run_id)
        if starting is not None:
            await starting.wait()
        return self._runs.get(run_id)

    def _open_group(self, run_id: str) -> anyio.abc.TaskGroup:
        """The task group a new run goes into; :class:`ExecutorError` when not open."""
        tg = self._tg
        if tg is None or self._closing:
            name = type(self).__name__
            state = "closing" if self._closing else f"not open (use 'async with {name}()')"
            raise ExecutorError(f"cannot start run {run_id!r}: the executor is {state}")
        return tg

    # -- answering --------------------------------------------------------------------------

    async def wait(self, run_id: str) -> RunInfo:
        """Wait for the end of the run. Cancelling this wait leaves the run alone."""
        run = self._runs.get(run_id)
        if run is None:
            return self._unknown(run_id)
        await run.done.wait()
        return run.info

    async def status(self, run_id: str) -> RunInfo:
        run = self._runs.get(run_id)
        return self._unknown(run_id) if run is None else run.info

    async def active(self) -> list[RunInfo]:
        return [run.info for run in self._runs.values() if not run.done.is_set()]

    async def read_log(self, run_id: str, offset: int) -> tuple[bytes, int]:
        """Up to :data:`READ_CAP` bytes of the run's log from ``offset``, and the next offset."""
        run = self._runs.get(run_id)
        if run is None:
            raise ExecutorError(f"cannot read the log of run {run_id!r}: no such run here")
        if offset < 0:
            raise ExecutorError(f"cannot read the log of run {run_id!r} from offset {offset}")
        data = await anyio.to_thread.run_sync(_read_chunk, run.log_path, offset)
        return data, offset + len(data)

    def _unknown(self, run_id: str) -> RunInfo:
        return RunInfo(run_id, RunState.LOST, reason=self._unknown_reason)

    def _remember(self, run_id: str) -> None:
        """Keep the last ``KEEP_FINISHED`` finished runs: a daemon runs for days."""
        self._finished.append(run_id)
        while len(self._finished) > KEEP_FINISHED:
            old = self._finished.popleft()
            done = self._runs.get(old)
            if done is not None and done.done.is_set():
                del self._runs[old]


def _read_chunk(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read(READ_CAP)
    except FileNotFoundError:
        return b""
