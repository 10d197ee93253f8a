"""Property tests of the dependency graph: readiness, deltas, scheduling order and cycles.

The reference for readiness is a small from-scratch recomputation of DESIGN section 4 over a
plain model of the tracks (``_Model``), independent of the graph's counters. Random graphs are
acyclic by construction: every task has a rank in one global order and may only wait, directly,
through ``track:*`` or through its track's trigger, on tasks of lower rank. Ranks are given to
every task a track may *ever* hold (its pool), so replacing a track keeps the graph acyclic.
"""

from __future__ import annotations

import graphlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import Phase, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orchestrator.graph import Delta, Graph, NodeSpec, TrackSpec, find_cycles
from orchestrator.model import Status, Target, TaskKey, TrackAll

TRACK_NAMES = ("t0", "t1", "t2", "t3")
GHOST_TASK = TaskKey("ghost", "x")
"""A dependency on a task that never exists."""
GHOST_TRACK = TrackAll("ghost")
"""A dependency on a track that never exists."""
GHOSTS: tuple[Target, ...] = (GHOST_TASK, GHOST_TRACK)

# Pending and done are weighted up so that readiness is neither rare nor trivial.
ANY_STATUS = (Status.PENDING, Status.PENDING, Status.COMPLETE, Status.COMPLETE, *Status)
RUNNABLE_STATUS = (Status.PENDING, Status.PENDING, Status.COMPLETE, Status.SKIPPED)
# No "explain" phase: it traces every line and makes a failure take minutes to report.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
RARELY = st.sampled_from((False,) * 7 + (True,))
SOMETIMES = st.sampled_from((False, False, True))


# --------------------------------------------------------------------- random acyclic graphs


@dataclass(frozen=True)
class Universe:
    """Every task each track may hold, and one global order that all waiting goes down."""

    pools: Mapping[str, tuple[TaskKey, ...]]
    rank: Mapping[TaskKey, int]
    acyclic: bool = True
    """False: ignore the order, anything may wait on anything (validation would refuse)."""

    @property
    def keys(self) -> list[TaskKey]:
        return sorted(self.rank, key=self.rank.__getitem__)

    def below(self, limit: int) -> list[Target]:
        """Targets whose every task ranks below ``limit``."""
        out: list[Target] = [k for k in self.keys if self.rank[k] < limit or not self.acyclic]
        out += [
            TrackAll(name)
            for name, pool in self.pools.items()
            if all(self.rank[k] < limit for k in pool) or not self.acyclic
        ]
        return out

    def trigger_floor(self, track: str) -> int:
        """A trigger holds back every task of the track: targets rank below all of them."""
        return min((self.rank[k] for k in self.pools[track]), default=len(self.rank))


@st.composite
def universes(draw: st.DrawFn, *, acyclic: bool = True) -> Universe:
    count = draw(st.integers(1, 4))
    pools = {
        name: tuple(TaskKey(name, f"k{i}") for i in range(draw(st.integers(0, 15))))
        for name in TRACK_NAMES[:count]
    }
    if draw(st.booleans()):
        order = draw(st.permutations([k for pool in pools.values() for k in pool]))
    else:  # track after track (in some order), so that triggers have more to wait on
        names = draw(st.permutations(list(pools)))
        order = [k for name in names for k in draw(st.permutations(pools[name]))]
    return Universe(pools, {k: i for i, k in enumerate(order)}, acyclic)


def _some(
    data: st.DataObject, choices: Sequence[Target], most: int, *, unknown: bool
) -> tuple[Target, ...]:
    """Up to ``most`` of ``choices`` (repeats allowed), with ``unknown``, now and then a
    target that does not exist."""
    out = list(data.draw(st.lists(st.sampled_from(choices), max_size=most))) if choices else []
    if unknown and data.draw(RARELY):
        out.insert(data.draw(st.integers(0, len(out))), data.draw(st.sampled_from(GHOSTS)))
    return tuple(out)


