"""The floor benchmark (``python -m bench floor``) does every step it claims, for every task."""

from __future__ import annotations

from pathlib import Path

from bench.floor import _run_floor
from orchestrator.clock import SystemClock
from orchestrator.model import Status, TaskKey
from orchestrator.store import Store


def test_every_attempt_is_logged_recorded_and_finished(tmp_path: Path) -> None:
    wall, cpu = _run_floor(tmp_path, True, count=12, parallel=2)
    assert wall > 0
    assert cpu > 0
    logs = sorted((tmp_path / "logs").glob("T-*.attempt-1.log"))
    assert len(logs) == 12
    assert all(
        log.read_text() == "$ /bin/true\n" for log in logs
    )  # the header; true prints nothing
    store = Store.open(tmp_path / "state", SystemClock())
    try:
        for number in range(12):
            key = TaskKey("t", f"T-{number}")
            (attempt,) = store.attempts(key)
            assert (attempt.state, attempt.verdict, attempt.exit_code) == ("finished", "PASS", 0)
            state = store.task(key)
            assert state is not None
            assert state.status is Status.COMPLETE
    finally:
        store.close()


def test_without_the_store_nothing_is_recorded(tmp_path: Path) -> None:
    _run_floor(tmp_path, False, count=4, parallel=2)
    assert len(list((tmp_path / "logs").glob("*.log"))) == 4
    assert not list((tmp_path / "state").iterdir())
