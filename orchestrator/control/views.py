"""What the commands and the API show, computed one way for a running daemon and for none.

A :class:`View` is the picture of every track: the graph, the task definitions, each task's
runtime state and its attempts. :class:`EngineView` reads a running daemon's engine;
:class:`OfflineView` reads the queue files together with the state database a stopped daemon
left (its truth about attempts). The documents built here (status, one task, explain, board)
are the same whichever view they come from, so a daemon and the files never tell two stories.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .. import __version__, explain, merge, statusview, workspace
from ..clock import Clock, SystemClock, iso
from ..config import Config
from ..daemon import Engine
from ..errors import RefError
from ..graph import Graph
from ..model import STATUS_ORDER, Status, TaskDef, TaskKey, TrackDef
from ..problems import Problem
from ..refs import RefIndex, key_of
from ..states import TaskState
from ..store import AttemptRow, HoldRow, Spend, Store

MAX_ERRORS_SHOWN = 5
"""``explain`` lists at most this many errors of the task's queue file."""


class View(Protocol):
    """The picture of every track that documents are built from."""

    @property
    def graph(self) -> Graph: ...

    @property
    def defs(self) -> Mapping[TaskKey, TaskDef]: ...

    def state(self, key: TaskKey) -> TaskState | None: ...

    def max_iterations(self, key: TaskKey) -> int | None: ...

    def attempts(self, key: TaskKey) -> list[AttemptRow]: ...

    def running(self) -> Collection[TaskKey]: ...

    def files(self) -> Mapping[str, str]: ...

    def problems(self) -> tuple[Problem, ...]: ...

    def track_file(self, name: str) -> str | None:
        """The track's queue file as its problems name it."""
        ...

    def daemon(self) -> dict[str, Any]: ...

    def ref_index(self) -> RefIndex: ...

    def usage(self) -> tuple[Mapping[str, Spend], Sequence[HoldRow]]:
        """What agents reported using, per track, and the usage-limit waits."""
        ...

    def unloaded_files(self) -> tuple[str, ...]:
        """Queue files with errors the daemon does not load and whose tasks this view does
        not hold (a file that does not parse): a ref found nowhere may be in one of them."""
        ...

    def unloaded_tracks(self) -> frozenset[str]:
        """Tracks this view holds whose file has errors: the daemon does not load them, so
        none of their tasks starts (a stopped daemon's files; a running daemon has none)."""
        ...

    def unfinished(self, key: TaskKey) -> AttemptRow | None:
        """An attempt of ``key`` a stopped daemon never ended (killed, or left running on a
        cluster): the next start takes it over. A running daemon has none to report."""
        ...

    @property
    def paused(self) -> bool: ...


def budget_of(task: TaskDef, track: TrackDef, default: int) -> int:
    """The iteration budget: the task's, else its track's, else the configured default."""
    return task.max_iterations or track.settings.max_iterations or default


# ---------------------------------------------------------------------- a running daemon


@dataclass(slots=True)
class DaemonMeta:
    """What the daemon says about itself."""

    started_at: str
    pid: int = field(default_factory=os.getpid)
    http: str | None = None


class EngineView:
    """A running daemon, read on its event loop."""

    def __init__(self, engine: Engine, meta: DaemonMeta) -> None:
        self.engine = engine
        self.meta = meta
        self._index: tuple[tuple[TrackDef, ...], RefIndex] | None = None

    @property
    def graph(self) -> Graph:
        return self.engine.graph

    @property
    def defs(self) -> Mapping[TaskKey, TaskDef]:
        return self.engine.defs

    @property
    def paused(self) -> bool:
        return self.engine.paused

    def state(self, key: TaskKey) -> TaskState | None:
        return self.engine.states.get(key)

    def max_iterations(self, key: TaskKey) -> int | None:
        task = self.engine.defs.get(key)
        track = self.engine.tracks.get(key.track)
        if task is None or track is None:
            return None
        default = self.engine.cfg.settings.defaults.max_iterations
        return budget_of(task, track.definition, default)

    def attempts(self, key: TaskKey) -> list[AttemptRow]:
        return self.engine.store.attempts(key)

    def usage(self) -> tuple[Mapping[str, Spend], Sequence[HoldRow]]:
        return self.engine.store.spend_by_track(), self.engine.store.holds()

    def running(self) -> Collection[TaskKey]:
        return self.engine.running_keys()

    def files(self) -> Mapping[str, str]:
        return {name: str(track.path) for name, track in self.engine.tracks.items()}

    def problems(self) -> tuple[Problem, ...]:
        return tuple(self.engine.all_problems())

    def track_file(self, name: str) -> str | None:
        track = self.engine.tracks.get(name)
        return None if track is None else track.definition.path

    def unloaded_files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.file for p in self.engine.problems if p.is_error))

    def unloaded_tracks(self) -> frozenset[str]:
        return frozenset()

    def unfinished(self, key: TaskKey) -> AttemptRow | None:
        return None

    def daemon(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "running": True,
            "source": "daemon",
            "pid": self.meta.pid,
            "version": __version__,
            "started_at": self.meta.started_at,
            "paused": engine.paused,
            "stopping": engine.draining,
            "max_parallel": engine.cfg.settings.max_parallel,
            "running_attempts": sum(engine.running.values()),
            "http": self.meta.http,
        }

    def ref_index(self) -> RefIndex:
        """Refs are resolved against the definitions in force (rebuilt when one changes)."""
        definitions = tuple(t.definition for t in self.engine.tracks.values())
        cached = self._index
        if (
            cached is None
            or len(cached[0]) != len(definitions)
            or any(a is not b for a, b in zip(cached[0], definitions, strict=True))
        ):
            self._index = cached = (definitions, RefIndex(definitions))
        return cached[1]