def _draw_trigger(
    data: st.DataObject, uni: Universe, name: str, *, unknown: bool
) -> tuple[Target, ...]:
    if not data.draw(SOMETIMES):
        return ()
    return _some(data, uni.below(uni.trigger_floor(name)), 3, unknown=unknown)


def _draw_track(
    data: st.DataObject, uni: Universe, name: str, *, everything: bool = False
) -> TrackSpec:
    """A definition of ``name``: with ``everything``, its whole pool, no pauses, no unknowns,
    statuses only pending or done; otherwise anything goes (but still acyclic)."""
    pool = uni.pools[name]
    if everything:
        members = data.draw(st.permutations(pool))
    else:
        members = [k for k in data.draw(st.permutations(pool)) if not data.draw(RARELY)]
    unknown = not everything
    statuses = RUNNABLE_STATUS if everything else ANY_STATUS
    tasks = tuple(
        NodeSpec(
            key=key,
            order=(data.draw(st.integers(0, 2)), index),
            deps=_some(data, uni.below(uni.rank[key]), 3, unknown=unknown),
            status=data.draw(st.sampled_from(statuses)),
            paused=False if everything else data.draw(RARELY),
        )
        for index, key in enumerate(members)
    )
    trigger = _draw_trigger(data, uni, name, unknown=unknown)
    return TrackSpec(name, tasks, trigger, paused=False if everything else data.draw(RARELY))


def _grow(data: st.DataObject, uni: Universe, spec: TrackSpec) -> tuple[NodeSpec, ...]:
    """A track's tasks with some added from its pool, some given new dependencies or a new
    order, some dropped, some paused or unpaused, in a new order."""
    present = {n.key for n in spec.tasks}
    out: list[NodeSpec] = []
    for node in spec.tasks:
        if data.draw(RARELY):
            continue
        changed = node
        if data.draw(RARELY):
            deps = _some(data, uni.below(uni.rank[node.key]), 3, unknown=True)
            changed = replace(changed, deps=deps)
        if data.draw(RARELY):
            changed = replace(changed, order=(data.draw(st.integers(0, 2)), node.order[1]))
        if data.draw(RARELY):
            changed = replace(changed, paused=not node.paused)
        out.append(changed)
    for key in uni.pools[spec.name]:
        if key not in present and data.draw(SOMETIMES):
            out.append(
                NodeSpec(
                    key=key,
                    order=(data.draw(st.integers(0, 2)), len(out)),
                    deps=_some(data, uni.below(uni.rank[key]), 3, unknown=True),
                    status=data.draw(st.sampled_from(ANY_STATUS)),
                    paused=data.draw(RARELY),
                )
            )
    return tuple(data.draw(st.permutations(out)))


# --------------------------------------------------------------------- the reference


@dataclass
class _Model:
    """The state the graph should be in, kept as plainly as possible."""

    tracks: dict[str, TrackSpec] = field(default_factory=dict)
    status: dict[TaskKey, Status] = field(default_factory=dict)
    task_paused: set[TaskKey] = field(default_factory=set)
    track_paused: set[str] = field(default_factory=set)

    def set_track(self, spec: TrackSpec) -> None:
        self.remove_track(spec.name)
        self.tracks[spec.name] = spec
        for node in spec.tasks:
            self.status[node.key] = node.status
            if node.paused:
                self.task_paused.add(node.key)
        if spec.paused:
            self.track_paused.add(spec.name)

    def remove_track(self, name: str) -> None:
        old = self.tracks.pop(name, None)
        if old is not None:
            for node in old.tasks:
                del self.status[node.key]
                self.task_paused.discard(node.key)
        self.track_paused.discard(name)

    def nodes(self) -> dict[TaskKey, NodeSpec]:
        return {n.key: n for spec in self.tracks.values() for n in spec.tasks}

    def live_spec(self, name: str) -> TrackSpec:
        """The current definition of ``name`` with its live statuses and pauses."""
        spec = self.tracks[name]
        tasks = tuple(
            replace(n, status=self.status[n.key], paused=n.key in self.task_paused)
            for n in spec.tasks
        )
        return replace(spec, tasks=tasks, paused=name in self.track_paused)


