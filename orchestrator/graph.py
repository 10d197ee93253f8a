"""One dependency graph across all tracks, answering "what is ready?" incrementally.

The graph holds, for every task, its resolved dependencies (tasks of any track, or ``track:*``)
and, for every track, its ``start_after`` trigger. It keeps counters of unmet dependencies and
reverse edges, so that a status change costs in proportion to the dependents it touches, not to
the size of the graph. A trigger that starts to hold makes its whole track eligible at once.

A task is *ready* when its status is ``pending``, every dependency is done (``complete`` or
``skipped``), its track's trigger holds, and neither the task nor its track is paused. Pausing
the whole daemon is the scheduler's concern. Unknown targets (a dependency on a task whose file
was removed) never hold. Cycles are rejected by validation before a graph is built;
:func:`find_cycles` is the check it uses.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .model import Status, Target, TaskKey, TrackAll

N = TypeVar("N", bound=Hashable)

Order = tuple[int, int]
"""How ready tasks of one track are ordered: (priority rank, position in the file)."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One task as the graph sees it."""

    key: TaskKey
    order: Order
    deps: tuple[Target, ...] = ()
    status: Status = Status.PENDING
    paused: bool = False


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """One track as the graph sees it."""

    name: str
    tasks: tuple[NodeSpec, ...] = ()
    trigger: tuple[Target, ...] = ()
    paused: bool = False

    def with_statuses(self, status_of: Callable[[TaskKey], Status | None]) -> TrackSpec:
        """This track with each task's status from ``status_of`` (``None``: the file's)."""
        nodes = []
        for node in self.tasks:
            status = status_of(node.key)
            if status is None or status is node.status:  # most of them: no copy to make
                nodes.append(node)
            else:
                nodes.append(replace(node, status=status))
        return replace(self, tasks=tuple(nodes))


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed in one update: readiness, triggers and finished tracks."""

    became_ready: tuple[TaskKey, ...] = ()
    no_longer_ready: tuple[TaskKey, ...] = ()
    triggers_fired: tuple[str, ...] = ()
    tracks_done: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Waiting:
    """One unmet dependency or trigger target and where it stands."""

    target: Target
    status: Status | None
    """The target task's status; ``None`` for a missing task or a ``track:*`` target."""
    exists: bool
    remaining: int = 0
    """For ``track:*``: how many tasks of that track are not done yet."""
    track_exists: bool = True
    """Whether the target's track is in the graph (its queue file may have been removed)."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a task is or is not ready, as data; ``explain`` turns it into sentences."""

    key: TaskKey
    exists: bool
    status: Status | None
    ready: bool
    deps: tuple[Waiting, ...] = ()
    """Unmet dependencies."""
    trigger: tuple[Waiting, ...] = ()
    """Unmet targets of the track's trigger."""
    task_paused: bool = False
    track_paused: bool = False
    blockers: tuple[TaskKey, ...] = ()
    """Tasks at the root of the wait: not done and not themselves waiting on anything."""


@dataclass(slots=True)
class _Recorder:
    ready: dict[TaskKey, bool] = field(default_factory=dict)
    trigger_held: dict[str, bool] = field(default_factory=dict)
    """Tracks whose trigger may have changed -> whether it held before the update."""
    was_done: dict[str, bool] = field(default_factory=dict)
    """Tracks whose tasks may have changed -> whether they were all done before the update."""


_STUCK = frozenset({Status.FAILED, Status.BLOCKED})
"""Not done, and left so until a person acts: what waits on such a task waits for a person."""