# ---------------------------------------------------------------------- no daemon


class OfflineView:
    """The queue files, with the state database of a stopped daemon when there is one.

    The database is the truth about runtime state; a task it shows in progress was cut short
    when that daemon stopped, and is pending (as the next start will record it).
    """

    def __init__(self, ws: workspace.Workspace, store: Store | None, cfg: Config) -> None:
        self.ws = ws
        self.store = store
        self.cfg = cfg
        self._defs = ws.tasks()
        self._tracks = {t.name: t for t in ws.tracks}
        self._states: dict[TaskKey, TaskState] = {}
        stored = store.load_tasks() if store is not None else {}
        ordered = _orders(ws, store) if store is not None else {}
        for key, task in self._defs.items():
            found = stored.get(key)
            state = found if found is not None else TaskState.imported(task.owned)
            if key in ordered:  # the next start obeys it before anything else
                state = state.with_owned(status=ordered[key])
            if state.status is Status.IN_PROGRESS:
                state = state.with_owned(status=Status.PENDING)
            self._states[key] = state
        self._paused = False
        self._unfinished: dict[TaskKey, AttemptRow] = {}
        """Attempts the store shows running: the stopped daemon never ended them (killed, or
        left running on a cluster); the next start takes them over."""
        if store is not None:
            last = store.last_event(("daemon_paused", "daemon_resumed"))
            self._paused = last is not None and last.type == "daemon_paused"
            self._unfinished = {row.key: row for row in store.running_attempts()}
        with workspace.bulk():
            self._graph = Graph(
                spec.with_statuses(lambda k: s.status if (s := self._states.get(k)) else None)
                for spec in ws.report.track_specs()
            )

    @classmethod
    def load(cls, cfg: Config, clock: Clock | None = None) -> OfflineView:
        ws = workspace.load([cfg.tracks_dir])
        store = None
        if (cfg.state_dir / "state.db").is_file():
            store = Store(cfg.state_dir / "state.db", clock or SystemClock())
        return cls(ws, store, cfg)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def defs(self) -> Mapping[TaskKey, TaskDef]:
        return self._defs

    @property
    def paused(self) -> bool:
        return self._paused

    def state(self, key: TaskKey) -> TaskState | None:
        return self._states.get(key)

    def max_iterations(self, key: TaskKey) -> int | None:
        task = self._defs.get(key)
        track = self._tracks.get(key.track)
        if task is None or track is None:
            return None
        return budget_of(task, track, self.cfg.settings.defaults.max_iterations)

    def attempts(self, key: TaskKey) -> list[AttemptRow]:
        return self.store.attempts(key) if self.store is not None else []

    def usage(self) -> tuple[Mapping[str, Spend], Sequence[HoldRow]]:
        if self.store is None:
            return {}, []
        return self.store.spend_by_track(), self.store.holds()

    def running(self) -> Collection[TaskKey]:
        return ()

    def files(self) -> Mapping[str, str]:
        paths = {qf.display: qf.path for qf in self.ws.files}
        return {
            t.name: str(paths[t.path].resolve()) if t.path in paths else t.path
            for t in self.ws.tracks
        }

    def problems(self) -> tuple[Problem, ...]:
        return self.ws.problems

    def track_file(self, name: str) -> str | None:
        track = self._tracks.get(name)
        return None if track is None else track.path

    def unloaded_files(self) -> tuple[str, ...]:
        held = {t.path for t in self.ws.tracks}
        return tuple(sorted(f for f in self.ws.report.invalid_files() if f not in held))

    def unloaded_tracks(self) -> frozenset[str]:
        invalid = self.ws.report.invalid_files()
        return frozenset(t.name for t in self.ws.tracks if t.path in invalid)

    def daemon(self) -> dict[str, Any]:
        if self.store is None:
            return {"running": False, "source": "files", "paused": False}
        return {
            "running": False,
            "source": "state",
            "paused": self._paused,
            "unfinished": [str(key) for key in self._unfinished],
        }

    def unfinished(self, key: TaskKey) -> AttemptRow | None:
        return self._unfinished.get(key)

    def ref_index(self) -> RefIndex:
        return self.ws.ref_index()