def ref_done(model: _Model, target: Target) -> bool:
    if isinstance(target, TrackAll):
        spec = model.tracks.get(target.track)
        return spec is not None and all(model.status[n.key].done for n in spec.tasks)
    status = model.status.get(target)
    return status is not None and status.done


def ref_trigger_holds(model: _Model, track: str) -> bool:
    spec = model.tracks.get(track)
    return spec is not None and all(ref_done(model, t) for t in spec.trigger)


def ref_ready(model: _Model, node: NodeSpec) -> bool:
    """DESIGN section 4, from scratch (daemon pause and slots are the scheduler's concern)."""
    track = node.key.track
    return (
        model.status[node.key] is Status.PENDING
        and all(ref_done(model, t) for t in node.deps)
        and ref_trigger_holds(model, track)
        and node.key not in model.task_paused
        and track not in model.track_paused
    )


@dataclass(frozen=True)
class _Snapshot:
    tracks: frozenset[str]
    ready: frozenset[TaskKey]
    holding: frozenset[str]
    """Tracks whose trigger holds."""
    done: frozenset[str]
    """Tracks whose tasks are all done."""


def snapshot(model: _Model) -> _Snapshot:
    return _Snapshot(
        tracks=frozenset(model.tracks),
        ready=frozenset(k for k, n in model.nodes().items() if ref_ready(model, n)),
        holding=frozenset(t for t in model.tracks if ref_trigger_holds(model, t)),
        done=frozenset(t for t in model.tracks if ref_done(model, TrackAll(t))),
    )


def check_graph(graph: Graph, model: _Model, uni: Universe) -> None:
    """The graph answers every question as the reference does."""
    nodes = model.nodes()
    assert set(graph.keys()) == set(nodes)
    assert set(graph.tracks) == set(model.tracks)
    for key in [*uni.keys, GHOST_TASK]:
        assert (key in graph) == (key in nodes)
        node = nodes.get(key)
        ready = node is not None and ref_ready(model, node)
        assert graph.is_ready(key) == ready, key
        if node is not None:
            assert graph.status(key) is model.status[key]
        if ready:
            assert node is not None
            assert all(ref_done(model, t) for t in node.deps), key
    for target in [*uni.below(len(uni.rank)), *GHOSTS]:
        assert graph.target_done(target) == ref_done(model, target), target
    assert graph.ready_count() == sum(ref_ready(model, n) for n in nodes.values())
    urgent = [n.order[0] for n in nodes.values() if ref_ready(model, n)]
    assert graph.best_ready_priority() == (min(urgent) if urgent else None)
    for name in TRACK_NAMES:
        spec = model.tracks.get(name)
        assert graph.trigger_holds(name) == ref_trigger_holds(model, name), name
        if spec is None:
            assert graph.peek_ready(name) is None
            continue
        assert graph.track_paused(name) == (name in model.track_paused)
        assert graph.remaining(name) == sum(not model.status[n.key].done for n in spec.tasks)
        recounted = Counter(model.status[n.key] for n in spec.tasks)
        assert graph.status_counts(name) == {s: recounted[s] for s in Status}, name
        in_order = [
            k for _, k in sorted((n.order, n.key) for n in spec.tasks if ref_ready(model, n))
        ]
        assert graph.ready_count(name) == len(in_order)
        assert graph.ready_in_order(name) == in_order
        assert graph.peek_ready(name) == (in_order[0] if in_order else None), name