class Graph:
    """The incremental cross-track dependency graph."""

    def __init__(self, tracks: Iterable[TrackSpec] = ()) -> None:
        self._nodes: dict[TaskKey, NodeSpec] = {}
        self._status: dict[TaskKey, Status] = {}
        self._unmet: dict[TaskKey, int] = {}
        self._tracks: dict[str, TrackSpec] = {}
        self._track_keys: dict[str, list[TaskKey]] = {}
        self._counts: dict[str, dict[Status, int]] = {}
        """Track -> how many of its tasks have each status (kept, not counted on demand)."""
        self._trigger_unmet: dict[str, int] = {}
        # Reverse edges as insertion-ordered sets (dict keys): O(1) removal on reload.
        self._dependents: defaultdict[Target, dict[TaskKey, None]] = defaultdict(dict)
        self._watchers: defaultdict[Target, dict[str, None]] = defaultdict(dict)
        self._task_paused: set[TaskKey] = set()
        self._track_paused: set[str] = set()
        self._ready: dict[str, set[TaskKey]] = {}
        self._ready_priorities: dict[int, int] = {}
        """Ready tasks by priority rank (ranks with none are left out)."""
        self._heaps: dict[str, list[tuple[Order, TaskKey]]] = {}
        self._in_heap: set[TaskKey] = set()
        self._rec: _Recorder | None = None
        for spec in tracks:
            self.set_track(spec)

    # ----------------------------------------------------------------- structure

    def set_track(self, spec: TrackSpec) -> Delta:
        """Add a track, or replace it with a new definition (statuses come from ``spec``).

        A new definition with the same trigger touches only the tasks that changed (a reload
        that adds one task costs that task, not the track); one with another trigger rebuilds
        the track's counters.
        """
        with self._recording() as rec:
            current = self._tracks.get(spec.name)
            if current is not None and current.trigger == spec.trigger:
                rec.was_done.setdefault(spec.name, self.target_done(TrackAll(spec.name)))
                self._update_track(current, spec)
            else:
                if current is not None:
                    # Compare with where the track stood before it is rebuilt.
                    rec.trigger_held.setdefault(spec.name, self.trigger_holds(spec.name))
                    rec.was_done.setdefault(spec.name, self.target_done(TrackAll(spec.name)))
                    self._drop_track(spec.name)
                self._add_track(spec)
        return self._delta(rec)

    def _update_track(self, old: TrackSpec, new: TrackSpec) -> None:
        """Replace a track's definition in place: drop the tasks that went or changed shape
        (dependencies or order), add the new ones, and bring the others up to date."""
        name = new.name
        fresh = {n.key: n for n in new.tasks}
        gone = [
            n
            for n in old.tasks
            if (m := fresh.get(n.key)) is None or m.deps != n.deps or m.order != n.order
        ]
        if gone:
            for node in gone:  # first not done, so that dependents everywhere are updated
                self._apply_status(node.key, Status.PENDING)
                self._set_ready(node.key, False)
            dropped = {n.key for n in gone}
            self._track_keys[name] = [k for k in self._track_keys[name] if k not in dropped]
            for node in gone:
                self._forget(node)
            self._track_done_changed(name, was_all_done=False)
        self._tracks[name] = new
        self._track_keys[name] = [n.key for n in new.tasks]
        added = [n for n in new.tasks if n.key not in self._nodes]
        if added:
            was_all_done = self._undone(name) == 0
            self._register(added)
            self._track_done_changed(name, was_all_done)
            self._link(added)
        added_keys = {n.key for n in added}
        for node in new.tasks:
            key = node.key
            if key in added_keys:
                continue
            if node.paused != (key in self._task_paused):
                if node.paused:
                    self._task_paused.add(key)
                else:
                    self._task_paused.discard(key)
                self._recheck(key)
            if self._status[key] is not node.status:
                self._apply_status(key, node.status)
        if new.paused != (name in self._track_paused):
            if new.paused:
                self._track_paused.add(name)
            else:
                self._track_paused.discard(name)
            for key in self._track_keys[name]:
                self._recheck(key)
        if gone and added:
            # A task that came back with another order must not keep its old heap entry.
            heap = [(self._nodes[k].order, k) for k in self._ready[name]]
            heapq.heapify(heap)
            self._heaps[name] = heap
            self._in_heap.difference_update(self._track_keys[name])
            self._in_heap.update(self._ready[name])

    def remove_track(self, name: str) -> Delta:
        """Remove a track; its tasks become unknown targets for their dependents."""
        with self._recording() as rec:
            if name in self._tracks:
                self._drop_track(name)
        return self._delta(rec)

    def _add_track(self, spec: TrackSpec) -> None:
        name = spec.name
        self._tracks[name] = spec
        self._track_keys[name] = [n.key for n in spec.tasks]
        self._ready[name] = set()
        self._heaps[name] = []
        if spec.paused:
            self._track_paused.add(name)
        else:
            self._track_paused.discard(name)
        self._trigger_unmet[name] = 0
        # Counted while the track is not there yet: a ``track:*`` of this very track (valid on
        # an empty track) is then met by the announcement below, not counted as met twice.
        for target in dict.fromkeys(spec.trigger):
            self._watchers[target][name] = None
            if not self.target_done(target):
                self._trigger_unmet[name] += 1
        self._counts[name] = dict.fromkeys(Status, 0)  # from here on the track is there
        self._register(spec.tasks)
        was_all_done = False  # an absent track is never done
        # An empty track is done at once: announce it to whoever waits on track:*.
        if not spec.tasks:
            self._track_done_changed(name, was_all_done)
        self._link(spec.tasks)

    def _register(self, nodes: Iterable[NodeSpec]) -> None:
        """Nodes as not done yet (before any dependency is counted: some are on each other)."""
        for node in nodes:
            self._nodes[node.key] = node
            self._status[node.key] = Status.PENDING
            self._counts[node.key.track][Status.PENDING] += 1
            self._unmet[node.key] = 1  # not ready until its dependencies are counted
            if node.paused:
                self._task_paused.add(node.key)
            else:
                self._task_paused.discard(node.key)

    def _link(self, nodes: Sequence[NodeSpec]) -> None:
        """Count the registered nodes' unmet dependencies, then give them their statuses."""
        for node in nodes:
            unmet = 0
            for target in dict.fromkeys(node.deps):
                self._dependents[target][node.key] = None
                if not self.target_done(target):
                    unmet += 1
            self._unmet[node.key] = unmet
        for node in nodes:
            self._recheck(node.key)
            if node.status is not Status.PENDING:
                self._apply_status(node.key, node.status)

    def _drop_track(self, name: str) -> None:
        spec = self._tracks[name]
        keys = self._track_keys[name]
        # Mark every task not done first so that dependents elsewhere are updated.
        for key in keys:
            self._apply_status(key, Status.PENDING)
            self._set_ready(key, False)
        # Only an empty track is still "all done" here: the loop above undid the others.
        empty_track_was_done = self._undone(name) == 0
        for target in dict.fromkeys(spec.trigger):
            del self._watchers[target][name]
        for node in spec.tasks:
            self._forget(node)
        del self._tracks[name]
        del self._counts[name]
        del self._track_keys[name]
        del self._trigger_unmet[name]
        del self._ready[name]
        del self._heaps[name]
        self._track_paused.discard(name)
        if empty_track_was_done:
            self._propagate(TrackAll(name), now_done=False)

    def _forget(self, node: NodeSpec) -> None:
        """Take a node (marked not done already) out of every index."""
        key = node.key
        for target in dict.fromkeys(node.deps):
            del self._dependents[target][key]
        del self._nodes[key]
        self._counts[key.track][self._status.pop(key)] -= 1
        del self._unmet[key]
        self._task_paused.discard(key)
        self._in_heap.discard(key)

    # ----------------------------------------------------------------- state

    def set_status(self, key: TaskKey, status: Status) -> Delta:
        """Record a task's new status and return what that changed."""
        if key not in self._nodes:
            raise KeyError(f"unknown task {key}")
        with self._recording() as rec:
            self._apply_status(key, status)
        return self._delta(rec)

    def pause_task(self, key: TaskKey, paused: bool = True) -> Delta:
        if key not in self._nodes:
            raise KeyError(f"unknown task {key}")
        with self._recording() as rec:
            if paused:
                self._task_paused.add(key)
            else:
                self._task_paused.discard(key)
            self._recheck(key)
        return self._delta(rec)

    def pause_track(self, name: str, paused: bool = True) -> Delta:
        if name not in self._tracks:
            raise KeyError(f"unknown track {name!r}")
        with self._recording() as rec:
            if paused:
                self._track_paused.add(name)
            else:
                self._track_paused.discard(name)
            for key in self._track_keys[name]:
                self._recheck(key)
        return self._delta(rec)

    def _apply_status(self, key: TaskKey, status: Status) -> None:
        old = self._status[key]
        if old is status:
            return
        self._status[key] = status
        track = key.track
        done_changes = old.done != status.done
        was_all_done = done_changes and self._undone(track) == 0
        counts = self._counts[track]
        counts[old] -= 1
        counts[status] += 1
        if done_changes:
            self._propagate(key, now_done=status.done)
            self._track_done_changed(track, was_all_done)
        self._recheck(key)

    def _undone(self, track: str) -> int:
        """Tasks of ``track`` not done, from the kept counts."""
        return sum(n for status, n in self._counts[track].items() if not status.done)

    def _track_done_changed(self, track: str, was_all_done: bool) -> None:
        now_all_done = self._undone(track) == 0
        if now_all_done != was_all_done:
            if self._rec is not None:
                self._rec.was_done.setdefault(track, was_all_done)
            self._propagate(TrackAll(track), now_done=now_all_done)

    def _propagate(self, target: Target, *, now_done: bool) -> None:
        step = -1 if now_done else 1
        for dependent in list(self._dependents.get(target, ())):
            self._unmet[dependent] += step
            self._recheck(dependent)
        for track in list(self._watchers.get(target, ())):
            before = self._trigger_unmet[track]
            self._trigger_unmet[track] = before + step
            if (before == 0) != (before + step == 0):
                if self._rec is not None:
                    self._rec.trigger_held.setdefault(track, before == 0)
                for key in self._track_keys[track]:
                    self._recheck(key)

    def _recheck(self, key: TaskKey) -> None:
        track = key.track
        ready = (
            self._status[key] is Status.PENDING
            and self._unmet[key] == 0
            and self._trigger_unmet[track] == 0
            and key not in self._task_paused
            and track not in self._track_paused
        )
        self._set_ready(key, ready)

    def _set_ready(self, key: TaskKey, ready: bool) -> None:
        bucket = self._ready[key.track]
        if ready == (key in bucket):
            return
        priority = self._nodes[key].order[0]
        counts = self._ready_priorities
        if ready:
            bucket.add(key)
            counts[priority] = counts.get(priority, 0) + 1
            if key not in self._in_heap:
                self._in_heap.add(key)
                heapq.heappush(self._heaps[key.track], (self._nodes[key].order, key))
        else:
            bucket.discard(key)
            left = counts[priority] - 1
            if left:
                counts[priority] = left
            else:
                del counts[priority]
        if self._rec is not None:
            rec = self._rec.ready
            if rec.get(key) is (not ready):
                del rec[key]  # flipped back within this update
            else:
                rec[key] = ready

    # ----------------------------------------------------------------- queries

    def __contains__(self, key: object) -> bool:
        return key in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def tracks(self) -> Mapping[str, TrackSpec]:
        return self._tracks

    def node(self, key: TaskKey) -> NodeSpec:
        return self._nodes[key]

    def status(self, key: TaskKey) -> Status:
        return self._status[key]

    def keys(self, track: str | None = None) -> Iterator[TaskKey]:
        if track is None:
            return iter(self._nodes)
        return iter(self._track_keys.get(track, ()))

    def target_done(self, target: Target) -> bool:
        """A task target is done when complete or skipped; ``track:*`` when all its tasks are."""
        if isinstance(target, TrackAll):
            return target.track in self._counts and self._undone(target.track) == 0
        status = self._status.get(target)
        return status is not None and status.done

    def trigger_holds(self, track: str) -> bool:
        return self._trigger_unmet.get(track, 1) == 0

    def track_paused(self, track: str) -> bool:
        return track in self._track_paused

    def waits(self, key: TaskKey) -> bool:
        """Whether ``key`` waits for a dependency or its track's trigger, whatever its status
        (a running task whose dependencies were edited)."""
        return self._unmet[key] > 0 or self._trigger_unmet[key.track] > 0

    def status_counts(self, track: str) -> Mapping[Status, int]:
        """How many of the track's tasks have each status (every status, zeros included)."""
        return dict(self._counts[track])

    def remaining(self, track: str) -> int:
        """Tasks of ``track`` not done yet."""
        return self._undone(track) if track in self._counts else 0

    def is_ready(self, key: TaskKey) -> bool:
        return key in self._ready.get(key.track, ())

    def ready_count(self, track: str | None = None) -> int:
        if track is None:
            return sum(len(bucket) for bucket in self._ready.values())
        return len(self._ready.get(track, ()))

    def best_ready_priority(self) -> int | None:
        """The lowest (most urgent) priority rank among all ready tasks; None: none ready."""
        return min(self._ready_priorities) if self._ready_priorities else None

    def peek_ready(self, track: str) -> TaskKey | None:
        """The ready task of ``track`` to run next (priority, then file order), or None."""
        heap = self._heaps.get(track)
        if not heap:
            return None
        bucket = self._ready[track]
        while heap:
            key = heap[0][1]
            if key in bucket:
                return key
            heapq.heappop(heap)
            self._in_heap.discard(key)
        return None

    def ready_in_order(self, track: str, limit: int | None = None) -> list[TaskKey]:
        """Ready tasks of ``track`` in run order (for display; sorts on every call)."""
        bucket = self._ready.get(track, ())

        def rank(key: TaskKey) -> tuple[Order, TaskKey]:
            return self._nodes[key].order, key  # the heap's order: ties go by key

        if limit is not None:
            return heapq.nsmallest(limit, bucket, key=rank)
        return sorted(bucket, key=rank)

    def dependents(self, key: TaskKey) -> list[TaskKey]:
        """Tasks that name ``key`` directly, plus those that name its whole track."""
        out = list(self._dependents.get(key, ()))
        out.extend(self._dependents.get(TrackAll(key.track), ()))
        return out

    def explain(self, key: TaskKey) -> Explanation:
        """Why ``key`` is or is not ready."""
        node = self._nodes.get(key)
        if node is None:
            return Explanation(key=key, exists=False, status=None, ready=False)
        track = self._tracks[key.track]
        return Explanation(
            key=key,
            exists=True,
            status=self._status[key],
            ready=self.is_ready(key),
            deps=tuple(self._waiting(t) for t in node.deps if not self.target_done(t)),
            trigger=tuple(self._waiting(t) for t in track.trigger if not self.target_done(t)),
            task_paused=key in self._task_paused,
            track_paused=key.track in self._track_paused,
            blockers=tuple(self._blockers(key)),
        )

    def held(self) -> dict[TaskKey, TaskKey]:
        """Pending tasks that wait, through their dependencies or their track's trigger
        (directly or through other pending tasks), on a failed or blocked task: nothing of
        them starts until a person acts. Each with the first such task found for it.

        Costs in proportion to the tracks with failed or blocked tasks and what waits on them.
        """
        held: dict[TaskKey, TaskKey] = {}
        queue: deque[tuple[TaskKey, TaskKey]] = deque()
        for track, counts in self._counts.items():
            if counts[Status.FAILED] or counts[Status.BLOCKED]:
                queue.extend(
                    (key, key) for key in self._track_keys[track] if self._status[key] in _STUCK
                )
        whole: set[str] = set()
        """Tracks already known not done: their ``track:*`` dependents and triggers are seen."""
        triggered: set[str] = set()
        """Tracks whose trigger is known not to hold: all their pending tasks are held."""

        def hold(key: TaskKey, root: TaskKey) -> None:
            if key not in held and self._status[key] is Status.PENDING:
                held[key] = root
                queue.append((key, root))

        while queue:
            key, root = queue.popleft()
            targets: list[Target] = [key]
            if key.track not in whole:
                whole.add(key.track)
                targets.append(TrackAll(key.track))
            for target in targets:
                for dependent in self._dependents.get(target, ()):
                    hold(dependent, root)
                for track in self._watchers.get(target, ()):
                    if track not in triggered:
                        triggered.add(track)
                        for member in self._track_keys.get(track, ()):
                            hold(member, root)
        return held

    def _waiting(self, target: Target) -> Waiting:
        if isinstance(target, TrackAll):
            exists = target.track in self._tracks
            return Waiting(target, None, exists, self.remaining(target.track))
        status = self._status.get(target)
        return Waiting(
            target, status, status is not None, track_exists=target.track in self._tracks
        )

    def _unmet_targets(self, key: TaskKey) -> Iterator[TaskKey]:
        """Task-level targets ``key`` waits on (``track:*`` expanded to its unfinished tasks)."""
        node = self._nodes[key]
        targets = list(node.deps) + list(self._tracks[key.track].trigger)
        for target in targets:
            if self.target_done(target):
                continue
            if isinstance(target, TrackAll):
                for member in self._track_keys.get(target.track, ()):
                    if not self._status[member].done and member != key:
                        yield member
            elif target in self._nodes:
                yield target

    def _blockers(self, key: TaskKey) -> list[TaskKey]:
        seen: set[TaskKey] = {key}
        roots: list[TaskKey] = []
        queue = deque(self._unmet_targets(key))
        while queue:
            current = queue.popleft()
            if current in seen:
                continue
            seen.add(current)
            waits_on = list(self._unmet_targets(current))
            if waits_on and self._status[current] is Status.PENDING:
                queue.extend(t for t in waits_on if t not in seen)
            else:
                roots.append(current)
        return roots

    # ----------------------------------------------------------------- recording

    def _recording(self) -> _Recording:
        return _Recording(self)

    def _delta(self, rec: _Recorder) -> Delta:
        became = tuple(k for k, v in rec.ready.items() if v)
        gone = tuple(k for k, v in rec.ready.items() if not v)
        # Only real transitions: a trigger or track that flipped and flipped back (a reload
        # drops a track and adds it again) is not news.
        fired = tuple(
            t for t, held in rec.trigger_held.items() if not held and self.trigger_holds(t)
        )
        done = tuple(
            t for t, was in rec.was_done.items() if not was and self.target_done(TrackAll(t))
        )
        return Delta(became, gone, fired, done)