def _orders(ws: workspace.Workspace, store: Store) -> dict[TaskKey, Status]:
    """Statuses a person wrote into the files since the daemon last wrote them: orders the
    next start carries out first (a task set back to ``pending`` runs again), so they are what
    the stopped daemon's tasks are now, not what its database says."""
    out: dict[TaskKey, Status] = {}
    for qf in ws.files:
        track = qf.track
        written = store.written(track.name) if track is not None else None
        if track is None or qf.doc is None or written is None:
            continue
        for ident, change in merge.track_changes(track, qf.doc, written.base).items():
            if change.ordered_status is not None:
                out.setdefault(TaskKey(track.name, ident), change.ordered_status)
    return out


# ---------------------------------------------------------------------- documents


def resolve(view: View, ref: str) -> TaskKey:
    """The one task ``ref`` names; :class:`~orchestrator.errors.RefError` says why not."""
    text = ref.strip()
    track, sep, ident = text.partition(":")
    if sep and TaskKey(track, ident) in view.defs:
        return TaskKey(track, ident)
    try:
        return key_of(text, view.ref_index())
    except RefError as exc:
        unloaded = view.unloaded_files()
        if not unloaded or not str(exc).startswith("unknown "):
            raise
        raise RefError(
            f"{exc}; {', '.join(unloaded)} could not be loaded and may have it "
            "(`orchestratord validate` says why)"
        ) from None


def attempt_row(view: View, key: TaskKey, number: int | None) -> AttemptRow:
    """Attempt ``number`` of ``key`` (None: its last); :class:`~orchestrator.errors.RefError`
    says why there is none."""
    rows = view.attempts(key)
    if not rows:
        raise RefError(f"{key} has no attempt yet")
    wanted = rows[-1].number if number is None else number
    row = next((r for r in reversed(rows) if r.number == wanted), None)
    if row is None:
        # an interrupted attempt runs again under its own number: each number once
        shown = ", ".join(str(n) for n in sorted({r.number for r in rows}))
        raise RefError(f"{key} has no attempt {wanted} (attempts: {shown})")
    return row


def _owned(view: View, key: TaskKey) -> Any:
    state = view.state(key)
    if state is not None:
        return state.owned
    task = view.defs.get(key)
    return task.owned if task is not None else None


