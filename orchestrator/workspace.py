"""The set of queue files a command works on: read, checked together, and their graph.

Offline commands (``validate``, ``graph``, ``explain``, ``status`` without a daemon) and the
daemon's start-up all begin here.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .graph import Graph
from .model import TaskDef, TaskKey, TrackDef
from .problems import Problem
from .queuefile import QueueFile, expand, read_all
from .refs import RefIndex
from .schema import TaskMemo
from .validate import Report, check


@dataclass(frozen=True, slots=True)
class Workspace:
    files: tuple[QueueFile, ...]
    report: Report

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.report.problems

    @property
    def tracks(self) -> tuple[TrackDef, ...]:
        return self.report.tracks

    def track(self, name: str) -> TrackDef | None:
        return next((t for t in self.report.tracks if t.name == name), None)

    def tasks(self) -> dict[TaskKey, TaskDef]:
        out: dict[TaskKey, TaskDef] = {}
        for track in self.report.tracks:
            for task in track.tasks:
                out.setdefault(task.key, task)
        return out

    def ref_index(self) -> RefIndex:
        return RefIndex(self.report.tracks)

    def graph(self) -> Graph:
        """The graph of every track that loaded, with statuses as written in the files."""
        with bulk():
            return Graph(self.report.track_specs())


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the garbage collector while building many long-lived objects.

    Loading 20,000 tasks makes ~100,000 objects, and collections triggered along the way
    rescan them again and again: measured here, 40% of the load time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(
    paths: Sequence[Path],
    base: Path | None = None,
    memos: Callable[[Path], TaskMemo] | None = None,
) -> Workspace:
    """Read the queue files at ``paths`` (files or directories) and check them together.

    ``memos``: the task memo of each file, for a reader that reads the files again later.
    """
    with bulk():
        return _load(paths, base, memos)


def _load(
    paths: Sequence[Path], base: Path | None, memos: Callable[[Path], TaskMemo] | None
) -> Workspace:
    files = read_all(expand(paths), base, memos)
    if not files and paths:
        shown = ", ".join(str(p) for p in paths)
        raise UsageError(f"no queue files (*.json) found in {shown}")
    problems = [p for f in files for p in f.problems]
    tracks = [f.track for f in files if f.track is not None]
    return Workspace(tuple(files), check(tracks, problems))
