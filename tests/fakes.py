"""In-memory fakes of the daemon's I/O seams, for tests of the code that uses them.

:class:`FixedClock` is a :class:`~orchestrator.clock.Clock` that does not move.
:class:`FakeExecutor` implements :class:`~orchestrator.executors.base.Executor` without
processes: a test scripts, per argv, how a run ends (exit code, output, how long it takes,
an event that releases it). Its runs' output goes to their log files, as a real executor's
does, and it keeps its runs in the same :class:`~orchestrator.executors.runbook.RunBook` as the
real ones. It passes the executor contract (``tests/executor_contract.py``) except the parts
that need real processes.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Self

import anyio
import anyio.lowlevel

from orchestrator.executors.base import Capacity, RunInfo, RunSpec, RunState, unfit
from orchestrator.executors.runbook import RunBook


class FixedClock:
    """A clock stopped at 2026-11-25 08:00 UTC (monotonic 100 s): stored times are known."""

    def now(self) -> datetime:
        return datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return 100.0


CLOSE_MARGIN = 5.0
"""Seconds beyond ``kill_grace`` that leaving the executor waits before using force."""

Output = bytes | Callable[[RunSpec], bytes]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a scripted run behaves."""

    exit_code: int = 0
    output: Output = b""
    """Appended to the run's log when it starts; a callable gets the run's spec."""
    delay: float = 0.0
    """Seconds (real time) the run takes; prefer ``release`` in tests."""
    release: anyio.Event | None = None
    """The run exits (after ``delay``) once this is set; never, if it never is."""
    hang: bool = False
    """The run never ends by itself (only a timeout, cancel or close ends it)."""
    term_delay: float = 0.0
    """Seconds the run takes to end after SIGTERM; at or past the grace it gets SIGKILL."""
    start_error: str | None = None
    """The run fails to start, with this reason."""


@dataclass(eq=False, slots=True)
class _FakeRun:
    spec: RunSpec
    outcome: Outcome
    info: RunInfo
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    stop_state: RunState | None = None
    stop_reason: str | None = None
    grace: float = 0.0

    @property
    def log_path(self) -> str:
        return self.spec.log_path


