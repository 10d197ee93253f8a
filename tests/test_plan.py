"""The reload plan: what a new version of a queue file changes, in words and as data."""

from __future__ import annotations

from typing import Any

from orchestrator.model import Status, TrackDef
from orchestrator.plan import Ignored, Order, Refused, diff
from orchestrator.schema import load_document


def track(doc: dict[str, Any], name: str = "backend") -> TrackDef:
    definition, problems = load_document(f"tracks/{name}.json", name, doc)
    assert not problems, problems
    assert definition is not None
    return definition


OLD = track(
    {
        "track": {"concurrency": 1},
        "features": [
            {"id": "A", "description": "first", "command": "make a"},
            {"id": "B", "description": "second", "dependencies": ["A"]},
            {"id": "C", "description": "third", "priority": "P1"},
            {"id": "D", "description": "fourth"},
        ],
    }
)


def test_added_removed_changed_dependencies_settings_and_orders() -> None:
    new = track(
        {
            "track": {"concurrency": 2, "start_after": ["other:X"], "env": {"K": "v"}},
            "features": [
                {"id": "A", "description": "first, clearer", "command": "make a2"},
                {"id": "B", "description": "second", "dependencies": ["C", "NEW"]},
                {"id": "C", "description": "third", "priority": "P0", "status": "pending"},
                {"id": "NEW", "description": "new"},
            ],
        }
    )
    plan = diff(
        OLD,
        new,
        orders=[Order("C", Status.PENDING, Status.FAILED)],
        ignored=[Ignored("A", "in_progress")],
        running={"A", "D"},
        paused_now=False,
    )
    assert plan.headline() == (
        "1 added, 1 removed, 2 changed, 1 dependency change, 1 order, 1 status ignored, "
        "trigger changed, settings changed"
    )
    assert plan.lines() == [
        "+ add task NEW",
        "- remove task D (running: its attempt is cancelled)",
        "~ change A: description, command (running: applies from its next attempt)",
        "~ change C: priority",
        "~ dependencies of B: +C +NEW -A",
        "~ track.start_after: [] -> [other:X]",
        "~ track.concurrency: 1 -> 2",
        "~ track.env: {} -> {'K': 'v'}",
        "! order C: failed -> pending: run it again with a fresh iteration budget (history kept)",
        "? A: status 'in_progress' is not an order (write pending, skipped, complete or "
        "blocked); the daemon's status is written back",
    ]
    data = plan.data()
    assert data["action"] == "change"
    assert data["changed"] == {"A": ["description", "command"], "C": ["priority"]}
    assert data["dependencies"] == {"B": {"added": ["C", "NEW"], "removed": ["A"]}}
    assert data["settings"] == {"concurrency": [1, 2], "env": [{}, {"K": "v"}]}
    assert data["orders"] == {"C": "pending"}
    assert data["trigger"] == [[], ["other:X"]]


def test_each_order_says_what_it_will_do() -> None:
    effects = {
        (status, current): Order("T", status, current).effect
        for status in (Status.PENDING, Status.SKIPPED, Status.COMPLETE, Status.BLOCKED)
        for current in (Status.FAILED, Status.IN_PROGRESS)
    }
    # The running attempt is the first of the fresh budget (with 3, two more may follow it).
    assert effects[(Status.PENDING, Status.IN_PROGRESS)] == (
        "a fresh iteration budget, its running attempt the first of it (it keeps running)"
    )
    assert effects[(Status.SKIPPED, Status.IN_PROGRESS)] == (
        "cancel its running attempt; do not run it; its dependents may proceed"
    )
    assert effects[(Status.COMPLETE, Status.FAILED)] == (
        "accept it as complete without running it; its dependents proceed"
    )
    assert effects[(Status.BLOCKED, Status.IN_PROGRESS)] == (
        "cancel its running attempt; stop it; its dependents keep waiting"
    )


