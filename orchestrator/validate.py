"""Checks across all queue files together, and the resolved graph they describe.

Per-file problems come from ``schema``; this module adds what needs every file at once:
duplicate track names and ids, refs that name no task (with the closest id suggested) or more
than one, dependency cycles spelled out across tracks, and the warning for an id copied into
two tracks of one project. A bad file never stops the others from being checked.

Pure: takes loaded tracks, returns problems and resolved dependencies.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .errors import RefError
from .graph import NodeSpec, TrackSpec, find_cycles
from .model import Target, TaskDef, TaskKey, TrackAll, TrackDef
from .problems import ROOT, Problem, has_errors, json_path
from .refs import RefIndex


class StartAfter(NamedTuple):
    """The trigger of a track, as a node of the cycle check."""

    track: str

    def __str__(self) -> str:
        return f"[start_after of {self.track}]"


_Node = TaskKey | TrackAll | StartAfter


@dataclass(frozen=True, slots=True)
class Report:
    """The result of checking a set of queue files."""

    tracks: tuple[TrackDef, ...]
    problems: tuple[Problem, ...]
    deps: Mapping[TaskKey, tuple[Target, ...]] = field(default_factory=dict)
    """Resolved dependencies of every task (unresolvable ones left out)."""
    triggers: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    """Resolved ``start_after`` targets of every track."""

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.is_error)

    def invalid_files(self) -> set[str]:
        return {p.file for p in self.problems if p.is_error}

    def track_specs(self) -> list[TrackSpec]:
        """The graph's view of every track (first of any duplicate name)."""
        specs: dict[str, TrackSpec] = {}
        for track in self.tracks:
            if track.name in specs:
                continue
            specs[track.name] = TrackSpec(
                name=track.name,
                tasks=tuple(
                    NodeSpec(
                        key=task.key,
                        order=(task.priority, task.index),
                        deps=self.deps.get(task.key, ()),
                        status=task.status,
                        paused=task.paused,
                    )
                    for task in _unique_tasks(track)
                ),
                trigger=self.triggers.get(track.name, ()),
                paused=track.settings.paused,
            )
        return list(specs.values())


def _unique_tasks(track: TrackDef) -> Iterator[TaskDef]:
    """The track's tasks, first of any duplicate id only."""
    seen: set[str] = set()
    for task in track.tasks:
        if task.key.id not in seen:
            seen.add(task.key.id)
            yield task


def check(tracks: Sequence[TrackDef], file_problems: Iterable[Problem] = ()) -> Report:
    """Check ``tracks`` together; ``file_problems`` are those found while loading them."""
    problems = list(file_problems)
    read = {track.path for track in tracks}
    unread = sorted({p.file for p in problems if p.is_error and p.file not in read})
    primary = _track_names(tracks, problems)
    _duplicate_ids(primary, problems)
    index = RefIndex(primary.values())
    deps, triggers, ref_paths = _resolve(primary, index, problems, _unread_note(unread))
    _cycles(primary, deps, triggers, ref_paths, problems)
    _project_copies(primary, problems)
    return Report(tuple(tracks), tuple(problems), deps, triggers)


def _track_names(tracks: Sequence[TrackDef], problems: list[Problem]) -> dict[str, TrackDef]:
    by_name: dict[str, list[TrackDef]] = defaultdict(list)
    for track in tracks:
        by_name[track.name].append(track)
    primary: dict[str, TrackDef] = {}
    for name, group in by_name.items():
        primary[name] = group[0]
        if len(group) > 1:
            for track in group:
                others = ", ".join(t.path for t in group if t is not track)
                where = json_path("track", "name") if track.settings.name else ROOT
                problems.append(
                    Problem(
                        track.path,
                        where,
                        f"duplicate track name {name!r}: {others} has the same name; "
                        "give one of them another file name or track.name",
                    )
                )
    return primary


def _duplicate_ids(tracks: Mapping[str, TrackDef], problems: list[Problem]) -> None:
    for track in tracks.values():
        first: dict[str, int] = {}
        for task in track.tasks:
            ident = task.key.id
            if ident in first:
                problems.append(
                    Problem(
                        track.path,
                        json_path(track.list_key, task.index, "id"),
                        f"duplicate id {ident!r} in track {track.name!r} (first at "
                        f"{track.task_path(first[ident])}); ids must be unique within a track",
                    )
                )
            else:
                first[ident] = task.index


_RefPaths = dict[tuple[_Node, _Node], tuple[str, str]]
"""For a graph edge: the file and JSON location of the ref that made it."""


def _unread_note(files: Sequence[str]) -> str:
    """Said of a ref to an unknown task while some files could not be read at all: the task
    may well be in one of them, and the fix is there, not in the ref."""
    if not files:
        return ""
    that = "that file" if len(files) == 1 else "those files"
    return f"{', '.join(files)} could not be read and may have it: fix {that} first"