def status_document(
    view: View, *, track: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The ``status --json`` document (every track, or one)."""
    spend, waits = view.usage()
    return statusview.snapshot(
        view.graph,
        view.defs,
        view.files(),
        view.problems(),
        owned=lambda k: _owned(view, k),
        daemon=view.daemon(),
        state=view.state,
        budget=view.max_iterations,
        now=now or SystemClock().now(),
        only=track,
        spend=spend,
        waits=waits,
        unloaded=view.unloaded_tracks(),
    )


def explain_lines(view: View, key: TaskKey) -> list[str]:
    lines = explain.describe(view.graph, key, lambda k: _owned(view, k), daemon_paused=view.paused)
    file = view.track_file(key.track)
    errors = [p for p in view.problems() if p.is_error and p.file == file]
    if key.track in view.unloaded_tracks() and view.graph.is_ready(key):
        # Ready by its dependencies, yet its file is not loaded: it is not "ready" at all.
        lines = [f"{key} has every dependency done, but it does not start:"]
    if errors:
        if view.daemon()["running"]:
            effect = "its last save was refused; the daemon runs the version before it"
        else:
            effect = "the daemon does not load it, so none of its tasks runs"
        lines.append(f"{file} has {len(errors)} error(s): {effect} until it is fixed:")
        lines.extend(f"    {p.path}: {p.message}" for p in errors[:MAX_ERRORS_SHOWN])
        if len(errors) > MAX_ERRORS_SHOWN:
            lines.append(
                f"    ... and {len(errors) - MAX_ERRORS_SHOWN} more (`orchestratord validate`)"
            )
    cut = view.unfinished(key)
    if cut is not None:
        lines.append(
            f"Its attempt {cut.number} was running when the daemon stopped and never finished:"
            " the next start ends what it left running (or takes its cluster run over) and"
            " runs it again."
        )
    return lines


def _attempt(row: AttemptRow) -> dict[str, Any]:
    return {
        "number": row.number,
        "iteration": row.iteration,
        "state": row.state,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "verdict": row.verdict,
        "reason": row.reason,
        "exit_code": row.exit_code,
        "log_path": row.log_path,
        "cost": _cost(row),
        "agent": row.details.agent,
        "commit": row.details.commit_id,
        "files_changed": (
            None if row.details.files_changed is None else list(row.details.files_changed)
        ),
        "saved_ref": row.details.saved_ref,
    }


def _cost(row: AttemptRow) -> dict[str, Any] | None:
    """What the attempt's agent reported using, or None when it reported nothing."""
    d = row.details
    if d.cost_usd is None and d.tokens_in is None and d.tokens_out is None:
        return None
    return {"usd": d.cost_usd, "input_tokens": d.tokens_in, "output_tokens": d.tokens_out}


def task_detail(view: View, key: TaskKey) -> dict[str, Any]:
    """One task: its definition in brief, its state, every attempt, and why it waits."""
    task = view.defs[key]
    state = view.state(key) or TaskState.imported(task.owned)
    owned = state.owned
    status = view.graph.status(key) if key in view.graph else owned.status
    return {
        "ref": str(key),
        "track": key.track,
        "id": key.id,
        "status": status.value,
        "summary": task.summary_line or None,
        "description": task.description,
        "priority": task.priority,
        "dependencies": [str(d) for d in task.deps],
        "file": task.file,
        "attempts": owned.attempts,
        "iteration": state.iteration,
        "max_iterations": view.max_iterations(key),
        "running": key in view.running(),
        "last_attempt": owned.last_attempt,
        "completed_at": owned.completed_at,
        "passes": owned.passes,
        "error": owned.error,
        "verification_verdict": owned.verification_verdict,
        "history": [_attempt(a) for a in view.attempts(key)],
        "explain": explain_lines(view, key),
    }


def _trigger(graph: Graph, name: str) -> dict[str, Any] | None:
    spec = graph.tracks[name]
    if not spec.trigger:
        return None
    return {
        "refs": [str(t) for t in spec.trigger],
        "holds": graph.trigger_holds(name),
        "waiting_on": [str(t) for t in spec.trigger if not graph.target_done(t)],
    }


def board_document(view: View, *, seq: int = 0, now: datetime | None = None) -> dict[str, Any]:
    """Every task as a card, every track as a lane: the kanban board's data."""
    graph = view.graph
    unloaded = view.unloaded_tracks()
    held = Counter(key.track for key in graph.held())
    tracks: list[dict[str, Any]] = []
    cards: list[dict[str, Any]] = []
    for name in graph.tracks:
        keys = list(graph.keys(name))
        tracks.append(
            {
                "name": name,
                "loaded": name not in unloaded,
                "held": held[name],
                "paused": graph.track_paused(name),
                "counts": statusview.counts(graph, name),
                "trigger": _trigger(graph, name),
            }
        )
        for key in keys:
            cards.append(card(view, key))
    return {
        "generated_at": iso(now or SystemClock().now()),
        "seq": seq,
        "daemon": view.daemon(),
        "columns": [s.value for s in STATUS_ORDER],
        "tracks": tracks,
        "cards": cards,
    }


def card(view: View, key: TaskKey) -> dict[str, Any]:
    task = view.defs.get(key)
    owned = _owned(view, key)
    state = view.state(key)
    return {
        "ref": str(key),
        "track": key.track,
        "id": key.id,
        "status": view.graph.status(key).value,
        "summary": task.summary_line[:160] if task is not None else None,
        "priority": task.priority if task is not None else None,
        "attempts": owned.attempts if owned is not None else 0,
        "iteration": state.iteration if state is not None else 0,
        "max_iterations": view.max_iterations(key),
        "verdict": owned.verification_verdict if owned is not None else None,
        "error": owned.error if owned is not None else None,
    }


def problem_info(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "path": problem.path,
        "message": problem.message,
        "severity": problem.severity,
    }