def check_delta(delta: Delta, before: _Snapshot, after: _Snapshot) -> None:
    """The delta of one update says exactly what changed between two snapshots."""
    for part in (delta.became_ready, delta.no_longer_ready, delta.triggers_fired):
        assert len(set(part)) == len(part), delta
    assert len(set(delta.tracks_done)) == len(delta.tracks_done), delta
    assert set(delta.became_ready) == after.ready - before.ready
    assert set(delta.no_longer_ready) == before.ready - after.ready
    kept = before.tracks & after.tracks
    fired = set(delta.triggers_fired)
    assert fired & kept == {t for t in kept if t not in before.holding and t in after.holding}
    assert fired - kept <= after.holding - before.tracks  # a new track may announce its trigger
    done = set(delta.tracks_done)
    assert done & kept == {t for t in kept if t not in before.done and t in after.done}
    assert done - kept <= after.done - before.tracks  # a new track may announce it is done


# --------------------------------------------------------------------- 1 and 2: random updates


def graph_ready(graph: Graph) -> Iterable[TaskKey]:
    return (k for k in graph.keys(None) if graph.is_ready(k))


class GraphMachine(RuleBasedStateMachine):
    """Random updates to a random acyclic graph, checked against the reference after each."""

    acyclic = True

    def __init__(self) -> None:
        super().__init__()
        self.uni = Universe({}, {})
        self.model = _Model()
        self.graph = Graph()

    @initialize(data=st.data())
    def build(self, data: st.DataObject) -> None:
        self.uni = data.draw(universes(acyclic=self.acyclic))
        specs = [_draw_track(data, self.uni, name) for name in self.uni.pools]
        note(f"Graph({specs})")
        self.graph = Graph(specs)
        for spec in specs:
            self.model.set_track(spec)
        check_graph(self.graph, self.model, self.uni)

    def _update(self, apply: Callable[[], Delta], mirror: Callable[[], None]) -> None:
        before = snapshot(self.model)
        delta = apply()
        mirror()
        check_delta(delta, before, snapshot(self.model))
        check_graph(self.graph, self.model, self.uni)

    def _task(self, data: st.DataObject) -> TaskKey:
        return data.draw(st.sampled_from(sorted(self.model.status)), label="task")

    @precondition(lambda self: bool(self.model.status))
    @rule(data=st.data(), status=st.sampled_from(ANY_STATUS))
    def set_status(self, data: st.DataObject, status: Status) -> None:
        key = self._task(data)

        def mirror() -> None:
            self.model.status[key] = status

        self._update(lambda: self.graph.set_status(key, status), mirror)

    @precondition(lambda self: any(graph_ready(self.graph)))
    @rule(data=st.data(), status=st.sampled_from((Status.COMPLETE, Status.SKIPPED)))
    def finish_ready(self, data: st.DataObject, status: Status) -> None:
        """What the scheduler does most: finish a ready task."""
        key = data.draw(st.sampled_from(sorted(graph_ready(self.graph))), label="ready")

        def mirror() -> None:
            self.model.status[key] = status

        self._update(lambda: self.graph.set_status(key, status), mirror)

    @precondition(lambda self: bool(self.model.tracks))
    @rule(data=st.data(), paused=st.booleans(), whole_track=st.booleans())
    def pause(self, data: st.DataObject, paused: bool, whole_track: bool) -> None:
        if whole_track or not self.model.status:
            name = data.draw(st.sampled_from(sorted(self.model.tracks)), label="track")
            tracks = self.model.track_paused
            self._update(
                lambda: self.graph.pause_track(name, paused),
                lambda: tracks.add(name) if paused else tracks.discard(name),
            )
            return
        key = self._task(data)
        tasks = self.model.task_paused
        self._update(
            lambda: self.graph.pause_task(key, paused),
            lambda: tasks.add(key) if paused else tasks.discard(key),
        )

    @rule(data=st.data(), how=st.sampled_from(("reload", "edit", "grow", "new", "remove")))
    def set_or_remove_track(self, data: st.DataObject, how: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.uni.pools)), label="track")
        if how == "remove":
            self._update(
                lambda: self.graph.remove_track(name), lambda: self.model.remove_track(name)
            )
            return
        if how == "new" or name not in self.model.tracks:
            spec = _draw_track(data, self.uni, name)
        else:
            # What a reload sends: the definition with live statuses and pauses ...
            spec = self.model.live_spec(name)
            if how == "edit":
                # ... here with some tasks dropped or given new statuses, and a new trigger.
                tasks = tuple(
                    replace(n, status=data.draw(st.sampled_from(ANY_STATUS)))
                    if data.draw(RARELY)
                    else n
                    for n in spec.tasks
                    if not data.draw(RARELY)
                )
                trigger = _draw_trigger(data, self.uni, name, unknown=True)
                spec = replace(spec, tasks=tasks, trigger=trigger, paused=data.draw(RARELY))
            elif how == "grow":
                # ... here with the trigger kept: tasks added, reshaped, dropped, re-paused.
                spec = replace(spec, tasks=_grow(data, self.uni, spec), paused=data.draw(RARELY))
        note(f"set_track({spec})")
        self._update(lambda: self.graph.set_track(spec), lambda: self.model.set_track(spec))