class _Recording:
    """Context manager that collects readiness changes of one update (updates never nest)."""

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._rec = _Recorder()

    def __enter__(self) -> _Recorder:
        self._graph._rec = self._rec
        return self._rec

    def __exit__(self, *exc: object) -> None:
        self._graph._rec = None


# --------------------------------------------------------------------- cycles


def find_cycles(nodes: Iterable[N], edges: Callable[[N], Iterable[N]]) -> list[list[N]]:
    """Return one cycle per strongly connected component that has one.

    Each cycle is a list of nodes ``[a, b, ..., a]`` where each node has an edge to the next.
    Kahn's algorithm first peels off everything that cannot be on a cycle (cheap, and all there
    is to do for a valid plan); an iterative Tarjan then runs on what is left, so deep chains
    never hit the recursion limit.
    """
    adjacency: dict[N, list[N]] = {}
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if node in adjacency:
            continue
        children = list(edges(node))
        adjacency[node] = children
        pending.extend(c for c in children if c not in adjacency)
    indegree: dict[N, int] = dict.fromkeys(adjacency, 0)
    for children in adjacency.values():
        for child in children:
            indegree[child] += 1
    free = [n for n, d in indegree.items() if d == 0]
    while free:
        for child in adjacency[free.pop()]:
            indegree[child] -= 1
            if indegree[child] == 0:
                free.append(child)
    left = {n for n, d in indegree.items() if d > 0}
    if not left:
        return []

    def inner(node: N) -> Iterable[N]:
        return [c for c in adjacency[node] if c in left]

    return _tarjan([n for n in adjacency if n in left], inner)


def _tarjan(nodes: Iterable[N], edges: Callable[[N], Iterable[N]]) -> list[list[N]]:
    index: dict[N, int] = {}
    low: dict[N, int] = {}
    on_stack: set[N] = set()
    stack: list[N] = []
    cycles: list[list[N]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[N, Iterator[N]]] = [(root, iter(edges(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges(child))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[N] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                cycle = _cycle_in(component, edges)
                if cycle:
                    cycles.append(cycle)
    return cycles


def _cycle_in(component: list[N], edges: Callable[[N], Iterable[N]]) -> list[N]:
    members = set(component)
    if len(component) == 1:
        only = component[0]
        return [only, only] if only in set(edges(only)) else []
    start = min(component, key=str)
    # Breadth-first search inside the component for the shortest way back to start.
    parent: dict[N, N] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in edges(node):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                return [*path, start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return []  # unreachable for a real strongly connected component
