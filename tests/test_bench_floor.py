"""The floor benchmark (``python -m bench floor``) does every step it claims, for every task."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.common import run_daemon
from bench.floor import _run_floor
from bench.gen import TRUE, write_chain
from orchestrator.clock import SystemClock
from orchestrator.model import Status, TaskKey
from orchestrator.store import Store

from .process_harness import alive


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


# Each child says what it was given, and T-1 and T-2 end otherwise than with a PASS: the
# verdicts can only be right if the floor spawned the command with the attempt's environment
# in a session of its own, waited for its exit, reaped it and read the end of its log.
SAYS = (
    "/bin/sh",
    "-c",
    'echo "$ORCHESTRATORD_TRACK:$ORCHESTRATORD_TASK_ID $ORCHESTRATORD_ATTEMPT'
    ' ${ORCHESTRATORD_LAUNCH:+marked} $(cut -d" " -f6 /proc/$$/stat)=$$";'
    ' case "$ORCHESTRATORD_TASK_ID" in T-1) echo "<blocked>no key</blocked>";; T-2) exit 3;; esac',
)


def test_the_verdict_comes_from_the_child_its_exit_and_its_log(tmp_path: Path) -> None:
    _run_floor(tmp_path, True, count=3, parallel=2, command=SAYS)
    store = Store.open(tmp_path / "state", SystemClock())
    try:
        verdicts = {}
        for number in range(3):
            key = TaskKey("t", f"T-{number}")
            (attempt,) = store.attempts(key)
            verdicts[key.id] = (attempt.verdict, attempt.exit_code)
            lines = (tmp_path / "logs" / f"T-{number}.attempt-1.log").read_text().splitlines()
            assert lines[0].startswith("$ /bin/sh -c ")  # the header names the command
            said, session = lines[1].rsplit(" ", 1)
            assert said == f"t:T-{number} 1 marked"
            leader, pid = session.split("=")
            assert leader == pid  # a session (and process group) of its own
        assert verdicts == {"T-0": ("PASS", 0), "T-1": ("BLOCKED", 0), "T-2": ("FAIL", 3)}
        assert store.task(TaskKey("t", "T-2")).status is Status.FAILED  # type: ignore[union-attr]
    finally:
        store.close()


def test_children_run_at_once_while_the_loop_waits_for_their_exits(tmp_path: Path) -> None:
    """Each child waits (10 s at most) for the other to start: a wait for an exit that held
    the event loop would run them one after the other, and the first would fail."""
    met = tmp_path / "met"
    met.mkdir()
    wait = (
        f'touch "{met}/$ORCHESTRATORD_TASK_ID"; n=0; '
        f'while [ "$(ls "{met}" | wc -l)" -lt 2 ] && [ $n -lt 500 ]; do'
        " sleep 0.02; n=$((n+1)); done; "
        f'[ "$(ls "{met}" | wc -l)" -ge 2 ]'
    )
    _run_floor(tmp_path, True, count=2, parallel=2, command=("/bin/sh", "-c", wait))
    store = Store.open(tmp_path / "state", SystemClock())
    try:
        for number in range(2):
            (attempt,) = store.attempts(TaskKey("t", f"T-{number}"))
            assert (attempt.verdict, attempt.exit_code) == ("PASS", 0)
    finally:
        store.close()


def test_each_child_is_recorded_and_what_it_left_in_its_group_is_ended(tmp_path: Path) -> None:
    """As the daemon's: the process (argv, pid, group, exit) in the store, and SIGTERM to the
    child's group once it has exited (here a ``sleep`` it left running)."""
    left = tmp_path / "left"
    left.mkdir()
    command = ("/bin/sh", "-c", f'sleep 60 & echo $! > "{left}/$ORCHESTRATORD_TASK_ID"')
    _run_floor(tmp_path, True, count=2, parallel=2, command=command)
    store = Store.open(tmp_path / "state", SystemClock())
    try:
        for number in range(2):
            (attempt,) = store.attempts(TaskKey("t", f"T-{number}"))
            (process,) = store.processes(attempt.id)
            assert (process.argv, process.role, process.exit_code) == (command, "run", 0)
            assert process.pid is not None
            assert process.pgid == process.pid
            assert process.ended_at is not None
    finally:
        store.close()
    sleepers = [int(path.read_text()) for path in left.iterdir()]
    assert len(sleepers) == 2
    deadline = time.monotonic() + 10
    while any(map(alive, sleepers)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(map(alive, sleepers))


@pytest.mark.usefixtures("restore_logging")
def test_the_daemon_start_up_is_told_apart_in_wall_seconds_too(tmp_path: Path) -> None:
    """The floor has no start-up; the daemon's run is also shown from ready on."""
    write_chain(tmp_path / "tracks", 3, [TRUE])
    result = run_daemon(tmp_path / "tracks", tmp_path / "state")
    assert result["code"] == 0
    assert 0 < result["startup_wall"] < result["wall"]
