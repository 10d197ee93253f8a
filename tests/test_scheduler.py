"""Choosing the next task: priority, fairness between tracks, file order, limits."""

from __future__ import annotations

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
