"""The SQLite store: states, attempts, processes, events, the write-back base."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.errors import StateError
from orchestrator.model import Owned, Status, TaskKey
from orchestrator.states import TaskState
from orchestrator.store import Store, Written


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return 100.0


K = TaskKey("backend", "PROVIDER-010")


def test_states_survive_reopening(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    state = TaskState(
        Owned(status=Status.FAILED, attempts=3, error="boom", files_actually_changed=("a.py",)), 1
    )
    store.put_task(K, state, ("task_failed", K, {"reason": "boom"}))
    store.close()
    again = Store.open(tmp_path, FixedClock())
    assert again.load_tasks() == {K: state}
    events = again.events()
    assert [(e.type, e.key, dict(e.data)) for e in events] == [
        ("task_failed", K, {"reason": "boom"})
    ]
    assert events[0].at == "2026-11-25T08:00:00+00:00"


def test_attempts_and_processes(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    attempt = store.begin_attempt(K, running, 1, 1, "/logs/1.log")
    proc = store.record_process(attempt, "run", ["claude", "-p", "x"], "/w", 4242, 99, "boot")
    assert [p.pid for p in store.open_processes()] == [4242]
    assert store.running_attempts()[0].id == attempt
    store.end_process(proc, 0)
    done = TaskState(Owned(status=Status.COMPLETE, attempts=1))
    store.finish_attempt(attempt, K, done, "PASS", None, 0)
    assert store.open_processes() == []
    assert store.running_attempts() == []
    row = store.attempts(K)[0]
    assert (row.state, row.verdict, row.exit_code, row.log_path) == (
        "finished",
        "PASS",
        0,
        "/logs/1.log",
    )
    assert store.processes(attempt)[0].argv == ("claude", "-p", "x")
    assert store.task(K) == done


def test_interrupting_resets_tasks(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    store.interrupt_attempts(
        [attempt], {K: TaskState(Owned(status=Status.PENDING))}, "daemon stopped"
    )
    row = store.attempts(K)[0]
    assert (row.state, row.reason) == ("interrupted", "daemon stopped")
    assert store.task(K) == TaskState(Owned(status=Status.PENDING))


def test_written_base_round_trip(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    assert store.written("backend") is None
    store.set_written("backend", Written("/t/backend.json", "abc", {"X": {"status": "complete"}}))
    assert store.written("backend") == Written(
        "/t/backend.json", "abc", {"X": {"status": "complete"}}
    )


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_text("not sqlite at all" * 100)
    with pytest.raises(StateError, match="move it aside"):
        Store.open(tmp_path, FixedClock())
