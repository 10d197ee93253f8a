"""The cross-track graph on hand-made examples (properties live in test_graph_properties)."""

from __future__ import annotations

from orchestrator.graph import Graph, NodeSpec, TrackSpec
from orchestrator.model import Status, TaskKey, TrackAll

B = "backend"
P = "patient"


def k(track: str, ident: str) -> TaskKey:
    return TaskKey(track, ident)


def three_tracks() -> Graph:
    backend = TrackSpec(
        B,
        (
            NodeSpec(k(B, "010"), (0, 0)),
            NodeSpec(k(B, "012"), (0, 1), (k(B, "010"),)),
            NodeSpec(k(B, "013"), (0, 2), (k(B, "012"),)),
        ),
    )
    patient = TrackSpec(
        P,
        (
            NodeSpec(k(P, "009"), (1, 0)),
            NodeSpec(k(P, "017"), (0, 1)),
            NodeSpec(k(P, "016"), (0, 2), (TrackAll(B), k(P, "009"))),
        ),
        trigger=(k(B, "013"),),
    )
    return Graph([backend, patient])


def test_trigger_holds_back_a_whole_track_until_it_fires() -> None:
    g = three_tracks()
    assert g.ready_in_order(B) == [k(B, "010")]
    assert g.ready_in_order(P) == []
    assert not g.trigger_holds(P)
    g.set_status(k(B, "010"), Status.COMPLETE)
    g.set_status(k(B, "012"), Status.COMPLETE)
    delta = g.set_status(k(B, "013"), Status.COMPLETE)
    assert delta.triggers_fired == (P,)
    assert set(delta.became_ready) == {k(P, "009"), k(P, "017")}
    assert delta.tracks_done == (B,)
    # priority first (017 is P0, 009 is P1), then file order
    assert g.peek_ready(P) == k(P, "017")
    assert g.ready_in_order(P) == [k(P, "017"), k(P, "009")]


def test_track_star_waits_for_every_task_of_the_track() -> None:
    g = three_tracks()
    for ident in ("010", "012", "013"):
        g.set_status(k(B, ident), Status.COMPLETE)
    g.set_status(k(P, "009"), Status.COMPLETE)
    assert g.is_ready(k(P, "016"))
    delta = g.set_status(k(B, "013"), Status.PENDING)  # reopened by the user
    assert k(P, "016") in delta.no_longer_ready
    assert k(P, "016") not in delta.became_ready


def test_skipped_counts_as_done_failed_and_blocked_do_not() -> None:
    g = three_tracks()
    g.set_status(k(B, "010"), Status.FAILED)
    assert not g.is_ready(k(B, "012"))
    g.set_status(k(B, "010"), Status.BLOCKED)
    assert not g.is_ready(k(B, "012"))
    g.set_status(k(B, "010"), Status.SKIPPED)
    assert g.is_ready(k(B, "012"))


def test_pauses() -> None:
    g = three_tracks()
    g.pause_track(B)
    assert g.ready_count(B) == 0
    assert g.explain(k(B, "010")).track_paused
    g.pause_track(B, False)
    g.pause_task(k(B, "010"))
    assert not g.is_ready(k(B, "010"))
    assert g.explain(k(B, "010")).task_paused


def test_explain_names_unmet_deps_trigger_and_root_blockers() -> None:
    g = three_tracks()
    g.set_status(k(B, "010"), Status.FAILED)
    expl = g.explain(k(P, "016"))
    assert not expl.ready
    assert [str(w.target) for w in expl.deps] == ["backend:*", "patient:009"]
    assert [str(w.target) for w in expl.trigger] == ["backend:013"]
    assert expl.deps[0].remaining == 3
    # 009 waits for the trigger too, so the one root of the whole wait is the failed 010.
    assert expl.blockers == (k(B, "010"),)


def test_replacing_a_track_keeps_cross_track_state_right() -> None:
    g = three_tracks()
    g.set_status(k(B, "010"), Status.COMPLETE)
    # The backend file is edited: 013 no longer depends on 012 and is already complete.
    new_backend = TrackSpec(
        B,
        (
            NodeSpec(k(B, "010"), (0, 0), status=Status.COMPLETE),
            NodeSpec(k(B, "012"), (0, 1), (k(B, "010"),)),
            NodeSpec(k(B, "013"), (0, 2), status=Status.COMPLETE),
        ),
    )
    delta = g.set_track(new_backend)
    assert delta.triggers_fired == (P,)
    assert g.is_ready(k(B, "012"))
    assert g.is_ready(k(P, "017"))


def test_removing_a_track_makes_its_tasks_unknown_targets() -> None:
    g = three_tracks()
    for ident in ("010", "012", "013"):
        g.set_status(k(B, ident), Status.COMPLETE)
    assert g.is_ready(k(P, "017"))
    delta = g.remove_track(B)
    assert k(P, "017") in delta.no_longer_ready
    expl = g.explain(k(P, "017"))
    assert not expl.trigger[0].exists
    assert k(B, "010") not in g


def test_an_empty_track_is_done() -> None:
    g = Graph([TrackSpec("a"), TrackSpec("b", (NodeSpec(k("b", "x"), (0, 0), (TrackAll("a"),)),))])
    assert g.is_ready(k("b", "x"))


def test_a_dependency_listed_twice_counts_once() -> None:
    g = Graph(
        [
            TrackSpec(
                "a",
                (NodeSpec(k("a", "x"), (0, 0)), NodeSpec(k("a", "y"), (0, 1), (k("a", "x"),) * 2)),
            )
        ]
    )
    g.set_status(k("a", "x"), Status.COMPLETE)
    assert g.is_ready(k("a", "y"))


def test_held_are_the_pending_tasks_a_failed_or_blocked_one_keeps_waiting() -> None:
    """Through dependencies, ``track:*`` and triggers, directly or through other pending
    tasks: each with the failed or blocked task its wait comes to."""
    g = three_tracks()
    assert g.held() == {}
    g.set_status(k(B, "010"), Status.FAILED)
    assert g.held() == {
        k(B, "012"): k(B, "010"),
        k(B, "013"): k(B, "010"),
        k(P, "009"): k(B, "010"),  # the trigger waits for 013
        k(P, "017"): k(B, "010"),
        k(P, "016"): k(B, "010"),
    }
    g.set_status(k(B, "010"), Status.COMPLETE)
    g.set_status(k(B, "012"), Status.COMPLETE)
    g.set_status(k(B, "013"), Status.COMPLETE)
    g.set_status(k(P, "009"), Status.BLOCKED)
    g.set_status(k(P, "017"), Status.IN_PROGRESS)
    assert g.held() == {k(P, "016"): k(P, "009")}  # a running task is held by nothing
    g.set_status(k(P, "009"), Status.SKIPPED)
    assert g.held() == {}