def test_an_edit_the_daemon_does_not_act_on_is_an_empty_plan() -> None:
    same = track(
        {
            "track": {"concurrency": 1},
            "notes": "a key of the user's",
            "features": [
                {"id": "A", "description": "first", "command": "make a", "owner": "me"},
                {"id": "B", "description": "second", "depends_on": ["A"]},
                {"id": "C", "description": "third", "priority": "P1", "attempts": 3},
                {"id": "D", "description": "fourth"},
            ],
        }
    )
    plan = diff(OLD, same)
    assert plan.empty
    assert plan.lines() == []
    assert plan.headline() == "no change the daemon acts on"


def test_paused_compares_with_the_daemon_not_the_stale_file() -> None:
    paused = track({"track": {"paused": True}, "features": [{"id": "A"}]})
    unpaused = track({"features": [{"id": "A"}]})
    assert diff(paused, unpaused, paused_now=False).empty  # the daemon resumed it already
    assert diff(unpaused, unpaused, paused_now=True).lines() == ["~ track.paused: True -> False"]


def test_reordering_is_told_only_when_the_order_of_kept_tasks_changes() -> None:
    reordered = track({"features": [{"id": "B"}, {"id": "A"}]}, "t")
    original = track({"features": [{"id": "A"}, {"id": "B"}, {"id": "X"}]}, "t")
    assert diff(original, reordered).reordered
    assert not diff(original, track({"features": [{"id": "A"}, {"id": "B"}]}, "t")).reordered


def test_new_and_removed_tracks_and_long_lists() -> None:
    many = track({"features": [{"id": f"T{i}"} for i in range(50)]}, "big")
    added = diff(None, many)
    assert added.headline() == "new track: 50 tasks"
    assert added.lines()[-1] == "  ... and 30 more"
    assert len(added.lines()) == 21
    assert added.data()["counts"]["added"] == 50
    removed = diff(many, None, running={"T3"})
    assert removed.headline().startswith("file removed: 50 tasks leave the schedule")
    assert removed.lines() == ["- cancel running T3 (attempt recorded as interrupted)"]
    assert not removed.empty


def test_the_progress_view_shows_reloads_in_one_line() -> None:
    from orchestrator.progress import _event_line

    plan = diff(OLD, track({"features": [{"id": "A", "description": "first"}]}))
    line = _event_line("reload_plan", "backend", plan.data())
    assert line is not None
    assert line.plain == "reload backend: 3 removed, 1 changed"
    bad = _event_line("queue_file_invalid", "t", {"problems": ["t.json: $: broken", "more"]})
    assert bad is not None
    assert bad.plain == (
        "not applied: t.json: $: broken (+1 more); the last good version stays in force"
    )


def test_a_refused_order_is_listed_with_its_reason_not_as_an_order() -> None:
    plan = diff(
        OLD,
        OLD,
        orders=[Order("B", Status.COMPLETE, Status.COMPLETE, "t:B is complete already")],
        refused=[
            Refused(
                "A",
                Status.SKIPPED,
                Status.COMPLETE,
                "A is complete: skipping it would change nothing",
            )
        ],
    )
    assert not plan.empty
    assert plan.headline() == "1 order, 1 order refused"
    assert plan.lines() == [
        "! order B: complete -> complete: nothing to do: t:B is complete already",
        "x refused A: complete -> skipped: A is complete: skipping it would change nothing; "
        "not applied, the file shows complete again",
    ]
    data = plan.data()
    assert data["orders"] == {"B": "complete"}
    assert data["refused"] == {
        "A": {
            "written": "skipped",
            "status": "complete",
            "reason": "A is complete: skipping it would change nothing",
        }
    }
    assert data["counts"]["refused"] == 1
    only_refused = diff(OLD, OLD, refused=[Refused("A", Status.BLOCKED, Status.SKIPPED, "no")])
    assert only_refused.headline() == "1 order refused"