class FakeExecutor(RunBook[_FakeRun]):
    """An executor that runs nothing: outcomes are scripted per argv.

    Use it like :class:`~orchestrator.executors.local.LocalExecutor`:
    ``async with FakeExecutor() as executor``. An argv with no script and no ``default``
    fails to start ("command not found"); a ``cwd`` that is not a directory on disk fails
    to start too. ``submitted`` and ``cancelled`` record what the code under test did.
    """

    name = "fake"
    _unknown_reason = "no such run in this executor (the daemon that started it may have died)"

    def __init__(
        self,
        kill_grace: float = 5.0,
        *,
        default: Outcome | None = None,
        nodes: tuple[dict[str, float], ...] = ({"CPU": 8.0, "memory": float(16 << 30)},),
    ) -> None:
        super().__init__(kill_grace, CLOSE_MARGIN)
        self._capacity = Capacity(nodes, "the fake cluster")
        self._default = default
        self._scripts: dict[tuple[str, ...], Outcome] = {}
        self._pids = itertools.count(100_000)
        self.submitted: list[RunSpec] = []
        self.cancelled: list[str] = []

    def script(
        self,
        argv: Sequence[str],
        outcome: Outcome | None = None,
        *,
        exit_code: int = 0,
        output: Output = b"",
        release: anyio.Event | None = None,
        hang: bool = False,
    ) -> None:
        """Say how runs of ``argv`` behave: an :class:`Outcome`, or the common fields of one."""
        if outcome is None:
            outcome = Outcome(exit_code=exit_code, output=output, release=release, hang=hang)
        self._scripts[tuple(argv)] = outcome

    # -- lifetime -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def aclose(self) -> None:
        await self._close_starts()
        reason = "ended because the executor closed"
        await self._stop_all(lambda run: self._request_stop(run, reason, self._kill_grace))

    async def _release(self) -> None:
        pass

    # -- the Executor protocol ------------------------------------------------------------

    async def submit(self, spec: RunSpec) -> RunInfo:
        existing = await self._started(spec.run_id)
        if existing is not None:
            return existing.info
        tg = self._open_group(spec.run_id)
        self.submitted.append(spec)
        outcome = self._scripts.get(tuple(spec.argv), self._default)
        run = _FakeRun(spec, outcome or Outcome(), RunInfo(spec.run_id, RunState.PENDING))
        self._runs[spec.run_id] = run
        reason = self._start_problem(spec, outcome)
        if reason is None:  # it starts: its output is in its log at once
            output = run.outcome.output
            reason = _append(spec.log_path, output(spec) if callable(output) else output)
        else:
            _append(spec.log_path, reason.encode() + b"\n")
        if reason is not None:
            run.info = replace(run.info, state=RunState.FAILED_TO_START, reason=reason)
            run.done.set()
            self._remember(spec.run_id)
            return run.info
        pid = next(self._pids)
        run.info = RunInfo(
            spec.run_id, RunState.RUNNING, pid=pid, pgid=pid, started=time.monotonic()
        )
        deadline = math.inf if spec.timeout is None else anyio.current_time() + spec.timeout
        tg.start_soon(self._run, run, deadline)
        return run.info

    async def cancel(self, run_id: str, grace: float) -> RunInfo:
        run = self._runs.get(run_id)
        if run is None:
            return self._unknown(run_id)
        self.cancelled.append(run_id)
        if not run.done.is_set():
            self._request_stop(run, "cancelled", grace)
            await run.done.wait()
        return run.info

    async def attach(self, spec: RunSpec) -> RunInfo:
        await anyio.lowlevel.checkpoint()
        return await self.status(spec.run_id)

    async def capacity(self) -> Capacity:
        await anyio.lowlevel.checkpoint()
        return self._capacity

    # -- internals ------------------------------------------------------------------------

    def _start_problem(self, spec: RunSpec, outcome: Outcome | None) -> str | None:
        if not os.path.isdir(spec.cwd):
            return f"working directory not found: {spec.cwd}"
        if not spec.argv:
            return "no command given (argv is empty)"
        if outcome is None:
            return f"command not found: {spec.argv[0]!r} (no script for {list(spec.argv)!r})"
        if spec.resources:
            problem = unfit(spec.resources, self._capacity)
            if problem is not None:
                return problem
        return outcome.start_error

    def _request_stop(self, run: _FakeRun, reason: str, grace: float) -> None:
        if run.stop_state is None:
            run.stop_state, run.stop_reason, run.grace = RunState.CANCELLED, reason, grace
            if run.scope is not None:
                run.scope.cancel()

    async def _run(self, run: _FakeRun, deadline: float) -> None:
        outcome = run.outcome
        with anyio.CancelScope(deadline=deadline) as scope:
            run.scope = scope
            if run.stop_state is None:
                if outcome.delay:
                    await anyio.sleep(outcome.delay)
                if outcome.release is not None:
                    await outcome.release.wait()
                if outcome.hang:
                    await anyio.sleep_forever()
        run.scope = None
        if run.stop_state is None and not scope.cancelled_caught:
            self._finish(run, RunState.EXITED, outcome.exit_code, None)
            return
        if run.stop_state is None:
            run.stop_state = RunState.TIMED_OUT
            run.stop_reason = f"timed out after {run.spec.timeout:g} s"
            run.grace = self._kill_grace
        code = -signal.SIGTERM.value
        if outcome.term_delay >= run.grace:
            await anyio.sleep(run.grace)
            code = -signal.SIGKILL.value
        elif outcome.term_delay:
            await anyio.sleep(outcome.term_delay)
        self._finish(run, run.stop_state, code, run.stop_reason)

    def _finish(self, run: _FakeRun, state: RunState, code: int, reason: str | None) -> None:
        if state is RunState.EXITED and code < 0:
            reason = f"killed by signal {signal.Signals(-code).name}"
        run.info = replace(
            run.info, state=state, exit_code=code, reason=reason, ended=time.monotonic()
        )
        run.done.set()
        self._remember(run.spec.run_id)


def _append(path: str, data: bytes) -> str | None:
    """Append ``data`` to the log file at ``path``; why not, if it cannot be opened."""
    try:
        with open(path, "ab") as log:
            log.write(data)
    except OSError as error:
        return f"cannot open log file {path!r}: {error.strerror or error}"
    return None
