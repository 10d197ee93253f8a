"""The engine: tracks, task states, the graph, and dispatch, all on the event loop.

Every state change goes through :meth:`Engine.apply`: it is committed to the store first,
then the graph is updated, newly ready tasks are dispatched in the same turn of the event
loop (no polling anywhere), the track's queue file is marked for write-back, and the change is
announced to listeners. Track workers run the attempts; the write-back keeps the files current.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from . import procs, statusview
from .attempt import trim_log
from .clock import Clock, iso
from .config import Config
from .executors.base import Executor
from .graph import Delta, Graph, TrackSpec
from .model import Status, TaskDef, TaskKey, TrackDef
from .problems import Problem
from .scheduler import Limits, next_task
from .states import Event, TaskState, transition
from .store import EventSpec, Store
from .validate import Report, check

if TYPE_CHECKING:
    from .placement import Placement

log = structlog.get_logger("orchestratord")

LOG_CHECK_SECONDS = 5.0
RECORD_DELAY = 0.25
"""Seconds a process record kept for the next transaction waits for one before it gets its
own (see ``Store.record_process``)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(ident: str) -> str:
    """A task id as a file name: unusual characters (``/``, spaces, ...) %-encoded."""
    name = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), ident)
    return "%2E" + name[1:] if name.startswith(".") else name


Listener = Callable[[str, TaskKey | str | None, Mapping[str, Any]], None]


@dataclass(slots=True)
class Track:
    """A track the daemon runs: its last good definition and where it lives."""

    definition: TrackDef
    path: Path
    problems: list[Problem] = field(default_factory=list)
    """Problems of the file on disk now (the last good definition stays in force)."""
    _workdir: tuple[str | None, Path, Path] | None = None
    """The workdir as last resolved, with the setting and file path it was resolved for."""

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def workdir(self) -> Path:
        """Where the track's commands run: its ``workdir`` (relative to its file), else the
        daemon's working directory. Resolved once per setting, not once per attempt."""
        configured = self.definition.settings.workdir
        cached = self._workdir
        if cached is not None and cached[0] == configured and cached[1] == self.path:
            return cached[2]
        resolved = (self.path.parent / configured).resolve() if configured else Path.cwd()
        self._workdir = (configured, self.path, resolved)
        return resolved

    def missing_workdir(self) -> str | None:
        """Why the track's commands cannot run where they should (the directory is not there),
        naming the setting that says where; None when it is there."""
        where = self.workdir
        if where.is_dir():
            return None
        configured = self.definition.settings.workdir
        said = (
            f"track.workdir {configured!r} in {self.definition.path}, relative to that file"
            if configured
            else "the daemon's working directory; set track.workdir in the queue file"
        )
        return f"working directory not found: {where} ({said})"


