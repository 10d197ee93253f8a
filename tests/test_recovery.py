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
def group(marker: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process group like the daemon's children: a leader (with a child of its own) whose
    environment carries ``marker``."""
    env = {**os.environ, procs.LAUNCH_VAR: marker}
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], env=env, start_new_session=True)
    try:
        wait_for(lambda: len(procs.group_members(leader.pid)) == 2)
        yield leader
    finally:
        procs.terminate_group(leader.pid, signal.SIGKILL)
        leader.wait(10)


def test_an_unrecorded_child_of_a_running_attempt_is_found_and_ended(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    ours = procs.launch_marker(store.store_id, os.getpid(), attempt)
    other_store = procs.launch_marker("0123456789abcdef", os.getpid(), attempt)
    other_attempt = procs.launch_marker(store.store_id, os.getpid(), attempt + 1)
    with group(ours) as leader, group(other_store) as stranger, group(other_attempt) as done:
        members = procs.group_members(leader.pid)
        assert [p.pid for p in procs.find_launched({ours})] == [leader.pid]  # not its child
        result = recover(store, grace=2.0)
        assert sorted(result.processes_ended) == members
        assert result.attempts_interrupted == (attempt,)
        wait_for(lambda: not any(alive(pid) for pid in members))
        assert alive(stranger.pid)  # another state directory's child
        assert alive(done.pid)  # an attempt the store does not show running
    assert store.running_attempts() == []


def test_a_recorded_child_is_ended_once(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    attempt = store.begin_attempt(K, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    with group(procs.launch_marker(store.store_id, os.getpid(), attempt)) as leader:
        ticks = procs.process_start_ticks(leader.pid)
        store.record_process(attempt, "run", ["sh"], "/", leader.pid, ticks, procs.boot_id())
        members = procs.group_members(leader.pid)
        assert sorted(recover(store, grace=2.0).processes_ended) == members