class CyclicGraphMachine(GraphMachine):
    """The same with cycles allowed: readiness is a rule on statuses and needs no order."""

    acyclic = False


def test_readiness_and_deltas_match_the_reference_after_every_update() -> None:
    run_state_machine_as_test(
        GraphMachine,
        settings=settings(max_examples=150, stateful_step_count=25, deadline=None, phases=PHASES),
    )


def test_readiness_and_deltas_hold_even_with_cycles() -> None:
    run_state_machine_as_test(
        CyclicGraphMachine,
        settings=settings(max_examples=75, stateful_step_count=25, deadline=None, phases=PHASES),
    )


def test_updates_to_unknown_tasks_and_tracks_raise() -> None:
    graph = Graph([TrackSpec("a", (NodeSpec(TaskKey("a", "A"), (0, 0)),))])
    with pytest.raises(KeyError):
        graph.set_status(TaskKey("a", "B"), Status.COMPLETE)
    with pytest.raises(KeyError):
        graph.pause_task(TaskKey("b", "A"))
    with pytest.raises(KeyError):
        graph.pause_track("b")
    assert graph.remove_track("b") == Delta()


def test_reloading_a_finished_track_announces_nothing() -> None:
    # Regression: a reload drops the track and adds it again; that flip and flip back used to
    # be reported as the track finishing and as the trigger watching it firing, on every reload.
    done = TrackSpec("a", (NodeSpec(TaskKey("a", "A"), (0, 0), status=Status.COMPLETE),))
    waiting = TrackSpec("b", (NodeSpec(TaskKey("b", "B"), (0, 0)),), trigger=(TrackAll("a"),))
    graph = Graph([done, waiting])
    assert graph.set_track(done) == Delta()
    assert graph.set_track(waiting) == Delta()


def test_editing_a_trigger_away_reports_it_fired() -> None:
    # Regression: a reload recomputed the trigger from scratch without reporting the change.
    a = TrackSpec("a", (NodeSpec(TaskKey("a", "A"), (0, 0)),))
    b = TrackSpec("b", (NodeSpec(TaskKey("b", "B"), (0, 0)),), trigger=(TaskKey("a", "A"),))
    graph = Graph([a, b])
    delta = graph.set_track(replace(b, trigger=()))
    assert delta == Delta(became_ready=(TaskKey("b", "B"),), triggers_fired=("b",))


def test_an_empty_track_may_start_after_itself() -> None:
    # Regression: validation accepts ``start_after: ["docs:*"]`` on an empty track (no cycle),
    # but the graph counted the target as met twice and the trigger never held (counter -1).
    graph = Graph([TrackSpec("docs", (), trigger=(TrackAll("docs"),))])
    assert graph.trigger_holds("docs")
    graph = Graph([TrackSpec("docs", (), trigger=(TrackAll("docs"), GHOST_TASK))])
    assert not graph.trigger_holds("docs")


