"""Recovery after a crash: children with no record are found by their launch marker."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator import procs
from orchestrator.model import Owned, Status, TaskKey
from orchestrator.recovery import recover
from orchestrator.states import TaskState
from orchestrator.store import Store

from .fakes import FixedClock
from .process_harness import alive, wait_for

pytestmark = pytest.mark.skipif(
    not procs.ENVIRON_READABLE, reason="needs /proc/PID/environ (Linux)"
)

K = TaskKey("t", "X")


@contextmanager
def session(
    script: str, env: dict[str, str] | None = None, stdout: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``sh -c script`` leading a process group of its own, killed whole at the end."""
    leader = subprocess.Popen(["sh", "-c", script], env=env, stdout=stdout, start_new_session=True)
    try:
        yield leader
    finally:
        procs.terminate_group(leader.pid, signal.SIGKILL)
        leader.wait(10)


@contextmanager
def group(marker: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process group like the daemon's children: a leader (with a child of its own) whose
    environment carries ``marker``."""
    with session("sleep 60 & wait", {**os.environ, procs.LAUNCH_VAR: marker}) as leader:
        wait_for(lambda: len(procs.group_members(leader.pid)) == 2)
        yield leader


def test_an_unrecorded_child_of_a_running_attempt_is_found_and_ended(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    ours = procs.launch_marker(store.store_id, os.getpid(), attempt)
    other_store = procs.launch_marker("0123456789abcdef", os.getpid(), attempt)
    other_attempt = procs.launch_marker(store.store_id, os.getpid(), attempt + 1)
    with group(ours) as leader, group(other_store) as stranger, group(other_attempt) as done:
        members = procs.group_members(leader.pid)
        first = procs.process_start_ticks(leader.pid)
        assert procs.find_launched({ours}) == {leader.pid: first}  # the group, from its start
        result = recover(store, grace=2.0)
        assert sorted(result.processes_ended) == members
        assert result.attempts_interrupted == (attempt,)
        wait_for(lambda: not any(alive(pid) for pid in members))
        assert alive(stranger.pid)  # another state directory's child
        assert alive(done.pid)  # an attempt the store does not show running
    assert store.running_attempts() == []


def test_the_log_of_an_attempt_the_dead_daemon_left_says_it_was_interrupted(
    tmp_path: Path,
) -> None:
    log = tmp_path / "X.attempt-1.log"
    log.write_text("=== t:X attempt 1 ===\n$ make\nhalf of the output\n")
    store = Store.open(tmp_path, FixedClock())
    store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, str(log))
    recover(store, grace=1.0)
    assert log.read_text().splitlines()[-2:] == [
        "half of the output",
        "--- interrupted: the daemon stopped (or was killed) during this attempt",
    ]


def test_a_group_found_by_a_later_process_starts_at_its_earliest(tmp_path: Path) -> None:
    """Whichever process of a group shows the marker (the first listed may not be the
    leader: pids wrap), the group's start is its earliest process's, which ``end_leftovers``
    checks the leader against."""
    marker = procs.launch_marker("0123456789abcdef", os.getpid(), 1)
    with session(f"sleep 0.1; {procs.LAUNCH_VAR}={marker} sleep 60 & wait") as leader:
        wait_for(lambda: len(procs.find_launched({marker})) == 1)
        first = procs.process_start_ticks(leader.pid)
        (member,) = [pid for pid in procs.group_members(leader.pid) if pid != leader.pid]
        assert procs.process_start_ticks(member) != first  # started 0.1 s after the leader
        assert procs.find_launched({marker}) == {leader.pid: first}


def test_a_recorded_child_is_ended_once(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    with group(procs.launch_marker(store.store_id, os.getpid(), attempt)) as leader:
        ticks = procs.process_start_ticks(leader.pid)
        store.record_process(attempt, "run", ["sh"], "/", leader.pid, ticks, procs.boot_id())
        members = procs.group_members(leader.pid)
        assert sorted(recover(store, grace=2.0).processes_ended) == members


@pytest.mark.parametrize("reaped", [True, False], ids=["leader-reaped", "leader-zombie"])
def test_an_unrecorded_group_whose_leader_has_ended_is_found_and_ended(
    tmp_path: Path, reaped: bool
) -> None:
    """The leader of an unrecorded child's group ended while no daemon ran (reaped by init,
    or a zombie nobody reaps): what it left running in its group is ended all the same."""
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    env = {
        **os.environ,
        procs.LAUNCH_VAR: procs.launch_marker(store.store_id, os.getpid(), attempt),
    }
    with session("sleep 60 >/dev/null 2>&1 & echo $!", env, subprocess.PIPE) as leader:
        assert leader.stdout is not None
        left = int(leader.stdout.readline())
        leader.stdout.close()
        if reaped:
            leader.wait(10)
        else:
            wait_for(lambda: procs.group_members(leader.pid) == [left])  # the leader: a zombie
        assert sorted(recover(store, grace=2.0).processes_ended) == [left]
        wait_for(lambda: not alive(left))


def test_a_recorded_group_refused_for_its_start_is_found_by_its_marker(tmp_path: Path) -> None:
    """A record whose start ticks are off (taken late on a loaded machine) makes the group
    look reused, and the record alone ends nothing; the marker proves the group ours."""
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    with group(procs.launch_marker(store.store_id, os.getpid(), attempt)) as leader:
        ticks = procs.process_start_ticks(leader.pid)
        assert ticks is not None
        late = ticks + 10 * procs.TICK_SLACK
        store.record_process(attempt, "run", ["sh"], "/", leader.pid, late, procs.boot_id())
        assert procs.end_leftovers(leader.pid, late, procs.boot_id(), 2.0) == []
        members = procs.group_members(leader.pid)
        assert sorted(recover(store, grace=2.0).processes_ended) == members


def test_recorded_groups_that_ignore_sigterm_share_one_grace_period(tmp_path: Path) -> None:
    """Every recorded group of the dead daemon gets SIGTERM before any gets SIGKILL: ending
    them one after the other would hold the start-up for a grace period per group (minutes,
    with many attempts that ignore SIGTERM; a service manager gives up on the start first).
    Each leader ignores SIGTERM and, when it gets it, writes how many leaders are alive."""
    store = Store.open(tmp_path, FixedClock())
    pids, seen = tmp_path / "pids", tmp_path / "seen"
    count = (
        f"n=0; for p in $(cat {pids}); do read -r s < /proc/$p/stat && set -- $s && "
        '[ "$3" != Z ] && n=$((n+1)); done; echo $n >>'
    )
    loop = "while :; do sleep 0.05 2>/dev/null; done"
    script = f"trap '{count} {seen}' TERM; echo $$ >> {pids}; {loop}"
    with session(script) as a, session(script) as b, session(script) as c:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3)
        for n, leader in enumerate((a, b, c)):
            key = TaskKey("t", f"X{n}")
            state = TaskState(Owned(status=Status.IN_PROGRESS))
            attempt = store.begin_attempt(key, state, 1, 1, "l")
            ticks = procs.process_start_ticks(leader.pid)
            store.record_process(attempt, "run", ["sh"], "/", leader.pid, ticks, procs.boot_id())
        result = recover(store, grace=1.0)
        assert {a.pid, b.pid, c.pid} <= set(result.processes_ended)
        assert seen.read_text().split() == ["3", "3", "3"]
