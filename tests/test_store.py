"""The SQLite store: states, attempts, processes, events, the write-back base."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.errors import StateError
from orchestrator.model import Owned, Status, TaskKey
from orchestrator.states import TaskState
from orchestrator.store import WAL_LIMIT, Spend, Store, Written

from .fakes import FixedClock

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


def test_a_record_kept_for_later_goes_into_the_next_transaction(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    attempt = store.begin_attempt(K, running, 1, 1, "/logs/1.log")
    reader = sqlite3.connect(tmp_path / "state.db")

    def committed() -> list[tuple[object, ...]]:
        return reader.execute(
            "SELECT id, role, pid, ended_at, exit_code FROM processes ORDER BY id"
        ).fetchall()

    first = store.record_process(attempt, "run", ["true"], "/", 10, 1, "boot", later=True)
    assert committed() == []
    store.end_process(first, 0)
    second = store.record_process(attempt, "verify 1", ["true"], "/", 11, 1, "boot", later=True)
    assert committed() == []
    store.put_task(K, running)  # any transaction takes them along
    assert committed() == [
        (first, "run", 10, "2026-11-25T08:00:00+00:00", 0),
        (second, "verify 1", 11, None, None),
    ]
    third = store.record_process(attempt, "verify 2", ["true"], "/", 12, 1, "boot")
    assert third == second + 1
    assert [row[0] for row in committed()] == [first, second, third]  # at once: not later
    store.end_process(second, 1)
    store.close()  # closing writes what is kept
    assert committed()[1][3:] == ("2026-11-25T08:00:00+00:00", 1)
    again = Store.open(tmp_path, FixedClock())
    assert again.record_process(attempt, "verify 3", ["true"], "/", 13, 1, "boot") == third + 1


def test_kept_records_and_ends_survive_a_transaction_that_fails(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    attempt = store.begin_attempt(K, running, 1, 1, "/logs/1.log")
    done = store.record_process(attempt, "run", ["true"], "/", 10, 1, "boot")
    kept = store.record_process(attempt, "verify 1", ["true"], "/", 11, 1, "boot", later=True)
    store.end_process(done, 0)
    with pytest.raises(TypeError):  # an event that is not JSON: the transaction rolls back
        store.put_task(K, running, ("task_started", K, {"value": object()}))
    store.put_task(K, running)  # the next one writes what the failed one did not
    rows = [(p.id, p.pid, p.exit_code) for p in store.processes(attempt)]
    assert rows == [(done, 10, 0), (kept, 11, None)]


def test_each_store_has_its_own_id_which_survives_reopening(tmp_path: Path) -> None:
    one = Store.open(tmp_path / "one", FixedClock())
    two = Store.open(tmp_path / "two", FixedClock())
    assert len(one.store_id) == 16
    assert one.store_id != two.store_id
    ident = one.store_id
    one.close()
    assert Store.open(tmp_path / "one", FixedClock()).store_id == ident


def test_interrupting_resets_tasks(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    events = store.interrupt_attempts(
        [attempt], {K: TaskState(Owned(status=Status.PENDING))}, "daemon stopped"
    )
    row = store.attempts(K)[0]
    assert (row.state, row.reason) == ("interrupted", "daemon stopped")
    assert store.task(K) == TaskState(Owned(status=Status.PENDING))
    # The event says which attempt (the one among those given that was the task's).
    said = {"attempt": 1, "reason": "daemon stopped"}
    assert events == [("attempt_interrupted", K, said)]
    assert [(e.type, e.data) for e in store.events()][-1] == ("attempt_interrupted", said)


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


def test_a_schema_1_database_is_migrated_without_losing_anything(tmp_path: Path) -> None:
    import sqlite3

    from orchestrator import store as store_module
    from orchestrator.store import AttemptDetails, HoldRow

    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(store_module._SCHEMA + "\nPRAGMA user_version=1;")
    db.execute(
        "INSERT INTO attempts (track, task_id, number, iteration, state, started_at, verdict,"
        " log_path, daemon_pid) VALUES ('backend', 'PROVIDER-010', 1, 1, 'finished',"
        " '2026-11-25T08:00:00+00:00', 'PASS', '/logs/1.log', 1)"
    )
    db.commit()
    db.close()
    store = Store.open(tmp_path, FixedClock())
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
    (old,) = store.attempts(K)
    assert (old.verdict, old.log_path, old.details) == ("PASS", "/logs/1.log", AttemptDetails())
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    attempt = store.begin_attempt(K, running, 2, 2, "/logs/2.log")
    details = AttemptDetails("claude", 10, 5, 0.5, "abc123", ("a.py",), None)
    store.finish_attempt(attempt, K, TaskState(Owned(Status.COMPLETE, 2)), "PASS", None, 0,
                         details=details)  # fmt: skip
    assert store.attempts(K)[1].details == details
    assert store.spend(track="backend").cost_usd == 0.5
    assert store.spend(track="backend", task_id="PROVIDER-010").tokens == 15
    assert store.spend(since="2026-11-26T00:00:00+00:00").attempts == 0
    store.put_hold(HoldRow("claude", "a", "b", "limit", ("backend",)))
    store.close()
    again = Store.open(tmp_path, FixedClock())
    assert again.holds() == [HoldRow("claude", "a", "b", "limit", ("backend",))]
    again.drop_hold("claude")
    assert again.holds() == []


def test_only_running_attempts_and_open_processes_are_indexed(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    first = store.begin_attempt(K, running, 1, 1, "/logs/1.log")
    process = store.record_process(first, "run", ["true"], "/", 10, 1, "boot")
    store.end_process(process, 0)
    store.finish_attempt(first, K, TaskState(Owned(Status.COMPLETE, 1)), "PASS", None, 0)
    second = store.begin_attempt(K, running, 2, 2, "/logs/2.log")
    store.record_process(second, "run", ["true"], "/", 11, 1, "boot")
    db = store._db
    assert (
        db.execute(
            "SELECT COUNT(*) FROM attempts INDEXED BY attempts_running WHERE state = 'running'"
        ).fetchone()[0]
        == 1
    )
    assert [r.pid for r in store.open_processes()] == [11]
    plan = " ".join(
        str(tuple(row))
        for query in (
            "SELECT * FROM attempts WHERE state = 'running' ORDER BY id",
            "SELECT * FROM processes WHERE ended_at IS NULL ORDER BY id",
        )
        for row in db.execute(f"EXPLAIN QUERY PLAN {query}")
    )
    assert "attempts_running" in plan
    assert "processes_unended" in plan
    assert [a.id for a in store.running_attempts()] == [second]


def test_only_remote_runs_are_indexed_by_run_id(tmp_path: Path) -> None:
    from orchestrator import store as store_module

    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    store.record_process(attempt, "run", ["true"], "/", 10, 1, "boot", run_id="a1-run")
    store.record_process(
        attempt, "verify 1", ["true"], "/", None, None, None, executor="ray:h", run_id="a1-v1"
    )
    db = store._db
    indexed = "SELECT run_id FROM processes INDEXED BY processes_remote WHERE executor != 'local'"
    assert [row[0] for row in db.execute(indexed)] == ["a1-v1"]
    plan = " ".join(
        str(tuple(r)) for r in db.execute(f"EXPLAIN QUERY PLAN {store_module._OPEN_RUN}", ("x",))
    )
    assert "processes_remote" in plan, plan
    found = store.open_run("a1-v1")
    assert found is not None
    assert found.executor == "ray:h"
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not indexes & {"attempts_started", "processes_run"}


def test_spend_reads_only_the_attempts_an_agent_reported_on(tmp_path: Path) -> None:
    from orchestrator import store as store_module
    from orchestrator.store import AttemptDetails

    store = Store.open(tmp_path, FixedClock())
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    done = TaskState(Owned(Status.COMPLETE, 1))
    silent = store.begin_attempt(K, running, 1, 1, "/logs/1.log")
    store.finish_attempt(silent, K, done, "PASS", None, 0)
    spoke = store.begin_attempt(K, running, 2, 2, "/logs/2.log")
    details = AttemptDetails("claude", 10, 5, 0.5)
    store.finish_attempt(spoke, K, done, "PASS", None, 0, details=details)
    assert store.spend_by_track() == {K.track: Spend(15, 0.5, 1)}
    assert store.spend(track=K.track) == Spend(15, 0.5, 1)
    for query, args in ((store_module._SPEND_BY_TRACK, ()), (store_module._SPEND, (None,) * 3)):
        plan = " ".join(
            str(tuple(r)) for r in store._db.execute(f"EXPLAIN QUERY PLAN {query}", args)
        )
        assert "attempts_reported" in plan, plan


def test_the_write_ahead_log_is_cut_back_after_a_burst(tmp_path: Path) -> None:
    # One large transaction grows SQLite's log far past its usual size; without a size limit
    # the file stays that long (SQLite reuses it, never shortens it) for as long as the daemon
    # runs. With one, it is cut back when SQLite next starts the log over.
    store = Store.open(tmp_path, FixedClock())
    wal = tmp_path / "state.db-wal"
    try:
        burst = [("task_started", "t", {"text": "x" * 20_000}) for _ in range(1000)]
        store.put_tasks({TaskKey("t", "A"): TaskState()}, burst)
        assert wal.stat().st_size > 2 * WAL_LIMIT
        store.put_task(TaskKey("t", "B"), TaskState())
        assert wal.stat().st_size <= WAL_LIMIT
        assert len(store.load_tasks()) == 2
    finally:
        store.close()
