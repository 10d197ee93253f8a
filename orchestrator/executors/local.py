"""Runs on this machine: child processes in their own session, watched, timed and ended.

:class:`LocalExecutor` owns its runs' processes from spawn to reaping. Each child starts in a
new session (its process group id is its pid) with stdin from ``/dev/null`` or a given file,
and stdout and stderr appended to the run's log file. Spawning uses libc ``posix_spawn``
(:mod:`.spawn`: about half the CPU of Popen) where it can do all of that, else, and for every
command it does not start, :class:`subprocess.Popen`, whose result and errors then count. A
``sh -c`` command the shell would only exec is started without the shell (:mod:`.direct`). Both
use ``vfork``: they do not copy the daemon, so spawning stays fast however large the daemon
grows. Asyncio's and uvloop's subprocess support is not used.

Structure: the executor is an async context manager holding a task group with one watcher
task, the *pump*. On Linux every running child has a pidfd registered in one epoll set; the
pump waits until that set is readable (the set is registered with the asyncio event loop
once, for as long as the executor is open), and when a child exits it signals the
child's group (to end what the command left behind), reaps the child and publishes the final
:class:`RunInfo` through the run's event, which any number of :meth:`wait` calls share. The
pump also keeps the timeouts. Without pidfds (other systems, or ``use_pidfd=False``), each
run has a task waiting in a worker thread in ``waitid(WNOWAIT)`` and reports to the same
code. Ending a run early (timeout, :meth:`cancel`, closing) is a *stop*: a task of its own in
the same task group sends SIGTERM to the group, waits until the whole group is gone or the
grace period is over, sends SIGKILL and reaps. Whenever a group is signalled its leader is
not reaped yet (a zombie at worst), so its pid and process group id cannot have been reused.

Rules for callers:

* ``async with LocalExecutor() as executor:``; runs cannot outlive the block. Leaving it
  (or :meth:`aclose`) ends every running run: SIGTERM to its group, ``kill_grace`` seconds,
  SIGKILL, reaped. Leaving the block shields this from cancellation, bounded by
  ``kill_grace`` plus a few seconds; if the block is left by force anyway, the groups get
  SIGKILL at once.
* A cancelled :meth:`wait` does not touch the run: the caller decides what happens to it,
  typically ``with anyio.CancelScope(shield=True): await executor.cancel(run_id, grace)``.
* :meth:`cancel` starts the stop before it first awaits anything, so the run ends even if
  the caller is cancelled; shield the call to also *wait* for the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import os
import select
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, replace
from typing import Self

import anyio
import anyio.to_thread

from .. import procs
from ..errors import ExecutorError
from . import direct, spawn
from .base import Capacity, RunInfo, RunSpec, RunState
from .runbook import RunBook
from .spawn import Child

SPAWN_THREADS = 2
"""Children spawned at once, each from a worker thread, when Popen spawns them.

posix_spawn spawns on the event loop instead: it blocks the loop while the child execs (about
50 us here) but costs less CPU than a hand-off to a thread. On the dispatch scenario of
``python -m bench dispatch`` (5,000 tasks, parallelism 2, a busy machine), alternating runs:
0.64 ms of daemon CPU per task on the loop against 0.76 ms from two spawner threads
(``LocalExecutor(spawn_threads=2)``), at 770-900 tasks/s either way. ``python -m bench spawn``
alone (no daemon around it) spawns faster from threads, at more CPU per run."""
THREADS = 1024
"""Worker threads for exit waits without pidfds (one per running run) and /proc scans."""
_CLOSE_MARGIN = 5.0
"""Seconds beyond ``kill_grace`` that leaving the executor waits before using force."""
_GROUP_POLL = 0.05
"""Seconds between checks for a group's last members where there are no pidfds."""
_STALE_TIMERS = 1024
"""Timers of finished runs tolerated before the timer heap is rebuilt without them."""
_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _seconds(value: float) -> str:
    return f"{value:g}"


