"""The one way queue files on disk come into force while the daemon runs: the reloader.

The file watcher hands it the paths that changed; ``SIGHUP`` and ``orchestratord reload`` ask it
to look at every file. Either way a path is handled alike:

* a file of a track is synced (``writeback``: read, check, plan, apply, merge, write back);
* a new ``*.json`` file becomes a new track once it is valid with every other track (its worker
  is started first, so that its ready tasks start at once);
* a track whose file is gone (and stays gone for ``quiet`` seconds: editors that rename the
  old file aside while saving bring it back within milliseconds) leaves the schedule: its
  running attempts are cancelled, its state stays in the store, and it resumes if the file
  comes back;
* a file that does not read or validate is reported once it has been quiet, and ignored.

After anything changed, files with problems are read again: a file can be invalid only because
of another one (a ref into a task that did not exist yet).

Passes are serialised and coalesced: one runs at a time, and what arrives meanwhile is handled
by the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from . import memory, queuefile
from . import plan as plans
from .daemon import Engine
from .model import TrackDef
from .problems import ROOT, Problem, json_path
from .queuefile import FileId
from .settle import Later
from .writeback import Writeback

log = structlog.get_logger("orchestratord")

RECHECK_ROUNDS = 8
"""How many times problem files are read again after changes (each round may fix another)."""


class Workers(Protocol):
    """Track workers (the daemon's :class:`~orchestrator.supervisor.Runtime`)."""

    @property
    def workers(self) -> Mapping[str, object]: ...

    async def start_worker(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload pass did, and every problem of the files on disk after it."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    """Tracks whose definition changed."""
    problems: tuple[Problem, ...] = ()

    def data(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
            "problems": [p.render() for p in self.problems],
        }


@dataclass(eq=False, slots=True)
class _Request:
    done: anyio.Event = field(default_factory=anyio.Event)
    result: ReloadResult = field(default_factory=ReloadResult)


class Reloader:
    """Applies what is on disk: per changed path, or every file of the tracks directory."""

    def __init__(
        self, engine: Engine, writeback: Writeback, workers: Workers, directory: Path
    ) -> None:
        self.engine = engine
        self.writeback = writeback
        self.workers = workers
        self.directory = directory.resolve()
        self.settle = writeback.settle
        self._paths: set[Path] = set()
        self._scan = False
        self._requests: list[_Request] = []
        self._later = Later[Path](engine.clock.monotonic)
        """Path -> when to look at it again (waiting to settle, or gone for a moment)."""
        self._missing: dict[Path, float] = {}
        """Track files found gone -> when first seen gone."""
        self._problems: dict[Path, list[Problem]] = {}
        """Problems reported for files that are not tracks."""
        self._seen: dict[str, TrackDef] = {}
        for problem in engine.problems:  # files not loaded at start-up (already reported)
            path = (Path.cwd() / problem.file).resolve()
            self._problems.setdefault(path, []).append(problem)
        self._unloaded = set(self._problems)
        """Files not loaded at start-up, there ever since (not put back: see :meth:`_adopt`)."""
        self._remember()
        memory.settle(keep=True)

    # ------------------------------------------------------------------ asking

    def changed(self, paths: Iterable[Path] | None) -> None:
        """Look at these paths soon (None: every file); returns at once."""
        if paths is None:
            self._scan = True
        else:
            self._paths.update(p.resolve() for p in paths)
        self._later.wake()

    async def reload(self) -> ReloadResult:
        """Re-read every queue file now (``SIGHUP``, ``orchestratord reload``); wait for it.

        Cancelling the caller does not cancel the reload, only the wait for it.
        """
        request = _Request()
        self._requests.append(request)
        self._later.wake()
        await request.done.wait()
        return request.result

    # ------------------------------------------------------------------ the loop

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._paths.update(await self._later.due())
            requests, self._requests = self._requests, []
            paths, self._paths = self._paths, set()
            scan, self._scan = self._scan, False
            if not (requests or paths or scan):
                continue
            result = await self._pass(paths, scan=scan or bool(requests), definitive=bool(requests))
            for request in requests:
                request.result = result
                request.done.set()

    async def _pass(self, paths: set[Path], *, scan: bool, definitive: bool) -> ReloadResult:
        engine = self.engine
        before = {n: t.definition for n, t in engine.tracks.items()}
        if scan:
            paths |= {p.resolve() for p in _discover(self.directory)}
            paths |= {t.path for t in engine.tracks.values()}
            paths |= set(self._problems)
        await self._handle(paths, definitive=definitive)
        if definitive:
            await self._settle()
        for _ in range(RECHECK_ROUNDS):
            if not self._remember():
                break
            # Something changed: files that were invalid may be valid now, and back again.
            retry = set(self._problems) | {t.path for t in engine.tracks.values() if t.problems}
            if not retry:
                break
            await self._handle(retry, definitive=definitive)
        self._publish()
        after = {n: t.definition for n, t in engine.tracks.items()}
        result = ReloadResult(
            added=tuple(n for n in after if n not in before),
            removed=tuple(n for n in before if n not in after),
            changed=tuple(n for n in after if n in before and after[n] is not before[n]),
            problems=tuple(engine.all_problems()),
        )
        if result.added or result.removed or result.changed:
            memory.give_back()  # what the old definitions and the reads held
        return result

    async def _settle(self) -> None:
        """Wait for files that failed to read to settle, and read them again.

        An explicit reload answers with what is true once the files are quiet: at most
        ``quiet`` seconds later (a few rounds, for files that keep changing).
        """
        clock = self.engine.clock
        for _ in range(3):
            tracks = self.writeback.waiting()
            deadlines = [*self._later.pending.values(), *tracks.values()]
            if not deadlines:
                return
            await anyio.sleep(max(max(deadlines) - clock.monotonic(), 0))
            paths = set(self._later.pending)
            paths |= {self.engine.tracks[n].path for n in tracks if n in self.engine.tracks}
            self._later.clear()
            await self._handle(paths, definitive=True)

    def _remember(self) -> bool:
        """Note the definitions in force; say whether they changed since last noted."""
        now = {n: t.definition for n, t in self.engine.tracks.items()}
        same = now.keys() == self._seen.keys() and all(now[n] is self._seen[n] for n in now)
        self._seen = now
        return not same

    async def _handle(self, paths: set[Path], *, definitive: bool) -> None:
        by_path = {t.path: n for n, t in self.engine.tracks.items()}
        present: list[Path] = []
        for path in sorted(paths):
            if path.parent != self.directory and path not in by_path:
                continue
            if path in by_path or queuefile.is_queue_file_name(path.name):
                if path.is_file():
                    present.append(path)
                else:
                    self._gone(path, by_path.get(path), definitive=definitive)
        for path in present:
            self._missing.pop(path, None)
            name = by_path.get(path)
            if name is not None and name in self.engine.tracks:
                await self.writeback.sync(name)
            else:
                await self._adopt(path)

    # ------------------------------------------------------------------ gone files

    def _gone(self, path: Path, name: str | None, *, definitive: bool) -> None:
        self.settle.clear(path)
        if name is None:
            self._unloaded.discard(path)
            if self._problems.pop(path, None) is not None:
                log.info("invalid queue file removed", file=queuefile.display_path(path))
            return
        now = self.engine.clock.monotonic()
        first = self._missing.setdefault(path, now)
        if not definitive and now - first < self.settle.quiet:
            self._later.at(path, first + self.settle.quiet)  # perhaps mid-save: look again
            return
        del self._missing[path]
        self._remove(name, path)

    def _remove(self, name: str, path: Path) -> None:
        """Take a track whose file is gone out of the schedule (its state is kept)."""
        engine = self.engine
        track = engine.tracks[name]
        running = {k.id for k in engine.running_keys() if k.track == name}
        plan = plans.diff(track.definition, None, running=running)
        self.writeback.report_plan(plan)
        # Each running attempt is cancelled on its own; the worker stays, idle, for the track
        # to come back (stopping it would stop what its tasks' endings set in motion).
        engine.remove_track(name, f"its queue file {track.definition.path} was removed")
        self.writeback.forget(name, path)

    # ------------------------------------------------------------------ new files

    async def _adopt(self, path: Path) -> None:
        """A queue file that is not a track yet: make it one if it is valid."""
        engine = self.engine
        version = queuefile.file_id(path)
        if version is None:
            return
        # Through the write-back's task memo: its first sync of the new track reuses these tasks.
        memo = self.writeback.memo(path)
        qf = await anyio.to_thread.run_sync(queuefile.read, path, None, memo)
        definition = qf.track
        if not qf.ok or definition is None:
            self._invalid(path, list(qf.problems), version)
            return
        name = definition.name
        other = engine.tracks.get(name)
        if other is not None and other.path != path:
            where = json_path("track", "name") if definition.settings.name else ROOT
            message = (
                f"duplicate track name {name!r}: {other.definition.path} has the same name; "
                "give one of them another file name or track.name"
            )
            self._invalid(path, [Problem(qf.display, where, message)], version)
            return
        problems, spec = engine.check_track(definition)
        if spec is None:
            self._invalid(path, problems, version)
            return
        self.writeback.report_plan(plans.diff(None, definition))
        # The worker first: the track's ready tasks are launched as soon as it is in force.
        if name not in self.workers.workers:
            await self.workers.start_worker(name)
        problems = engine.reload_track(definition, path)
        if problems:  # something changed while the worker started (it stays, idle)
            self._invalid(path, problems, version)
            return
        self.settle.clear(path)
        self._problems.pop(path, None)
        self._publish()
        engine.journal("track_added", name, file=definition.path)
        if not self._resumes(name, path):
            self.writeback.start_fresh(name)
        await anyio.lowlevel.checkpoint()  # what the new track started begins first
        await self.writeback.sync(name)

    def _resumes(self, name: str, path: Path) -> bool:
        """Whether ``path``, valid now, is the file the daemon last wrote for ``name``, there
        all along but not loaded at start-up (a save that did not read or validate then, the
        daemon stopped or killed meanwhile): its statuses that differ from that write are a
        person's orders, as in any save of the file; not a file put back, whose statuses give
        way to the daemon's record."""
        if path not in self._unloaded:
            return False
        self._unloaded.discard(path)
        written = self.engine.store.written(name)
        return written is not None and Path(written.path) == path

    def _invalid(self, path: Path, problems: list[Problem], version: FileId) -> None:
        wait = self.settle.wait(path, version)
        if wait > 0:
            self._later.after(path, wait)
            return
        display = queuefile.display_path(path)
        reported = self._problems.get(path, ())
        self.engine.report_invalid(None, display, problems, reported, "queue file not loaded")
        self._problems[path] = problems
        self._publish()

    def _publish(self) -> None:
        """``engine.problems``: the problems of files that are not tracks, in file order."""
        self.engine.problems = [p for path in sorted(self._problems) for p in self._problems[path]]


def _discover(directory: Path) -> list[Path]:
    try:
        return queuefile.discover(directory)
    except OSError as exc:
        log.warning("cannot list the tracks directory", directory=str(directory), error=str(exc))
        return []