# --------------------------------------------------------------------- 3: running to the end


def _expand(model: _Model, targets: Iterable[Target]) -> set[TaskKey]:
    out: set[TaskKey] = set()
    for target in targets:
        if isinstance(target, TrackAll):
            out.update(n.key for n in model.tracks[target.track].tasks)
        else:
            out.add(target)
    return out


@settings(max_examples=150, deadline=None, phases=PHASES)
@given(data=st.data())
def test_completing_ready_tasks_finishes_every_task_in_topological_order(
    data: st.DataObject,
) -> None:
    uni = data.draw(universes())
    model = _Model()
    for name in uni.pools:
        model.set_track(_draw_track(data, uni, name, everything=True))
    graph = Graph(model.tracks.values())
    nodes = model.nodes()
    finished_at = {k: -1 for k, s in model.status.items() if s.done}
    step = 0
    while True:
        ready: list[TaskKey] = []
        for name, spec in model.tracks.items():
            in_track = sorted((n.order, n.key) for n in spec.tasks if graph.is_ready(n.key))
            assert graph.peek_ready(name) == (in_track[0][1] if in_track else None)
            ready += [k for _, k in in_track]
        if not ready:
            break
        if data.draw(st.booleans(), label="by track"):
            track = data.draw(st.sampled_from(sorted({k.track for k in ready})), label="track")
            key = graph.peek_ready(track)
            assert key is not None
        else:
            key = data.draw(st.sampled_from(ready), label="task")
        assert key not in finished_at
        graph.set_status(key, Status.COMPLETE)
        model.status[key] = Status.COMPLETE
        finished_at[key] = step
        step += 1
    assert all(graph.status(k).done for k in nodes)
    assert set(finished_at) == set(nodes)
    for key, node in nodes.items():
        if finished_at[key] < 0:
            continue  # done from the start
        waits_on = _expand(model, node.deps) | _expand(model, model.tracks[key.track].trigger)
        for other in waits_on:
            assert finished_at[other] < finished_at[key], (key, other)


# --------------------------------------------------------------------- 4: cycles


def _adjacency(count: int, edges: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    adjacency: dict[int, list[int]] = {n: [] for n in range(count)}
    for a, b in edges:
        adjacency[a].append(b)
    return adjacency


def _reach(adjacency: Mapping[int, Sequence[int]], start: Iterable[int]) -> set[int]:
    seen = set(start)
    stack = list(seen)
    while stack:
        for child in adjacency[stack.pop()]:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _cyclic_components(adjacency: Mapping[int, Sequence[int]]) -> list[frozenset[int]]:
    reach = {n: _reach(adjacency, adjacency[n]) for n in adjacency}  # reachable in >= 1 step
    found: set[frozenset[int]] = set()
    for n in adjacency:
        if n in reach[n]:
            found.add(frozenset(m for m in reach[n] if n in reach[m]))
    return list(found)


def _check_cycle(cycle: Sequence[int], adjacency: Mapping[int, Sequence[int]]) -> None:
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1  # simple
    for a, b in itertools.pairwise(cycle):
        assert b in adjacency[a], (a, b)


directed_graphs = st.integers(1, 9).flatmap(
    lambda n: st.tuples(
        st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=18)
    )
)


