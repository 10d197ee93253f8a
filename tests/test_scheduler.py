"""Choosing the next task: priority, fairness between tracks, file order, limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.graph import Graph, NodeSpec, TrackSpec
from orchestrator.model import Status, TaskKey
from orchestrator.scheduler import Limits, next_task


def graph() -> Graph:
    return Graph(
        [
            TrackSpec(
                "a", (NodeSpec(TaskKey("a", "1"), (1, 0)), NodeSpec(TaskKey("a", "2"), (0, 1)))
            ),
            TrackSpec(
                "b", (NodeSpec(TaskKey("b", "1"), (0, 0)), NodeSpec(TaskKey("b", "2"), (0, 1)))
            ),
        ]
    )


def drain(g: Graph, limits: Limits, running: dict[str, int]) -> list[str]:
    order = []
    while (key := next_task(g, running, limits, ["a", "b"])) is not None:
        g.set_status(key, Status.IN_PROGRESS)
        running[key.track] = running.get(key.track, 0) + 1
        order.append(str(key))
    return order


def test_priority_first_then_the_less_busy_track_then_file_order() -> None:
    limits = Limits(max_parallel=10, concurrency={"a": 2, "b": 2})
    assert drain(graph(), limits, {}) == ["a:2", "b:1", "b:2", "a:1"]


def test_track_concurrency_and_max_parallel() -> None:
    assert drain(graph(), Limits(max_parallel=10, concurrency={}), {}) == ["a:2", "b:1"]
    assert drain(graph(), Limits(max_parallel=3, concurrency={"a": 5, "b": 5}), {}) == [
        "a:2",
        "b:1",
        "b:2",
    ]
    assert drain(graph(), Limits(max_parallel=4, concurrency={"a": 5, "b": 5}), {"a": 3}) == ["b:1"]


def test_nothing_starts_while_paused() -> None:
    assert next_task(graph(), {}, Limits(4, {}, paused=True), ["a", "b"]) is None


def every_track(
    g: Graph, running: Mapping[str, int], limits: Limits, tracks: Sequence[str]
) -> TaskKey | None:
    """The reference: rank the next task of every track with room, keep the best."""
    if limits.paused or sum(running.values()) >= limits.max_parallel:
        return None
    ranked = []
    for position, name in enumerate(tracks):
        busy = running.get(name, 0)
        key = g.peek_ready(name)
        if busy < limits.concurrency.get(name, 1) and key is not None:
            priority, index = g.node(key).order
            ranked.append(((priority, busy, position, index), key))
    return min(ranked)[1] if ranked else None


TRACKS = ("a", "b", "c", "d")


@given(
    tasks=st.lists(
        st.tuples(st.sampled_from(TRACKS), st.integers(0, 3), st.booleans()), max_size=16
    ),
    running=st.dictionaries(st.sampled_from(TRACKS), st.integers(0, 2)),
    concurrency=st.dictionaries(st.sampled_from(TRACKS), st.integers(1, 3)),
    max_parallel=st.integers(1, 8),
)
def test_the_choice_is_the_best_ranked_of_every_track(
    tasks: list[tuple[str, int, bool]],
    running: dict[str, int],
    concurrency: dict[str, int],
    max_parallel: int,
) -> None:
    """Stopping at the first idle track with the most urgent ready task chooses what ranking
    every track would, through a whole drain."""
    specs = [
        TrackSpec(
            name,
            tuple(
                NodeSpec(TaskKey(name, str(i)), (priority, i), status=status)
                for i, (track, priority, done) in enumerate(tasks)
                if track == name
                for status in [Status.COMPLETE if done else Status.PENDING]
            ),
        )
        for name in TRACKS
    ]
    g = Graph(specs)
    limits = Limits(max_parallel, concurrency)
    while True:
        chosen = next_task(g, running, limits, TRACKS)
        assert chosen == every_track(g, running, limits, TRACKS)
        if chosen is None:
            break
        g.set_status(chosen, Status.IN_PROGRESS)
        running[chosen.track] = running.get(chosen.track, 0) + 1
