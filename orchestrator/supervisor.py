"""The daemon's life: start-up, the root task group, signals, and a bounded shutdown.

``serve`` locks the state directory, recovers from an unclean stop, loads every queue file,
merges edits made while the daemon was stopped, starts one worker per track and the write-back
in one task group, and runs until stopped (or, with ``once``, until nothing more can run).

SIGTERM or SIGINT stops gracefully: nothing new starts, running attempts get
``shutdown_grace`` seconds to finish, then their process groups get SIGTERM and, after
``kill_grace``, SIGKILL; their attempts are recorded as interrupted and every file is written.
A second SIGINT skips the wait. SIGHUP reloads the config (``reconfigure``) and re-reads every
queue file (``live.Reloader``, the same path the file watcher uses).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from . import agentrun, procs, queuefile, strays, workspace
from .clock import Clock, SystemClock
from .config import Config
from .daemon import Engine, Track
from .errors import AlreadyRunningError, StateError
from .executors.base import Executor
from .executors.local import LocalExecutor
from .live import Reloader, ReloadResult
from .lock import StateLock
from .model import Status, TaskKey
from .placement import Placement, Resume, reattach
from .progress import Progress
from .reconfigure import ConfigReloader
from .recovery import STOPPING, recover
from .retention import LogRetention
from .sdnotify import NotifyService
from .states import TaskState
from .store import Store
from .worker import TrackWorker
from .writeback import Writeback

log = structlog.get_logger("orchestratord")

EXIT_OK = 0
EXIT_UNFINISHED = 1


@dataclass(slots=True)
class Control:
    """How the outside asks the daemon to stop (signals, the control API, tests).

    ``reload`` is set by :func:`serve` before any service starts. A service may wrap it: keep
    the callable it finds and call it from its own (the config reloader and the service
    manager's notifier do, so that every reload reloads the config and is reported).
    """

    stop: anyio.Event = field(default_factory=anyio.Event)
    force: anyio.Event = field(default_factory=anyio.Event)
    reload: Callable[[], Awaitable[ReloadResult]] | None = None
    """Re-read every queue file and wait until that is done (set once the daemon runs).

    Awaiting it runs one reload pass (``live.Reloader.reload``); cancelling the caller
    cancels only the wait. Wrap it to act around reloads (``control.reload = wrapped``).
    """

    def request_stop(self, force: bool = False) -> None:
        self.stop.set()
        if force:
            self.force.set()


async def _signals(control: Control) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as reloads:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading every queue file")
                    if control.reload is not None:
                        reloads.start_soon(_reload, control.reload)
                elif control.stop.is_set() and signum == signal.SIGINT:
                    log.warning("second SIGINT: stopping now")
                    control.request_stop(force=True)
                else:
                    log.info("stopping", signal=signal.Signals(signum).name)
                    control.request_stop()


async def _reload(reload: Callable[[], Awaitable[ReloadResult]]) -> None:
    await reload()


class _EarlyHangup:
    """SIGHUP during start-up (recovery can wait ``kill_grace`` for a dead daemon's leftovers;
    loading thousands of tasks takes seconds), before :func:`_signals` handles it: its default
    action would end the daemon there and then, with nothing said (``launchctl kill HUP``, or
    a script's ``kill -HUP`` right after a start). It is noted instead, and the reload done
    once the daemon runs. Only from the main thread (where signal handlers are set)."""

    def __init__(self) -> None:
        self.seen = False
        self._installed = False
        self._before: Callable[[int, FrameType | None], Any] | int | None = None

    def install(self) -> None:
        self._before = signal.signal(signal.SIGHUP, self._note)
        self._installed = True

    def remove(self) -> None:
        """Put back the handler found before. The event loop, when it stops handling SIGHUP,
        leaves the default, which would end a program that runs the daemon and goes on."""
        if self._installed:
            # None: set outside Python; the default is the closest there is to put back.
            before = signal.SIG_DFL if self._before is None else self._before
            signal.signal(signal.SIGHUP, before)
            self._installed = False

    def _note(self, signum: int, frame: object) -> None:
        self.seen = True


def _load_tracks(
    engine: Engine, cfg: Config, writeback: Writeback, states: Mapping[TaskKey, TaskState]
) -> None:
    """Load the queue files and install their tracks over ``states`` (the store's, as
    recovery left them)."""
    ws = workspace.load([cfg.tracks_dir], memos=writeback.memo)
    invalid = ws.report.invalid_files()
    paths = {qf.display: qf.path for qf in ws.files}
    tracks = [
        Track(t, paths[t.path].resolve())
        for t in ws.report.tracks
        if t.path not in invalid and t.path in paths
    ]
    engine.problems.extend(p for p in ws.report.problems if p.is_error)
    for file in sorted(invalid):
        problems = [p for p in ws.problems if p.file == file]
        engine.report_invalid(None, file, problems, (), "queue file not loaded")
    engine.states.update(states)
    for track in tracks:
        engine.import_tasks(track.definition.tasks)
    engine.install(ws.report, tracks)


def _remove_leftover_temps(engine: Engine) -> None:
    """Remove the temporary files a killed daemon's unfinished writes left next to the queue
    files (the files themselves are whole: the write renames the temporary into place)."""
    for track in engine.tracks.values():
        for temp in queuefile.remove_leftover_temps(track.path):
            log.info(
                "removed an unfinished write of a queue file left by a daemon that was killed",
                file=queuefile.display_path(temp),
            )


@dataclass(slots=True)
class Runtime:
    """What a service of the daemon gets: the engine, the write-back, and the workers."""

    cfg: Config
    engine: Engine
    writeback: Writeback
    control: Control
    tg: TaskGroup
    workers: dict[str, TrackWorker] = field(default_factory=dict)
    reloader: Reloader | None = None
    """Puts what is on disk in force (the file watcher hands it saved files)."""

    async def start_worker(self, name: str) -> None:
        """Start the worker of a track (at start-up, or when a track is added)."""
        worker = TrackWorker(self.engine, name)
        self.workers[name] = worker
        await self.tg.start(worker.run)

    def launch(self, key: TaskKey) -> None:
        self.workers[key.track].launch(key)

    def resume(self, key: TaskKey, resume: Resume) -> None:
        """Continue an attempt the last daemon left running on a cluster."""
        self.workers[key.track].launch(key, resume)


class Service(Protocol):
    """A part of the daemon started with it (control API, file watcher, service manager).

    It calls ``task_status.started()`` once it is ready; the daemon reports itself ready
    (and ``start`` returns to the caller of ``on_ready``) only after every service has.
    """

    async def __call__(
        self, rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None: ...


async def serve(
    cfg: Config,
    executor: Executor,
    *,
    once: bool = False,
    clock: Clock | None = None,
    control: Control | None = None,
    on_ready: Callable[[Engine], None] | None = None,
    handle_signals: bool = True,
    services: Sequence[Service] = (),
) -> int:
    """Run the daemon until stopped; return the exit status."""
    clock = clock or SystemClock()
    control = control or Control()
    hangup = _EarlyHangup()
    if handle_signals:
        hangup.install()
    lock = StateLock(cfg.state_dir)
    lock.acquire()
    store = Store.open(cfg.state_dir, clock)
    try:
        store.shrink_log()
        recovered = await anyio.to_thread.run_sync(recover, store, cfg.settings.kill_grace)
        engine = Engine(cfg, store, executor, clock)
        writeback = Writeback(engine, cfg.settings.writeback_delay, cfg.settings.watch_quiet)
        _load_tracks(engine, cfg, writeback, recovered.states)
        _remove_leftover_temps(engine)
        engine.restore_pause()
        async with anyio.create_task_group() as tg:
            engine.placement = Placement(cfg, executor, store, tg)
            rt = Runtime(cfg, engine, writeback, control, tg)
            tg.start_soon(_starts_nothing_on_exit, engine)
            for name in engine.tracks:
                await rt.start_worker(name)
            await tg.start(writeback.run)
            await tg.start(engine.log_warden)
            await tg.start(engine.record_keeper)
            for name in list(engine.tracks):
                await writeback.sync(name)
            rt.reloader = Reloader(engine, writeback, rt, cfg.tracks_dir)
            await tg.start(rt.reloader.run)
            engine.connect(rt.launch, writeback.mark)
            control.reload = rt.reloader.reload
            if handle_signals:
                tg.start_soon(_signals, control)
            for service in services:
                await tg.start(functools.partial(service, rt))
            engine.journal("daemon_started", None, pid=os.getpid(), tracks=list(engine.tracks))
            log.info(
                "daemon started",
                pid=os.getpid(),
                tracks=len(engine.tracks),
                tasks=len(engine.graph),
            )
            await reattach(engine, engine.placement, rt.resume)
            if hangup.seen and control.reload is not None:
                log.info("SIGHUP during start-up: reloading every queue file now")
                tg.start_soon(_reload, control.reload)
            engine.dispatch()
            if on_ready is not None:
                on_ready(engine)
            async with anyio.create_task_group() as wait:

                async def until_idle() -> None:
                    await engine.wait_idle()
                    wait.cancel_scope.cancel()

                async def until_stop() -> None:
                    await control.stop.wait()
                    wait.cancel_scope.cancel()

                if once:
                    wait.start_soon(until_idle)
                wait.start_soon(until_stop)
            # Why it stops, for the journal and notifications: asked to, or (--once) idle.
            why = "asked to stop" if control.stop.is_set() else "nothing more can run"
            await _shutdown(engine, writeback, control, cfg, why)
            tg.cancel_scope.cancel()
        # A file not loaded ran none of its tasks: they are not complete either.
        finished = engine.all_done() and not engine.problems
        code = (EXIT_OK if finished else EXIT_UNFINISHED) if once else EXIT_OK
        _log_stopped(engine, code)
        return code
    finally:
        hangup.remove()
        store.close()
        lock.release()


def _log_stopped(engine: Engine, code: int) -> None:
    """The daemon's last line: its exit status and the tasks by status, for whoever reads a
    service's or a script's log afterwards (a terminal gets the summary table as well)."""
    tally = dict.fromkeys(("total", *(s.value for s in Status)), 0)
    for name in engine.tracks:
        for status, count in engine.graph.status_counts(name).items():
            tally[status.value] += count
            tally["total"] += count
    # Files not loaded: their tasks are in no count above, and none of them ran.
    unloaded = list(dict.fromkeys(p.file for p in engine.problems))
    extra = {"files_not_loaded": unloaded} if unloaded else {}
    log.info("daemon stopped", exit_status=code, **tally, **extra)


async def _starts_nothing_on_exit(engine: Engine) -> None:
    """However the daemon ends, even cancelled from outside (a service failing), nothing new
    starts while it unwinds: a Ralph loop cut short would otherwise be relaunched at once."""
    try:
        await anyio.sleep_forever()
    finally:
        engine.draining = True


async def _shutdown(
    engine: Engine, writeback: Writeback, control: Control, cfg: Config, reason: str
) -> None:
    engine.draining = True
    running = [str(k) for k in engine.running_keys()]
    engine.journal("daemon_stopping", None, running=running, reason=reason)
    log.info("daemon stopping", running=len(running), reason=reason)
    placement = engine.placement
    if placement is not None and placement.detach():
        for key in placement.remote_keys(engine):  # their runs go on; the next daemon attaches
            engine.cancel_running(key, "the daemon stopped; the runs go on on the cluster")
    with anyio.CancelScope(shield=True):
        if engine.busy() and not control.force.is_set():
            with anyio.move_on_after(cfg.settings.shutdown_grace):
                async with anyio.create_task_group() as tg:

                    async def forced() -> None:
                        await control.force.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(forced)
                    await _until_not_busy(engine)
                    tg.cancel_scope.cancel()
        for key in engine.running_keys():
            engine.cancel_running(key, STOPPING)
        await _until_not_busy(engine)
        await _end_strays(engine, cfg)
        await writeback.flush()


async def _end_strays(engine: Engine, cfg: Config) -> None:
    """End what still carries a launch marker of this daemon once every attempt has ended
    (Linux): strays that closed their output, which no attempt saw (:mod:`strays`)."""
    if not procs.ENVIRON_READABLE:
        return
    keep = engine.store.remote_attempts()  # their runs go on, on the cluster
    match = strays.of_daemon(engine.store.store_id, os.getpid(), keep)
    ended = await anyio.to_thread.run_sync(strays.end, match, cfg.settings.kill_grace)
    if ended:
        log.warning("ended what finished attempts left running", pids=ended)


async def _until_not_busy(engine: Engine) -> None:
    while engine.busy():
        await engine.wait_changed()


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run(cfg: Config, *, once: bool = False, progress: bool | None = None) -> int:
    """Run the daemon in this process (it never forks away) and return its exit status."""

    from .control.service import control_service  # noqa: PLC0415  (it imports this module)
    from .watcher import watch_tracks  # noqa: PLC0415 (the watcher is a service of this module)

    async def main() -> int:
        view = Progress() if progress is not False else None
        if view is not None and progress is None and not view.live_mode:
            view = None
        # The control socket first; the notifier last: READY=1 once every service is ready.
        services: list[Service] = [
            control_service,
            watch_tracks,
            ConfigReloader(),
            LogRetention(),
            agentrun.service,
        ]
        services.append(NotifyService.from_environ())
        async with LocalExecutor(cfg.settings.kill_grace) as executor:
            try:
                return await serve(
                    cfg,
                    executor,
                    once=once,
                    on_ready=view.attach if view else None,
                    services=services,
                )
            finally:
                if view is not None:
                    view.summary()

    try:
        try:
            return anyio.run(
                main, backend="asyncio", backend_options={"use_uvloop": uvloop_available()}
            )
        except BaseExceptionGroup as group:
            raise unwrap(group) from None
    except StateError as error:
        if not isinstance(error, AlreadyRunningError):  # that one never started
            log.error("daemon stopped", exit_status=error.exit_code, error=str(error))  # noqa: TRY400 - the message is the report; a traceback would bury it
        raise


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside nested task-group wrappers, so it can be reported plainly."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    # Several leaves that are all StateError: every runner that tried to record found the
    # state unwritable, one cause, said once.
    if len(leaves) == 1 or all(isinstance(exc, StateError) for exc in leaves):
        return leaves[0]
    return group