@settings(max_examples=300, deadline=None, phases=PHASES)
@given(graph=directed_graphs, data=st.data())
def test_find_cycles_agrees_with_graphlib(
    graph: tuple[int, list[tuple[int, int]]], data: st.DataObject
) -> None:
    count, edges = graph
    adjacency = _adjacency(count, edges)
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for node, children in adjacency.items():
        sorter.add(node, *children)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        has_cycle = True
    else:
        has_cycle = False

    cycles = find_cycles(range(count), adjacency.__getitem__)
    assert bool(cycles) == has_cycle
    for cycle in cycles:
        _check_cycle(cycle, adjacency)
    # One cycle per strongly connected component that has one.
    components = _cyclic_components(adjacency)
    assert sorted(sorted(c) for c in components) == sorted(
        sorted(next(c for c in components if cycle[0] in c)) for cycle in cycles
    )

    # Started from some nodes only: the cycles reachable from them, found through `edges`.
    start = data.draw(st.lists(st.integers(0, count - 1), unique=True), label="start")
    reachable = _reach(adjacency, start)
    partial = find_cycles(start, adjacency.__getitem__)
    wanted = sorted(sorted(c) for c in components if c <= reachable)
    for cycle in partial:
        _check_cycle(cycle, adjacency)
    assert wanted == sorted(
        sorted(next(c for c in components if cycle[0] in c)) for cycle in partial
    )


DEEP = 5_000


def _deep_cases() -> dict[str, dict[int, list[int]]]:
    chain = {n: [n + 1] for n in range(DEEP)} | {DEEP: []}
    ring = {n: [(n + 1) % DEEP] for n in range(DEEP)}
    # A cycle upstream of a long chain: nothing can be peeled off first, so the whole chain
    # goes through the strongly-connected-component search.
    cycle_then_chain = {0: [1], 1: [0, 2]} | {n: [n + 1] for n in range(2, DEEP)} | {DEEP: []}
    chain_then_cycle = {n: [n + 1] for n in range(DEEP)} | {DEEP: [DEEP - 1]}
    return {
        "chain": chain,
        "ring": ring,
        "cycle_then_chain": cycle_then_chain,
        "chain_then_cycle": chain_then_cycle,
    }


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("chain", []),
        ("ring", [[*range(DEEP), 0]]),
        ("cycle_then_chain", [[0, 1, 0]]),
        ("chain_then_cycle", [[DEEP - 1, DEEP, DEEP - 1]]),
    ],
)
def test_find_cycles_handles_deep_graphs(case: str, expected: list[list[int]]) -> None:
    adjacency = _deep_cases()[case]
    assert find_cycles(list(adjacency), adjacency.__getitem__) == expected
    assert find_cycles([0], adjacency.__getitem__) == expected  # found by following edges


# --------------------------------------------------------------------- 5: incremental cost


class CountingGraph(Graph):
    """Counts readiness re-evaluations: the unit of work of an update."""

    def __init__(self, tracks: Iterable[TrackSpec] = ()) -> None:
        self.rechecks = 0
        super().__init__(tracks)

    def _recheck(self, key: TaskKey) -> None:
        self.rechecks += 1
        super()._recheck(key)


@pytest.mark.parametrize("dependents_in", ["big", "own"])
def test_a_status_change_costs_in_proportion_to_its_dependents(dependents_in: str) -> None:
    a = TaskKey("a", "A")
    many = tuple(NodeSpec(TaskKey("big", f"x{i}"), (2, i)) for i in range(2_000))
    waiting = tuple(
        NodeSpec(TaskKey(dependents_in, f"d{i}"), (1, 2_000 + i), deps=(a,)) for i in range(3)
    )
    big = many + waiting if dependents_in == "big" else many
    tracks = [TrackSpec("a", (NodeSpec(a, (0, 0)),)), TrackSpec("big", big)]
    if dependents_in == "own":
        tracks.append(TrackSpec("own", waiting))
    graph = CountingGraph(tracks)
    assert graph.ready_count() == 2_001

    graph.rechecks = 0
    delta = graph.set_status(a, Status.COMPLETE)
    assert graph.rechecks < 20
    assert set(delta.became_ready) == {n.key for n in waiting}
    assert set(delta.no_longer_ready) == {a}
    assert delta.tracks_done == ("a",)
    assert graph.peek_ready(dependents_in) == waiting[0].key

    graph.rechecks = 0
    graph.set_status(many[7].key, Status.IN_PROGRESS)
    graph.set_status(many[7].key, Status.COMPLETE)
    assert graph.rechecks < 5