class Engine:
    """The daemon's state and its one way of changing it."""

    def __init__(self, cfg: Config, store: Store, executor: Executor, clock: Clock) -> None:
        self.cfg = cfg
        self.store = store
        self.executor = executor
        self.clock = clock
        self.graph = Graph()
        self.tracks: dict[str, Track] = {}
        self.defs: dict[TaskKey, TaskDef] = {}
        self.states: dict[TaskKey, TaskState] = {}
        self.running: dict[str, int] = {}
        self.paused = False
        self.draining = False
        self.listeners: list[Listener] = []
        self.problems: list[Problem] = []
        """Problems of queue files that are not in force as tracks (not loaded, or new)."""
        self.removed: dict[str, Track] = {}
        """Tracks whose file was removed while the daemon ran (their states are kept)."""
        self.stats: dict[str, int] = {"file_writes": 0, "attempts": 0}
        self._launch: Callable[[TaskKey], None] | None = None
        self._dirty: Callable[[str, TaskKey | None], None] = lambda track, key: None
        self._idle = anyio.Event()
        self._changed: anyio.Event | None = None
        self._scopes: dict[TaskKey, anyio.CancelScope] = {}
        self._loops: set[TaskKey] = set()
        """Tasks whose Ralph loop was launched and has not ended."""
        self._queued: set[TaskKey] = set()
        """Tasks dispatched again while their loop was ending (see ``dispatch``)."""
        self._requeues: dict[TaskKey, int] = {}
        """How many times each task was queued so (see :meth:`requeues`)."""
        self._log_dirs: dict[str, str] = {}
        self._prefixes: dict[TaskKey, str] = {}
        self.running_logs: set[str] = set()
        self._logs_added = anyio.Event()
        self._records_kept = anyio.Event()
        self.cancel_reasons: dict[TaskKey, str] = {}
        self.placement: Placement | None = None
        """Where each track's attempts run (set by the daemon; ``None``: ``executor``)."""
        self.boot_seq = store.last_seq()
        """Events journaled by this daemon have a greater sequence number."""
        self._tracks_version = 0
        """Bumped whenever a track is installed, changed or removed (``limits`` caches)."""
        self._limits: tuple[Config, int, Limits] | None = None
        self._warnings: tuple[int, tuple[Problem, ...]] | None = None
        self.waiting: set[str] = set()
        """Waits that end by themselves (an agent's usage limit resetting): work will resume,
        so the daemon is not idle (``--once`` keeps running)."""
        self.base_env = dict(os.environ)
        """The environment attempts inherit: the daemon's own, read once when it starts."""

    # ------------------------------------------------------------------ wiring

    def connect(
        self, launch: Callable[[TaskKey], None], dirty: Callable[[str, TaskKey | None], None]
    ) -> None:
        """Give the engine a way to start a task's Ralph loop and to mark a file dirty."""
        self._launch = launch
        self._dirty = dirty

    def announce(self, kind: str, subject: TaskKey | str | None, **data: Any) -> None:
        for listener in self.listeners:
            listener(kind, subject, data)

    # ------------------------------------------------------------------ tracks

    def install(self, report: Report, tracks: Iterable[Track]) -> None:
        """Install the tracks of a valid report, with the states already reconciled."""
        specs = {spec.name: spec for spec in report.track_specs()}
        self._tracks_version += 1
        for track in tracks:
            self.tracks[track.name] = track
            self.running.setdefault(track.name, 0)
            for task in track.definition.tasks:
                self.defs.setdefault(task.key, task)
            # The state found at start-up is not a change: nothing is announced.
            self.graph.set_track(self._with_states(specs[track.name]))

    def _with_states(self, spec: TrackSpec) -> TrackSpec:
        return spec.with_statuses(lambda key: s.status if (s := self.states.get(key)) else None)

    def import_tasks(self, tasks: Iterable[TaskDef]) -> None:
        """Give tasks the store has never seen a state: the file's, as an imported task."""
        fresh = {t.key: TaskState.imported(t.owned) for t in tasks if t.key not in self.states}
        if fresh:
            self.store.put_tasks(fresh)
            self.states.update(fresh)

    def check_track(self, definition: TrackDef) -> tuple[list[Problem], TrackSpec | None]:
        """Check a new definition of a track with every other track; say why it is refused.

        An edit that introduces an error anywhere (a cycle, a ref that no longer resolves) is
        refused as a whole; errors that were already there (a ref into a removed track) are
        not the edit's. Removed tracks still resolve refs: their dependents wait for them.
        Returns the problems, or the track as the graph will see it.
        """
        name = definition.name
        others = [t.definition for n, t in self.tracks.items() if n != name]
        others += [t.definition for n, t in self.removed.items() if n != name]
        after = check([*others, definition])
        if after.errors:
            current = self.tracks.get(name)
            before = check([*others, current.definition]) if current else check(others)
            known = {p.render() for p in before.errors}
            new_errors = [p for p in after.errors if p.render() not in known]
            if new_errors:
                return [
                    p
                    if p.file == definition.path
                    else Problem(
                        definition.path,
                        "$",
                        f"this edit would break {p.file}: {p.path}: {p.message}",
                    )
                    for p in new_errors
                ], None
        return [], next(s for s in after.track_specs() if s.name == name)

    def reload_track(
        self, definition: TrackDef, path: Path, spec: TrackSpec | None = None
    ) -> list[Problem]:
        """Put a new definition of a track in force, or say why not (nothing changes then).

        ``spec`` is what :meth:`check_track` returned for this definition, if it was called
        (and nothing changed since); otherwise the definition is checked here.
        """
        if spec is None:
            problems, spec = self.check_track(definition)
            if spec is None:
                return problems
        name = definition.name
        current = self.tracks.get(name)
        old_keys = set(self.graph.keys(name)) if current else set()
        new_keys = {t.key for t in definition.tasks}
        self.import_tasks(definition.tasks)
        self._tracks_version += 1
        if current is None:
            self.tracks[name] = Track(definition, path)
            self.running.setdefault(name, 0)
            self.removed.pop(name, None)
        else:
            current.definition = definition
            current.path = path
        for task in definition.tasks:
            self.defs[task.key] = task
        gone = old_keys - new_keys
        for key in gone:
            self._stop(key, "removed from its queue file")
        self._handle(self.graph.set_track(self._with_states(spec)))
        for key in gone:
            self.defs.pop(key, None)
        self.dispatch()
        return []

    def remove_track(self, name: str, reason: str) -> None:
        """Take a track out of the schedule (its file is gone); its states stay in the store.

        Running attempts are cancelled; tasks elsewhere that depend on it wait (its tasks are
        unknown targets now) and the track comes back where it stopped if the file does.
        """
        track = self.tracks.pop(name, None)
        if track is None:
            return
        self._tracks_version += 1
        self.removed[name] = track
        for key in self.graph.keys(name):
            self._stop(key, reason)
        self._handle(self.graph.remove_track(name))
        for task in track.definition.tasks:
            self.defs.pop(task.key, None)
        self.journal("track_removed", name, file=track.definition.path, reason=reason)
        log.info("track removed", track=name, reason=reason)
        self.dispatch()

    def _stop(self, key: TaskKey, reason: str) -> None:
        """Stop a task that leaves the schedule: cancel its attempt, or its launch."""
        state = self.states.get(key)
        if key in self._queued:
            self._unqueue(key)
        if key in self._scopes:
            self.cancel_running(key, reason)
        elif state is not None and state.status is Status.IN_PROGRESS:
            # Dispatched but its Ralph loop has not begun: it finds itself pending and ends.
            self.states[key] = state.with_owned(status=transition(state.status, Event.INTERRUPT))

    def _unqueue(self, key: TaskKey) -> None:
        """A launch queued behind the task's ending loop will not happen: it is pending again
        (nothing of it was recorded) and its slot is free."""
        self._queued.discard(key)
        self.running[key.track] -= 1
        state = self.states.get(key)
        if state is not None and state.status is Status.IN_PROGRESS:
            self.states[key] = state.with_owned(status=transition(state.status, Event.INTERRUPT))
            self._dirty(key.track, key)  # the file said in_progress
        if key in self.graph and self.graph.status(key) is Status.IN_PROGRESS:
            self._handle(self.graph.set_status(key, Status.PENDING))

    def settings_for(self, key: TaskKey) -> tuple[TaskDef, Track]:
        return self.defs[key], self.tracks[key.track]

    def all_problems(self) -> list[Problem]:
        """Every problem of the queue files on disk now (what ``status`` shows), each once:
        the errors of files not in force, then the warnings of the tracks in force."""
        found = [*self.problems, *(p for t in self.tracks.values() for p in t.problems)]
        return list(dict.fromkeys([*found, *self.warnings()]))

    def warnings(self) -> tuple[Problem, ...]:
        """The warnings of the tracks in force, as ``validate`` gives them (an id copied across
        a project, ...): checked again only after a track changed, when first asked."""
        cached = self._warnings
        if cached is None or cached[0] != self._tracks_version:
            defs = [t.definition for t in self.tracks.values()]
            cached = self._warnings = (self._tracks_version, check(defs).warnings)
        return cached[1]

    # ------------------------------------------------------------------ state changes

    def apply(self, key: TaskKey, state: TaskState, *events: EventSpec) -> None:
        """Record a task's new state (committed to the store), then act on it."""
        self.store.put_task(key, state, *events)
        self.after_commit(key, state, events)

    def after_commit(
        self, key: TaskKey, state: TaskState, events: Iterable[EventSpec] = ()
    ) -> None:
        """Act on a state already committed to the store.

        Only a change of status can let a task start (a slot frees in ``finished``), so the
        many commits inside an attempt (its start, its process) dispatch nothing.
        """
        before = self.states.get(key)
        self.states[key] = state
        for kind, subject, data in events:
            self.announce(kind, subject, **data)
        graph = self.graph
        if key in graph and graph.status(key) is not state.status:
            self._handle(graph.set_status(key, state.status))
        self._dirty(key.track, key)
        if before is None or before.status is not state.status:
            self.dispatch()

    def _handle(self, delta: Delta) -> None:
        events: list[EventSpec] = []
        for track in delta.triggers_fired:
            refs = [str(t) for t in self.graph.tracks[track].trigger]
            events.append(("track_started", track, {"trigger": refs}))
            log.info("trigger fired", track=track, start_after=refs)
        for track in delta.tracks_done:
            events.append(("track_complete", track, {}))
            log.info("track complete", track=track)
        if events:
            self.store.add_events(*events)
            for kind, subject, data in events:
                self.announce(kind, subject, **data)

    def order(self, key: TaskKey, event: Event, reason: str, by: str = "order") -> None:
        """A person's order (retry, skip, accept, block) on one task; ``by``: who gives it, in
        the event (``daemon``: the daemon itself blocks a task its own defect stopped)."""
        state = self.states[key]
        # In progress: running, or launched and about to run (its Ralph loop sees the order).
        running = state.status is Status.IN_PROGRESS
        if event is Event.ORDER_RETRY and running:
            # Running already: the order means a fresh budget for the attempts to come.
            new = TaskState(state.owned, budget_base=state.owned.attempts)
            self.apply(key, new, ("task_retry", key, {"reason": reason}))
            return
        status = transition(state.status, event)
        owned: dict[str, Any] = {"status": status}
        budget = state.budget_base
        if event is Event.ORDER_RETRY:
            budget = state.owned.attempts
            owned.update(error=None, completed_at=None)
        elif event is Event.ORDER_ACCEPT:
            owned["completed_at"] = iso(self.clock.now())
        elif event is Event.ORDER_BLOCK:
            owned["error"] = reason
        new = TaskState(state.with_owned(**owned).owned, budget_base=budget)
        if key in self._queued:
            # Waiting for its last loop to end (see ``dispatch``): that launch will not happen
            # (a later retry dispatches it again); the order's state replaces its pending one.
            self._unqueue(key)
        kind = {
            Event.ORDER_RETRY: "task_retry",
            Event.ORDER_SKIP: "task_skipped",
            Event.ORDER_ACCEPT: "task_complete",
            Event.ORDER_BLOCK: "task_blocked",
        }[event]
        self.apply(key, new, (kind, key, {"reason": reason, "by": by}))
        if running:
            self.cancel_running(key, reason)

    def pause_track(self, name: str, reason: str) -> None:
        """Start nothing new in ``name``; its running attempts finish."""
        if name in self.tracks and not self.graph.track_paused(name):
            self.graph.pause_track(name, True)
            self.journal("track_paused", name, reason=reason)
            log.info("track paused", track=name, reason=reason)
            self._dirty(name, None)
            self._check_idle()

    def resume_track(self, name: str) -> None:
        if name in self.tracks and self.graph.track_paused(name):
            self.graph.pause_track(name, False)
            self.journal("track_resumed", name)
            log.info("track resumed", track=name)
            self._dirty(name, None)
            self.dispatch()

    def pause_daemon(self, reason: str) -> None:
        """Start nothing new in any track; running attempts finish. Survives a restart."""
        if not self.paused:
            self.paused = True
            self.journal("daemon_paused", None, reason=reason)
            log.info("daemon paused", reason=reason)
            self._check_idle()

    def resume_daemon(self) -> None:
        if self.paused:
            self.paused = False
            self.journal("daemon_resumed", None)
            log.info("daemon resumed")
            self.dispatch()

    def restore_pause(self) -> None:
        """At start-up: a daemon paused when it last stopped starts paused."""
        last = self.store.last_event(("daemon_paused", "daemon_resumed"))
        if last is not None and last.type == "daemon_paused":
            self.paused = True
            log.warning(
                "the daemon is paused: nothing starts until `orchestratord resume`",
                since=last.at,
                reason=last.data.get("reason"),
            )

    def journal(self, kind: str, subject: TaskKey | str | None, **data: Any) -> None:
        """Record an event that goes with no task state change, and announce it."""
        self.store.add_events((kind, subject, data))
        self.announce(kind, subject, **data)

    def report_invalid(
        self,
        track: str | None,
        file: str,
        problems: Sequence[Problem],
        reported: Sequence[Problem],
        message: str,
    ) -> None:
        """Log and journal the problems of a file that does not read or validate, unless they
        are those ``reported`` already (``track``: None for a file that is not a track)."""
        rendered = [p.render() for p in problems]
        if [p.render() for p in reported] == rendered:
            return
        for line in rendered:
            log.warning(message, problem=line)
        self.journal("queue_file_invalid", track, file=file, problems=rendered)

    def cancel_running(self, key: TaskKey, reason: str) -> None:
        scope = self._scopes.get(key)
        if scope is not None:
            self.cancel_reasons[key] = reason
            scope.cancel()

    # ------------------------------------------------------------------ dispatch

    def limits(self) -> Limits:
        """The limits in force now (rebuilt only when the config or a track changed)."""
        paused = self.paused or self.draining
        tracks = self._tracks_version
        cached = self._limits
        if cached is not None and cached[0] is self.cfg and cached[1] == tracks:
            limits = cached[2]
            return limits if limits.paused == paused else replace(limits, paused=paused)
        limits = Limits(
            max_parallel=self.cfg.settings.max_parallel,
            concurrency={n: t.definition.settings.concurrency for n, t in self.tracks.items()},
            paused=paused,
        )
        self._limits = (self.cfg, tracks, limits)
        return limits

    def dispatch(self) -> None:
        """Start every task that can start now (synchronous: called in the same turn).

        Nothing starts from a task that is being cancelled from outside (the daemon or its
        worker is going down): a task that ends that way would otherwise be started again.
        """
        if self._launch is None:
            return
        limits = self.limits()
        while True:
            key = next_task(self.graph, self.running, limits, self.tracks)
            if key is None or anyio.current_effective_deadline() == -math.inf:
                break
            self.graph.set_status(key, Status.IN_PROGRESS)
            state = self.states[key]
            self.states[key] = state.with_owned(status=transition(state.status, Event.START))
            self.running[key.track] += 1
            if key in self._loops:
                # Its last Ralph loop is still ending (an order cut it short and another made
                # it runnable again, or it left its file and came back): one loop per task,
                # so this one begins when that one has ended.
                self._queued.add(key)
                self._requeues[key] = self._requeues.get(key, 0) + 1
            else:
                self._loops.add(key)
                self._launch(key)
        self._check_idle()

    def resuming(self, key: TaskKey) -> None:
        """A Ralph loop launched at start-up to resume an attempt (not dispatched) runs."""
        self.running[key.track] = self.running.get(key.track, 0) + 1
        self._loops.add(key)

    def loop_queued(self, key: TaskKey) -> bool:
        """The task was dispatched again while its Ralph loop was ending: its state belongs to
        the loop to come, not to the one ending."""
        return key in self._queued

    def requeues(self, key: TaskKey) -> int:
        """How many times the task was dispatched again while a loop of it was ending. A loop
        that sees the count grow from its launch to its end was superseded: the task's fate
        is no longer that loop's to decide (see ``worker._contain``)."""
        return self._requeues.get(key, 0)

    def held_back(self, key: TaskKey) -> str | None:
        """Why a running task must not begin another attempt: a pause (nothing new starts),
        or an edit gave it (or its track) something to wait for that is not done. None when
        nothing holds it back."""
        if self.paused:
            return "the daemon is paused: pending again, at this iteration, until resumed"
        if self.graph.track_paused(key.track):
            return "the track is paused: pending again, at this iteration, until resumed"
        if key in self.graph and self.graph.waits(key):
            return (
                "its dependencies or its track's start_after changed and are not all done: "
                "it waits for them (pending again, at this iteration)"
            )
        return None

    def track_scope(self, key: TaskKey, scope: anyio.CancelScope) -> None:
        self._scopes[key] = scope

    def finished(self, key: TaskKey) -> None:
        """A task's Ralph loop has ended (whatever the reason): free its slot, and begin the
        task's next loop if it was dispatched again meanwhile and may still start."""
        self._scopes.pop(key, None)
        self.cancel_reasons.pop(key, None)
        self.running[key.track] -= 1
        self._loops.discard(key)
        if key in self._queued:
            # Pending again, and dispatched below like any other task if it may start now: a
            # pause, a new dependency or the daemon going down since it was queued holds it.
            self._unqueue(key)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        self.dispatch()

    async def wait_changed(self) -> None:
        """Wait until some running task's Ralph loop ends."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def running_keys(self) -> list[TaskKey]:
        return list(self._scopes)

    def status(self, key: TaskKey) -> Status:
        """A known task's status now: the graph's while it holds the task, else the one
        recorded."""
        return self.graph.status(key) if key in self.graph else self.states[key].status

    # ------------------------------------------------------------------ idleness

    def busy(self) -> bool:
        return any(self.running.values())

    def can_progress(self) -> bool:
        """Something runs, or something could start now."""
        if self.busy():
            return True
        if self.draining:
            return False
        if self.waiting:
            return True
        if self.paused:
            return False
        return self.graph.ready_count() > 0

    def _check_idle(self) -> None:
        if not self.can_progress():
            self._idle.set()
        elif self._idle.is_set():
            self._idle = anyio.Event()

    async def wait_idle(self) -> None:
        """Return once nothing runs and nothing can start."""
        while True:
            self._check_idle()
            await self._idle.wait()
            if not self.can_progress():
                return

    def all_done(self) -> bool:
        return all(self.graph.status(k).done for k in self.graph.keys(None))

    def counts(self, track: str) -> dict[str, int]:
        return statusview.counts(self.graph, track)

    def task_file(self, key: TaskKey, suffix: str) -> str:
        """``logs/TRACK/ID.SUFFIX`` in the state directory.

        One directory per track, created once: creating a directory per task costs half a
        millisecond on some ext4 volumes, a file in an existing one a twentieth of that.
        """
        prefix = self._prefixes.get(key)
        if prefix is None:
            directory = self._log_dirs.get(key.track)
            if directory is None:
                path = self.cfg.state_dir / "logs" / key.track
                path.mkdir(parents=True, exist_ok=True)
                directory = self._log_dirs[key.track] = f"{path}{os.sep}"
            prefix = self._prefixes[key] = f"{directory}{safe_name(key.id)}."
        return prefix + suffix

    def log_path(self, key: TaskKey, number: int) -> str:
        return self.task_file(key, f"attempt-{number}.log")

    def failure_path(self, key: TaskKey) -> str:
        return self.task_file(key, "last-failure.txt")

    def watch_log(self, path: str, running: bool) -> None:
        if running:
            self.running_logs.add(path)
            self._logs_added.set()
        else:
            self.running_logs.discard(path)

    def record_kept(self) -> None:
        """A process record waits for the next transaction: :meth:`record_keeper` bounds
        the wait."""
        self._records_kept.set()

    async def record_keeper(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Commit kept process records within :data:`RECORD_DELAY` when no other transaction
        has (a long verification command while nothing else happens)."""
        task_status.started()
        while True:
            await self._records_kept.wait()
            await anyio.sleep(RECORD_DELAY)
            self._records_kept = anyio.Event()
            self.store.flush()

    async def log_warden(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the logs of running attempts under twice ``log_max_bytes`` (tail kept)."""
        limit = self.cfg.settings.log_max_bytes
        task_status.started()
        while True:
            if not self.running_logs:
                self._logs_added = anyio.Event()
                await self._logs_added.wait()
            await anyio.sleep(LOG_CHECK_SECONDS)
            for path in list(self.running_logs):
                with contextlib.suppress(OSError):
                    if os.stat(path).st_size > 2 * limit:
                        trim_log(path, limit)

    def child_env(
        self, key: TaskKey, number: int, attempt_id: int, extra: Mapping[str, str]
    ) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(extra)
        env.update(
            ORCHESTRATORD_TASK_ID=key.id,
            ORCHESTRATORD_TRACK=key.track,
            ORCHESTRATORD_ATTEMPT=str(number),
            ORCHESTRATORD_FAILURE_FILE=self.failure_path(key),
        )
        # The store records this daemon's pid with the attempt: a successor finds the child.
        env[procs.LAUNCH_VAR] = procs.launch_marker(self.store.store_id, os.getpid(), attempt_id)
        return env
