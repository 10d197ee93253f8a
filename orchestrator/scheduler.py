"""Choosing the next task to start.

Among ready tasks, limited by each track's ``concurrency`` and the global ``max_parallel``:
lowest priority rank first; between tracks at the same priority, the track with fewer running
attempts (so no track starves), then track order; within a track, file order. The daemon calls
:func:`next_task` repeatedly, marking each chosen task as started in between. The first idle
track whose next task has the most urgent priority of all ready tasks wins at once: no track
after it can rank before it (so a slot that frees does not always look at every track).

Pure: reads the graph and counts, returns a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .graph import Graph
from .model import TaskKey


@dataclass(frozen=True, slots=True)
class Limits:
    max_parallel: int
    concurrency: Mapping[str, int]
    """Per track; a track missing here gets 1."""
    paused: bool = False
    """The whole daemon is paused (or draining): nothing new starts."""


def next_task(
    graph: Graph, running: Mapping[str, int], limits: Limits, tracks: Iterable[str]
) -> TaskKey | None:
    """The task to start now, or None when nothing can start."""
    if limits.paused or sum(running.values()) >= limits.max_parallel:
        return None
    best: tuple[tuple[int, int, int, int], TaskKey] | None = None
    most_urgent = graph.best_ready_priority()
    for position, name in enumerate(tracks):
        busy = running.get(name, 0)
        if busy >= limits.concurrency.get(name, 1):
            continue
        key = graph.peek_ready(name)
        if key is None:
            continue
        priority, index = graph.node(key).order
        if priority == most_urgent and busy == 0:
            return key  # no track after this one can rank before it
        rank = (priority, busy, position, index)
        if best is None or rank < best[0]:
            best = (rank, key)
    return None if best is None else best[1]
