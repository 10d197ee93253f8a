"""The three-way merge of daemon-owned fields."""

from __future__ import annotations

from typing import Any

from orchestrator.merge import (
    file_fields,
    merge_task,
    store_fields,
    summary,
    user_changes,
)
from orchestrator.model import Owned, Status
from orchestrator.states import TaskState


def state(**owned: Any) -> TaskState:
    return TaskState(Owned(**owned))


def test_untouched_fields_take_the_store_values() -> None:
    task = {"id": "A", "status": "pending", "attempts": 0, "error": None}
    base = file_fields(task)
    changes = user_changes(task, base)
    assert changes.ordered_status is None
    stored = store_fields(state(status=Status.COMPLETE, attempts=1, completed_at="t"))
    merged = merge_task(task, base, stored, changes)
    assert merged.edits == {"status": "complete", "attempts": 1, "completed_at": "t"}
    assert merged.base["status"] == "complete"
    assert "passes" not in merged.edits  # absent and nothing to say


def test_null_fields_are_not_added() -> None:
    task = {"id": "A"}
    merged = merge_task(task, {}, store_fields(state()), user_changes(task, {}))
    assert merged.edits == {}


def test_a_status_changed_by_the_user_is_an_order() -> None:
    base = {"status": "failed", "attempts": 3}
    for written, status in [
        ("pending", Status.PENDING),
        ("skipped", Status.SKIPPED),
        ("COMPLETED", Status.COMPLETE),
        ("blocked", Status.BLOCKED),
    ]:
        changes = user_changes({"status": written, "attempts": 3}, base)
        assert changes.ordered_status is status


def test_a_status_that_is_no_order_is_reported_and_overwritten() -> None:
    task = {"status": "in_progress"}
    changes = user_changes(task, {"status": "pending"})
    assert changes.ordered_status is None
    assert changes.not_an_order == "in_progress"
    merged = merge_task(task, {"status": "pending"}, store_fields(state()), changes)
    assert merged.edits == {"status": "pending"}


def test_an_alias_spelling_is_kept_when_the_meaning_is_the_same() -> None:
    task = {"status": "completed"}
    merged = merge_task(
        task, dict(task), store_fields(state(status=Status.COMPLETE)), user_changes(task, task)
    )
    assert merged.edits == {}


def test_other_owned_fields_edited_by_the_user_stay_until_the_daemon_changes_them() -> None:
    base = {"status": "failed", "error": "tests fail"}
    task = {"status": "failed", "error": "flaky runner, see #12"}
    changes = user_changes(task, base)
    assert changes.fields == {"error"}
    unchanged_store = store_fields(state(status=Status.FAILED, error="tests fail"))
    merged = merge_task(task, base, unchanged_store, changes)
    assert merged.edits == {}
    assert merged.base["error"] == "flaky runner, see #12"
    # the daemon later records a new error: the later change wins
    newer = store_fields(state(status=Status.FAILED, error="lint fails"))
    merged = merge_task(task, merged.base, newer, user_changes(task, merged.base))
    assert merged.edits == {"error": "lint fails"}


def test_types_are_compared_strictly() -> None:
    task = {"attempts": True}
    merged = merge_task(
        task, {"attempts": 1}, store_fields(state(attempts=1)), user_changes(task, {"attempts": 1})
    )
    assert merged.edits == {}  # user changed it and the daemon did not: kept
    merged = merge_task(task, task, store_fields(state(attempts=1)), user_changes(task, task))
    assert merged.edits == {"attempts": 1}


def test_summary_keeps_other_keys_and_updates_aliases() -> None:
    counts = {
        "total": 3,
        "pending": 1,
        "in_progress": 0,
        "complete": 2,
        "blocked": 0,
        "failed": 0,
        "skipped": 0,
    }
    old = {"total": 9, "complete": 0, "completed": 0, "archived": 4}
    assert summary(counts, old) == {
        "total": 3,
        "complete": 2,
        "completed": 2,
        "archived": 4,
        "pending": 1,
        "in_progress": 0,
        "blocked": 0,
        "failed": 0,
        "skipped": 0,
    }
    assert list(summary(counts, None)) == [
        "total",
        "pending",
        "in_progress",
        "complete",
        "blocked",
        "failed",
        "skipped",
    ]