@dataclass(eq=False, slots=True)
class _Run:
    """What the executor knows about one run (mutable: the executor's own bookkeeping)."""

    info: RunInfo
    log_path: str
    done: anyio.Event
    timeout: float | None = None
    proc: _Process | None = None
    """The child, until it is reaped."""
    pidfd: int | None = None
    exited: bool = False
    """The leader has exited (it may not be reaped yet)."""
    exit_event: anyio.Event | None = None
    """Created when a stop starts; set when the leader exits."""
    reaped: bool = False
    timer: bool = False
    """An entry for this run is in the timer heap."""
    stop_state: RunState | None = None
    stop_reason: str | None = None
    kill_at: float = math.inf
    """When the stop under way sends SIGKILL (``anyio.current_time``)."""
    scope: anyio.CancelScope | None = None
    """The stop's grace period, which a later, shorter request shortens."""


_Process = subprocess.Popen[bytes] | Child
"""A child and how to reap it: from :func:`spawn.spawn`, or from Popen where that cannot."""


class LocalExecutor(RunBook[_Run]):
    """Runs commands as child processes of the daemon (see the module docstring)."""

    name = "local"
    _unknown_reason = "no such run in this executor (the daemon that started it may have died)"

    def __init__(
        self,
        kill_grace: float = 5.0,
        *,
        use_pidfd: bool | None = None,
        spawn_threads: int | None = None,
        fast_spawn: bool | None = None,
    ) -> None:
        """``use_pidfd``: ``None`` uses pidfds where the platform has them (Linux).

        ``fast_spawn``: ``None`` spawns with :func:`spawn.spawn` where it works here, else
        with Popen; ``False`` always with Popen.

        ``spawn_threads``: worker threads that spawn children (0: spawn on the event loop);
        ``None``: on the loop with posix_spawn, :data:`SPAWN_THREADS` with Popen.
        """
        super().__init__(kill_grace, _CLOSE_MARGIN)
        has_pidfd = hasattr(os, "pidfd_open") and hasattr(select, "epoll")
        if use_pidfd and not has_pidfd:
            raise ExecutorError("use_pidfd=True, but this platform has no pidfds and epoll")
        self._use_pidfd = has_pidfd if use_pidfd is None else use_pidfd
        if fast_spawn and not spawn.AVAILABLE:
            raise ExecutorError(f"fast_spawn=True, but it cannot be used here: {spawn.UNAVAILABLE}")
        self._fast_spawn = spawn.AVAILABLE if fast_spawn is None else fast_spawn
        if spawn_threads is None:
            spawn_threads = 0 if self._fast_spawn else SPAWN_THREADS
        self._spawn_threads = spawn_threads
        self._spawners: anyio.CapacityLimiter | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._epoll: select.epoll | None = None
        self._by_fd: dict[int, _Run] = {}
        self._timers: list[tuple[float, int, _Run]] = []
        self._stale_timers = 0
        self._seq = itertools.count()
        self._timer_scope: anyio.CancelScope | None = None
        self._devnull = -1

    # -- lifetime -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None or self._closing:
            raise ExecutorError("a LocalExecutor can be entered only once")
        self._limiter = anyio.CapacityLimiter(THREADS)
        if self._spawn_threads > 0:
            self._spawners = anyio.CapacityLimiter(self._spawn_threads)
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if self._use_pidfd:
            self._epoll = select.epoll()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._pump)
        tg.start_soon(self._timekeeper)
        return self

    async def aclose(self) -> None:
        """End every running run (SIGTERM, ``kill_grace``, SIGKILL), reap them; refuse new ones.

        Shield it (``anyio.CancelScope(shield=True)``) when calling it from cleanup code.
        """
        await self._close_starts()
        reason = "ended because the executor closed"
        await self._stop_all(
            lambda run: self._request_stop(run, RunState.CANCELLED, reason, self._kill_grace)
        )

    async def _release(self) -> None:
        os.close(self._devnull)
        self._devnull = -1

    # -- the Executor protocol ------------------------------------------------------------

    async def submit(self, spec: RunSpec) -> RunInfo:
        """Start the run and return as soon as it runs; never raises for a run that fails.

        Raises :class:`~orchestrator.errors.ExecutorError` only when the executor is not
        open (not entered, or closing).
        """
        existing = await self._started(spec.run_id)
        if existing is not None:
            return existing.info
        tg = self._open_group(spec.run_id)
        if self._spawners is None:
            run = self._start(spec)
        else:
            # vfork suspends the spawning thread until the child has exec'd (half a
            # millisecond here): a worker thread waits for that, not the event loop.
            # The call is shielded: once started, the run is always registered below.
            self._starting[spec.run_id] = started = anyio.Event()
            try:
                run = await anyio.to_thread.run_sync(self._start, spec, limiter=self._spawners)
            finally:
                del self._starting[spec.run_id]
                started.set()
        self._runs[spec.run_id] = run
        if run.done.is_set():  # could not start
            self._remember(spec.run_id)
            return run.info
        if run.pidfd is not None and self._epoll is not None:
            try:
                self._epoll.register(run.pidfd, select.EPOLLIN | select.EPOLLONESHOT)
            except OSError:  # out of epoll watches: this run waits in a thread
                os.close(run.pidfd)
                run.pidfd = None
            else:
                self._by_fd[run.pidfd] = run
        if run.pidfd is None:
            tg.start_soon(self._wait_in_thread, run)
        if spec.timeout is not None:
            deadline = anyio.current_time() + spec.timeout
            heapq.heappush(self._timers, (deadline, next(self._seq), run))
            run.timer = True
            timer = self._timer_scope
            if timer is not None and deadline < timer.deadline:
                timer.deadline = deadline
        return run.info

    async def cancel(self, run_id: str, grace: float) -> RunInfo:
        """End the run's group: SIGTERM, up to ``grace`` seconds, SIGKILL; wait until reaped.

        Idempotent; a finished run's info comes back unchanged. The stop starts before the
        first await, so it completes even if this call is cancelled: callers that must see
        the end (cleanup code) shield it with ``anyio.CancelScope(shield=True)``.
        """
        run = self._runs.get(run_id)
        if run is None:
            return self._unknown(run_id)
        if not run.done.is_set():
            self._request_stop(run, RunState.CANCELLED, "cancelled", grace)
            await run.done.wait()
        return run.info

    async def attach(self, spec: RunSpec) -> RunInfo:
        """A run of this executor, or ``LOST``: local runs never outlive their daemon."""
        return await self.status(spec.run_id)

    async def capacity(self) -> Capacity:
        """This machine: its CPUs and memory (runs here reserve nothing; see the docs)."""
        return local_capacity()

    # -- starting -------------------------------------------------------------------------

    def _start(self, spec: RunSpec) -> _Run:
        """Spawn the child (synchronously: vfork + exec); a failure becomes the run's info.

        Nothing is checked before trying (each check is a system call on every run); when
        spawning fails, :func:`_diagnose` says why in words.
        """
        run = _Run(RunInfo(spec.run_id, RunState.PENDING), spec.log_path, anyio.Event())
        try:
            log_fd = os.open(
                spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
            )
        except OSError as error:
            return _failed(run, f"cannot open log file {spec.log_path!r}: {_why(error)}", None)
        stdin_fd = -1
        try:
            if not spec.argv:
                return _failed(run, "no command given (argv is empty)", log_fd)
            if spec.checkout is not None:
                reason = "a git checkout on a node needs a remote executor (executor: ray)"
                return _failed(run, reason, log_fd)
            if spec.stdin_path is None:
                stdin_fd = self._devnull
            else:
                try:
                    stdin_fd = os.open(spec.stdin_path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as error:
                    reason = f"cannot open stdin file {spec.stdin_path!r}: {_why(error)}"
                    return _failed(run, reason, log_fd)
            proc: _Process | None = None
            if self._fast_spawn:
                pid = _spawn_direct(spec, stdin_fd, log_fd)
                if pid is None:
                    pid = spawn.spawn(spec.argv, spec.cwd, spec.env, stdin_fd, log_fd)
                if pid is not None:
                    proc = Child(pid)
            if proc is None:  # not fast here, or failed: Popen decides, and its error is told
                try:
                    proc = subprocess.Popen(
                        spec.argv,
                        cwd=spec.cwd,
                        env=dict(spec.env),
                        stdin=stdin_fd,
                        stdout=log_fd,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        close_fds=True,
                    )
                except (OSError, ValueError) as error:
                    return _failed(run, _diagnose(spec, error), log_fd)
        finally:
            os.close(log_fd)
            if stdin_fd >= 0 and stdin_fd != self._devnull:
                os.close(stdin_fd)
        pid = proc.pid
        run.proc = proc
        run.timeout = spec.timeout
        run.info = RunInfo(
            spec.run_id, RunState.RUNNING, pid=pid, pgid=pid, started=time.monotonic()
        )
        if self._use_pidfd:
            try:
                run.pidfd = os.pidfd_open(pid)
            except OSError:  # e.g. a kernel without pidfds: this run waits in a thread
                run.pidfd = None
        return run

    # -- watching -------------------------------------------------------------------------

    async def _pump(self) -> None:
        """The watcher of exits: all pidfds at once, in one epoll set, for as long as open.

        Without pidfds it only waits, to end what is left by force if it is cancelled.
        """
        try:
            if self._epoll is None:
                await anyio.sleep_forever()
            epoll = self._epoll
            assert epoll is not None
            ready = asyncio.Event()
            loop = asyncio.get_running_loop()
            # Watched for as long as the executor is open: one registration with the event
            # loop, not one per wake-up (anyio.wait_readable adds and removes a reader each
            # time: four epoll_ctl calls per run here).
            loop.add_reader(epoll.fileno(), ready.set)
            try:
                while True:
                    await ready.wait()
                    ready.clear()
                    # One-shot entries: an exited child's entry stays, disabled, until its
                    # pidfd is closed, which removes it.
                    for fd, _events in epoll.poll(0):
                        run = self._by_fd.pop(fd, None)
                        if run is not None:
                            self._on_exit(run)
            finally:
                loop.remove_reader(epoll.fileno())
        finally:
            with anyio.CancelScope(shield=True):
                await self._force_end_all()
            if self._epoll is not None:
                self._epoll.close()

    async def _timekeeper(self) -> None:
        """Starts the stop of each run whose timeout has passed."""
        while True:
            with anyio.CancelScope(deadline=self._next_deadline()) as scope:
                self._timer_scope = scope
                await anyio.sleep_forever()
            self._timer_scope = None
            self._expire_timers()

    async def _wait_in_thread(self, run: _Run) -> None:
        """Without a pidfd: wait for the exit in a worker thread, then report it."""
        assert run.proc is not None
        reaped = await anyio.to_thread.run_sync(
            _block_until_exit, run.proc, abandon_on_cancel=True, limiter=self._limiter
        )
        run.reaped = run.reaped or reaped
        if not run.done.is_set():
            self._on_exit(run)

    def _on_exit(self, run: _Run) -> None:
        """The leader has exited: finish the run, unless a stop under way does that."""
        run.exited = True
        if run.exit_event is not None:
            run.exit_event.set()
        if run.stop_state is not None:
            return
        # Ended by itself: end what it left running in its group, then reap.
        self._signal(run, signal.SIGTERM)
        assert run.proc is not None
        code = run.proc.poll()
        if code is None:  # exited but not reapable yet: should not happen; never block
            assert self._tg is not None
            self._tg.start_soon(self._finish, run, RunState.EXITED, None)
        else:
            self._publish(run, RunState.EXITED, code, None)

    def _next_deadline(self) -> float:
        timers = self._timers
        while timers and not timers[0][2].timer:
            heapq.heappop(timers)
            self._stale_timers -= 1
        return timers[0][0] if timers else math.inf

    def _expire_timers(self) -> None:
        timers = self._timers
        now = anyio.current_time()
        while timers and timers[0][0] <= now:
            run = heapq.heappop(timers)[2]
            if not run.timer:
                self._stale_timers -= 1
                continue
            run.timer = False
            self._request_stop(
                run,
                RunState.TIMED_OUT,
                f"timed out after {_seconds(run.timeout or 0.0)} s",
                self._kill_grace,
            )
        self._drop_stale_timers()

    def _drop_stale_timers(self) -> None:
        """Rebuild the timer heap without the timers of finished runs once they are most of it.

        Each holds its finished run until its deadline (an hour by default) would have come:
        without this, a daemon running short tasks kept every run of the last hour in memory.
        """
        if self._stale_timers > _STALE_TIMERS and self._stale_timers * 2 > len(self._timers):
            self._timers = [entry for entry in self._timers if entry[2].timer]
            heapq.heapify(self._timers)
            self._stale_timers = 0

    def _request_stop(self, run: _Run, state: RunState, reason: str, grace: float) -> None:
        """Start stopping the run, or bring its SIGKILL forward to ``grace`` from now."""
        if run.done.is_set():
            return
        kill_at = anyio.current_time() + max(grace, 0.0)
        if run.stop_state is None:
            run.stop_state, run.stop_reason, run.kill_at = state, reason, kill_at
            run.exit_event = anyio.Event()
            if run.exited:
                run.exit_event.set()
            assert self._tg is not None
            self._tg.start_soon(self._stop, run)
        elif kill_at < run.kill_at:
            run.kill_at = kill_at
            if run.scope is not None:
                run.scope.deadline = kill_at

    async def _exit(self, run: _Run) -> None:
        """Until the leader has exited (it stays unreaped where the platform allows)."""
        assert run.exit_event is not None
        await run.exit_event.wait()

    async def _stop(self, run: _Run) -> None:
        """SIGTERM the group, wait until all of it is gone or ``kill_at``, SIGKILL, reap."""
        self._signal(run, signal.SIGTERM)
        with anyio.CancelScope(deadline=run.kill_at) as scope:
            run.scope = scope
            await self._exit(run)
            await self._group_gone(run)
        run.scope = None
        self._signal(run, signal.SIGKILL)
        await self._exit(run)
        assert run.stop_state is not None
        await self._finish(run, run.stop_state, run.stop_reason)

    async def _group_gone(self, run: _Run) -> None:
        """Until no live process is left in the run's group (the leader has exited)."""
        pgid = run.info.pgid
        assert pgid is not None
        while True:
            members = await anyio.to_thread.run_sync(
                procs.group_members, pgid, abandon_on_cancel=True, limiter=self._limiter
            )
            members = [pid for pid in members if pid != run.info.pid]
            if not members:
                return
            if not self._use_pidfd:
                await anyio.sleep(_GROUP_POLL)
                continue
            for pid in members:
                try:
                    pidfd = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                except OSError:  # e.g. out of file descriptors: look again a little later
                    await anyio.sleep(_GROUP_POLL)
                    continue
                try:
                    await anyio.wait_readable(pidfd)
                finally:
                    os.close(pidfd)

    def _signal(self, run: _Run, sig: int) -> None:
        """Signal the run's group, while its leader is not reaped (so the pgid is still ours)."""
        if not run.reaped and run.info.pgid is not None:
            procs.terminate_group(run.info.pgid, sig)

    async def _finish(self, run: _Run, state: RunState, reason: str | None) -> None:
        """Reap the exited leader and publish the final info."""
        proc = run.proc
        if proc is None:  # published already (an exit and a stop at the same moment)
            return
        code = proc.poll()
        if code is None:
            code = await anyio.to_thread.run_sync(proc.wait, limiter=self._limiter)
        self._publish(run, state, code, reason)

    def _publish(self, run: _Run, state: RunState, code: int | None, reason: str | None) -> None:
        """Record how the run ended, release what it held, and wake its waiters."""
        if run.done.is_set():
            return
        run.reaped = run.reaped or code is not None
        if state is RunState.EXITED and code is not None and code < 0:
            reason = f"killed by signal {_signal_name(-code)}"
        run.info = replace(
            run.info, state=state, exit_code=code, reason=reason, ended=time.monotonic()
        )
        if run.timer:
            run.timer = False
            self._stale_timers += 1
            self._drop_stale_timers()
        if run.pidfd is not None:
            self._by_fd.pop(run.pidfd, None)
            os.close(run.pidfd)  # which also removes it from the epoll set
            run.pidfd = None
        if code is not None:
            run.proc = None
        run.scope = None
        run.done.set()
        self._remember(run.info.run_id)

    async def _force_end_all(self) -> None:
        """SIGKILL every unfinished run's group and reap it, bounded (callers shield this)."""
        unfinished = [run for run in self._runs.values() if not run.done.is_set()]
        for run in unfinished:
            self._signal(run, signal.SIGKILL)
        deadline = anyio.current_time() + self._kill_grace + self._close_margin
        reason = "killed because the executor was shut down"
        for run in unfinished:
            proc = run.proc
            assert proc is not None
            code = proc.poll()
            if code is None:
                with anyio.CancelScope(deadline=deadline):
                    code = await anyio.to_thread.run_sync(
                        proc.wait, abandon_on_cancel=True, limiter=self._limiter
                    )
            if code is None:
                self._publish(run, RunState.LOST, None, f"{reason}; not reaped after SIGKILL")
            else:
                self._publish(run, RunState.CANCELLED, code, reason)


def local_capacity() -> Capacity:
    node: dict[str, float] = {"CPU": float(os.cpu_count() or 1)}
    with contextlib.suppress(ValueError, OSError, AttributeError):
        node["memory"] = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return Capacity((node,), "this machine")


def _why(error: OSError | ValueError) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _failed(run: _Run, reason: str, log_fd: int | None) -> _Run:
    """A run that could not start: the reason goes into its info and its log."""
    if log_fd is not None:
        with contextlib.suppress(OSError):
            os.write(log_fd, reason.encode("utf-8", "replace") + b"\n")
    run.info = replace(run.info, state=RunState.FAILED_TO_START, reason=reason)
    run.done.set()
    return run


def _spawn_direct(spec: RunSpec, stdin_fd: int, out_fd: int) -> int | None:
    """A ``sh -c`` command the shell would only exec, started without the shell (see
    :mod:`.direct`); None if it is not one, or did not start so (the shell then runs it)."""
    argv = direct.exec_argv(spec.argv)
    if argv is None:
        return None
    env = direct.exec_env(spec.env, spec.cwd, argv[0])
    return None if env is None else spawn.spawn(argv, spec.cwd, env, stdin_fd, out_fd)


def _diagnose(spec: RunSpec, error: OSError | ValueError) -> str:
    """Why spawning ``spec`` failed, in words (called after the failure, off the hot path)."""
    if not os.path.isdir(spec.cwd):
        return f"working directory not found: {spec.cwd}"
    command = spec.argv[0]
    if os.sep not in command:
        if spawn.find_program(command, spec.env, spec.cwd) is None:
            path = spec.env.get("PATH", os.defpath)
            return f"command not found: {command!r} (searched PATH={path})"
    else:
        target = os.path.join(spec.cwd, command)
        try:
            info = os.stat(target)
        except OSError:
            return f"command not found: {command!r}"
        if not stat.S_ISREG(info.st_mode) or not os.access(target, os.X_OK):
            return f"not executable: {command!r}"
    return f"cannot start {command!r}: {_why(error)}"


def _block_until_exit(proc: _Process) -> bool:
    """Block until the child exits; ``True`` if that also reaped it (no ``waitid``)."""
    if not _WAITID:
        proc.wait()
        return True
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # reaped already, by a forced end
        return True
    return False