def _resolve(
    tracks: Mapping[str, TrackDef], index: RefIndex, problems: list[Problem], unread: str = ""
) -> tuple[dict[TaskKey, tuple[Target, ...]], dict[str, tuple[Target, ...]], _RefPaths]:
    deps: dict[TaskKey, tuple[Target, ...]] = {}
    triggers: dict[str, tuple[Target, ...]] = {}
    paths: _RefPaths = {}
    for track in tracks.values():
        resolved_trigger: list[Target] = []
        for j, ref in enumerate(track.settings.start_after):
            where = json_path("track", "start_after", j)
            try:
                target = index.resolve(ref, track.name)
            except RefError as exc:
                problems.append(Problem(track.path, where, _ref_message(exc, unread)))
                continue
            resolved_trigger.append(target)
            paths.setdefault((StartAfter(track.name), target), (track.path, where))
        triggers[track.name] = tuple(resolved_trigger)
        for task in _unique_tasks(track):
            resolved: list[Target] = []
            for j, ref in enumerate(task.deps):
                where = json_path(track.list_key, task.index, task.deps_field, j)
                try:
                    target = index.resolve(ref, track.name)
                except RefError as exc:
                    message = f"{_ref_message(exc, unread)} (in task {task.key.id})"
                    problems.append(Problem(track.path, where, message))
                    continue
                resolved.append(target)
                paths.setdefault((task.key, target), (track.path, where))
            deps[task.key] = tuple(resolved)
    return deps, triggers, paths


def _ref_message(exc: RefError, unread: str) -> str:
    text = str(exc)
    if not unread or not text.startswith("unknown "):
        return text
    return f"{text} But {unread}" if text.endswith("?") else f"{text}; but {unread}"


def _cycles(
    tracks: Mapping[str, TrackDef],
    deps: Mapping[TaskKey, tuple[Target, ...]],
    triggers: Mapping[str, tuple[Target, ...]],
    paths: _RefPaths,
    problems: list[Problem],
) -> None:
    members = {name: [t.key for t in _unique_tasks(track)] for name, track in tracks.items()}

    def edges(node: _Node) -> Iterable[_Node]:
        if isinstance(node, TrackAll):
            return members.get(node.track, ())
        if isinstance(node, StartAfter):
            return triggers.get(node.track, ())
        out: list[_Node] = list(deps.get(node, ()))
        if triggers.get(node.track):
            out.append(StartAfter(node.track))
        return out

    nodes: list[_Node] = [key for keys in members.values() for key in keys]
    for found in find_cycles(nodes, edges):
        cycle = _rotate(found)
        file, where = _cycle_location(cycle, paths, tracks)
        spelled = " -> ".join(str(n) for n in cycle)
        problems.append(
            Problem(
                file,
                where,
                f"dependency cycle: {spelled} (each waits for the next); "
                "remove one of these dependencies",
            )
        )


def _rotate(cycle: list[_Node]) -> list[_Node]:
    """Start the cycle at its smallest task key, so the report is stable."""
    ring = cycle[:-1]
    tasks = [n for n in ring if isinstance(n, TaskKey)]
    start = ring.index(min(tasks)) if tasks else 0
    ring = ring[start:] + ring[:start]
    return [*ring, ring[0]]


def _cycle_location(
    cycle: list[_Node], paths: _RefPaths, tracks: Mapping[str, TrackDef]
) -> tuple[str, str]:
    for a, b in itertools.pairwise(cycle):
        found = paths.get((a, b))
        if found:
            return found
    first = cycle[0]
    track = tracks[first.track]
    return track.path, ROOT


def _project_copies(tracks: Mapping[str, TrackDef], problems: list[Problem]) -> None:
    holders: dict[tuple[str, str], list[str]] = {}
    for track in tracks.values():
        if track.project is not None:
            for ident in dict.fromkeys(task.key.id for task in track.tasks):
                holders.setdefault((track.project, ident), []).append(track.name)
    for track in tracks.values():
        if track.project is None:
            continue
        reported: set[str] = set()
        for task in track.tasks:
            ident = task.key.id
            names = holders[(track.project, ident)]
            if names[0] == track.name or ident in reported:
                continue
            reported.add(ident)
            others = [name for name in names if name != track.name]
            where = (
                f"track {others[0]!r}"
                if len(others) == 1
                else "tracks " + ", ".join(repr(n) for n in others[:-1]) + f" and {others[-1]!r}"
            )
            copies = "both copies" if len(names) == 2 else f"all {len(names)} copies"
            problems.append(
                Problem(
                    track.path,
                    json_path(track.list_key, task.index, "id"),
                    f"id {ident!r} is also in {where} of project {track.project!r}: {copies} "
                    f"would run. Keep one and depend on it as '{names[0]}:{ident}'",
                    severity="warning",
                )
            )
