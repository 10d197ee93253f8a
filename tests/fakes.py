"""In-memory fakes of the daemon's I/O seams, for tests of the code that uses them.

:class:`FakeExecutor` implements :class:`~orchestrator.executors.base.Executor` without
processes: a test scripts, per argv, how a run ends (exit code, output, how long it takes,
an event that releases it). It passes the executor contract (``tests/executor_contract.py``)
except the parts that need real processes.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import anyio.lowlevel

from orchestrator.errors import ExecutorError
from orchestrator.executors.base import Capacity, RunInfo, RunSpec, RunState, unfit

READ_CAP = 1 << 20

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
    log: bytearray = field(default_factory=bytearray)
    scope: anyio.CancelScope | None = None
    stop_state: RunState | None = None
    stop_reason: str | None = None
    grace: float = 0.0


class FakeExecutor:
    """An executor that runs nothing: outcomes are scripted per argv.

    Use it like :class:`~orchestrator.executors.local.LocalExecutor`:
    ``async with FakeExecutor() as executor``. An argv with no script and no ``default``
    fails to start ("command not found"); a ``cwd`` that is not a directory on disk fails
    to start too. ``submitted`` and ``cancelled`` record what the code under test did.
    """

    name = "fake"

    def __init__(
        self,
        kill_grace: float = 5.0,
        *,
        default: Outcome | None = None,
        nodes: tuple[dict[str, float], ...] = ({"CPU": 8.0, "memory": float(16 << 30)},),
    ) -> None:
        self._kill_grace = kill_grace
        self._capacity = Capacity(nodes, "the fake cluster")
        self._default = default
        self._scripts: dict[tuple[str, ...], Outcome] = {}
        self._runs: dict[str, _FakeRun] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            await self.aclose()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        self._closing = True
        running = [run for run in self._runs.values() if not run.done.is_set()]
        for run in running:
            self._request_stop(run, "ended because the executor closed", self._kill_grace)
        for run in running:
            await run.done.wait()

    # -- the Executor protocol ------------------------------------------------------------

    async def submit(self, spec: RunSpec) -> RunInfo:
        existing = self._runs.get(spec.run_id)
        if existing is not None:
            return existing.info
        if self._tg is None or self._closing:
            raise ExecutorError(f"cannot start run {spec.run_id!r}: the executor is not open")
        self.submitted.append(spec)
        outcome = self._scripts.get(tuple(spec.argv), self._default)
        run = _FakeRun(spec, outcome or Outcome(), RunInfo(spec.run_id, RunState.PENDING))
        self._runs[spec.run_id] = run
        reason = self._start_problem(spec, outcome)
        if reason is not None:
            run.log += reason.encode() + b"\n"
            run.info = replace(run.info, state=RunState.FAILED_TO_START, reason=reason)
            run.done.set()
            return run.info
        pid = next(self._pids)
        run.info = RunInfo(
            spec.run_id, RunState.RUNNING, pid=pid, pgid=pid, started=time.monotonic()
        )
        output = run.outcome.output
        run.log += output(spec) if callable(output) else output
        deadline = math.inf if spec.timeout is None else anyio.current_time() + spec.timeout
        self._tg.start_soon(self._run, run, deadline)
        return run.info

    async def wait(self, run_id: str) -> RunInfo:
        run = self._runs.get(run_id)
        if run is None:
            return _unknown(run_id)
        await run.done.wait()
        return run.info

    async def status(self, run_id: str) -> RunInfo:
        run = self._runs.get(run_id)
        return _unknown(run_id) if run is None else run.info

    async def cancel(self, run_id: str, grace: float) -> RunInfo:
        run = self._runs.get(run_id)
        if run is None:
            return _unknown(run_id)
        self.cancelled.append(run_id)
        if not run.done.is_set():
            self._request_stop(run, "cancelled", grace)
            await run.done.wait()
        return run.info

    async def read_log(self, run_id: str, offset: int) -> tuple[bytes, int]:
        run = self._runs.get(run_id)
        if run is None:
            raise ExecutorError(f"cannot read the log of run {run_id!r}: no such run here")
        if offset < 0:
            raise ExecutorError(f"cannot read the log of run {run_id!r} from offset {offset}")
        data = bytes(run.log[offset : offset + READ_CAP])
        await anyio.lowlevel.checkpoint()
        return data, offset + len(data)

    async def active(self) -> list[RunInfo]:
        return [run.info for run in self._runs.values() if not run.done.is_set()]

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

    @staticmethod
    def _finish(run: _FakeRun, state: RunState, code: int, reason: str | None) -> None:
        if state is RunState.EXITED and code < 0:
            reason = f"killed by signal {signal.Signals(-code).name}"
        run.info = replace(
            run.info, state=state, exit_code=code, reason=reason, ended=time.monotonic()
        )
        run.done.set()


def _unknown(run_id: str) -> RunInfo:
    return RunInfo(
        run_id,
        RunState.LOST,
        reason="no such run in this executor (the daemon that started it may have died)",
    )
