"""What a run leaves running outside its process group is ended: after the run, at stop, at
the next start after a crash (docs/operations.md "What a task leaves running")."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import procs, strays
from orchestrator.model import Owned, Status, TaskKey
from orchestrator.recovery import recover
from orchestrator.states import Event, TaskState
from orchestrator.store import Store

from . import live_harness as lh
from .conftest import WriteTrack
from .daemon_harness import run_once
from .fakes import FixedClock
from .process_harness import alive, wait_for

pytestmark = pytest.mark.skipif(
    not procs.ENVIRON_READABLE, reason="needs /proc/PID/environ (Linux)"
)


def sleeping(seconds: int) -> list[int]:
    """The pids of ``sleep SECONDS`` processes (each test picks a number of its own)."""
    wanted = f"sleep\0{seconds}\0".encode()
    found = []
    for pid in procs.pids():
        try:
            if (procs.PROC / str(pid) / "cmdline").read_bytes() == wanted:
                found.append(pid)
        except OSError:
            continue
    return found


def unique_seconds() -> int:
    return random.randrange(100_000, 999_999)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_held_elsewhere_sees_another_process_holding_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        assert strays.held_elsewhere(fd) is False
        with open(path, "ab") as out:
            child = subprocess.Popen(["sleep", "30"], stdout=out, start_new_session=True)
        try:
            assert strays.held_elsewhere(fd) is True
        finally:
            child.kill()
            child.wait()
        assert strays.held_elsewhere(fd) is False
    finally:
        os.close(fd)


def test_an_open_during_the_probe_does_not_end_the_daemon(tmp_path: Path) -> None:
    """While the lease is held, another process opening the file makes the kernel signal the
    holder: SIGIO by default, which would end the daemon. The probe is made to last while a
    child opens the file; the process must survive it and tell the file was free."""
    script = textwrap.dedent(
        f"""
        import fcntl, os, subprocess, time
        from orchestrator import strays
        path = {str(tmp_path / "x.log")!r}
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        real = fcntl.fcntl
        children = []
        def slow(fd, cmd, arg=0):
            result = real(fd, cmd, arg)
            if cmd == fcntl.F_SETLEASE and arg == fcntl.F_WRLCK:
                children.append(subprocess.Popen(["cat", path]))
                time.sleep(0.5)  # the child's open waits for the lease: the kernel signals
            return result
        fcntl.fcntl = slow
        print(strays.held_elsewhere(fd))
        fcntl.fcntl = real
        print(children[0].wait(10))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done
    assert done.stdout.split() == ["False", "0"]


def test_the_markers_each_moment_ends() -> None:
    ours, gone = os.getpid(), dead_pid()
    assert procs.marker_parts(procs.launch_marker("s1", ours, 3)) == ("s1", ours, 3)
    assert procs.marker_parts("anything a person wrote") is None
    daemon = strays.of_daemon("s1", ours, keep={7})
    assert daemon(f"s1.{ours}.3")
    assert not daemon(f"s1.{ours}.7")
    assert not daemon(f"s1.{ours + 1}.3")
    assert not daemon(f"s2.{ours}.3")
    assert not daemon(f"s1.{ours}.3.4")
    assert not daemon("s1")
    store = strays.of_store("s1", keep={7})
    assert store(f"s1.{gone}.3")
    assert not store(f"s1.{gone}.7")
    assert not store(f"s1.{ours}.3")  # a live daemon's: a copy of the state directory
    assert not store(f"s2.{gone}.3")
    assert not store("s1.x.3")
    assert not store("s1.")


@pytest.mark.anyio
async def test_a_stray_is_ended_before_the_next_task_and_at_stop(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    held, closed, kept = unique_seconds(), unique_seconds(), unique_seconds()
    write_track(
        "t",
        [
            {  # a process of its own session that keeps the log as its output
                "id": "A",
                "command": f"setsid sleep {held} & sleep 0.3; echo started",
            },
            {
                "id": "B",
                "dependencies": ["A"],
                "command": f"! pgrep -f '^sleep {held}$'",
            },
            {  # one that closed its output: only the stop finds it
                "id": "C",
                "command": f"setsid sleep {closed} >/dev/null 2>&1 </dev/null & sleep 0.3",
            },
            {  # started without the marker, as the docs say: left running
                "id": "D",
                "command": f"env -u ORCHESTRATORD_LAUNCH setsid sleep {kept} & sleep 0.3",
            },
        ],
    )
    try:
        run = await run_once(tracks_dir)
        assert run.code == 0
        assert [run.task("t", i)["attempts"] for i in "ABCD"] == [1, 1, 1, 1]
        log = (run.state / "logs" / "t" / "A.attempt-1.log").read_text()
        assert "--- ended what the command left running: pid " in log
        assert sleeping(held) == []
        assert sleeping(closed) == []
        assert len(sleeping(kept)) == 1
        assert "--- ended" not in (run.state / "logs" / "t" / "D.attempt-1.log").read_text()
    finally:
        for pid in sleeping(held) + sleeping(closed) + sleeping(kept):
            os.kill(pid, 9)


def test_a_dead_daemons_strays_are_ended_at_start(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    key = TaskKey("t", "X")
    attempt = store.begin_attempt(key, TaskState(Owned(status=Status.IN_PROGRESS)), 1, 1, "l")
    store.finish_attempt(attempt, key, TaskState(Owned(status=Status.COMPLETE)), "PASS", None, 0)
    # An attempt whose run goes on on a cluster (re-attached to): what carries its marker stays.
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    remote = store.begin_attempt(TaskKey("t", "R"), running, 1, 1, "l")
    store.record_process(remote, "run", ["sh"], "/", None, None, None, executor="ray", run_id="r")
    dead = dead_pid()
    seconds = unique_seconds()
    children = {
        name: subprocess.Popen(
            ["sleep", str(seconds)],
            env={**os.environ, procs.LAUNCH_VAR: marker},
            start_new_session=True,
        )
        for name, marker in {
            "stray": procs.launch_marker(store.store_id, dead, attempt),
            "live daemon": procs.launch_marker(store.store_id, os.getpid(), attempt),
            "other store": procs.launch_marker("0123456789abcdef", dead, attempt),
            "remote run": procs.launch_marker(store.store_id, dead, remote),
        }.items()
    }
    try:
        wait_for(lambda: len(sleeping(seconds)) == 4)
        result = recover(store, grace=2.0)
        assert result.processes_ended == (children["stray"].pid,)
        children["stray"].wait(10)
        assert alive(children["live daemon"].pid)
        assert alive(children["other store"].pid)
        assert alive(children["remote run"].pid)
    finally:
        for child in children.values():
            child.kill()
            child.wait()


@pytest.mark.anyio
async def test_a_run_cut_short_has_its_strays_ended_though_they_closed_the_log(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A test fixture's server, in a session of its own with its output elsewhere, whose test
    run is killed at ``verify_timeout`` or by a signal (its teardown never runs): the next
    attempt, which starts the same server, must not find the port taken. One that a run which
    exited by itself left (say, a build server) is left to the daemon's stop."""
    timed, killed, failed = unique_seconds(), unique_seconds(), unique_seconds()

    def fixture(seconds: int, then: str) -> str:
        return (
            f"if pgrep -f '^sleep {seconds}$'; then exit 3; fi; "
            f"setsid sleep {seconds} >/dev/null 2>&1 </dev/null & sleep 0.3; {then}"
        )

    write_track(
        "t",
        [
            {"id": "V", "command": "true", "verify": [fixture(timed, "sleep 30")]},
            {"id": "K", "command": fixture(killed, "kill -KILL $$")},
            {"id": "F", "command": fixture(failed, "exit 1")},
        ],
        track={"concurrency": 3, "max_iterations": 2, "verify_timeout": 1},
    )
    try:
        run = await run_once(tracks_dir, kill_grace=0.5)
        logs = run.state / "logs" / "t"
        assert "exited with status 3" in (logs / "F.attempt-2.log").read_text()
        assert sleeping(failed) == []  # at the stop
        for ident, name in (("V", "verification command 1"), ("K", "command")):
            first = (logs / f"{ident}.attempt-1.log").read_text()
            assert f"--- ended what the {name} left running: pid " in first
            second = (logs / f"{ident}.attempt-2.log").read_text()
            assert "--- ended what" in second  # it ran as far as the first did
            assert "exited with status 3" not in second  # and found no server left over
    finally:
        for pid in sleeping(timed) + sleeping(killed) + sleeping(failed):
            os.kill(pid, 9)


@pytest.mark.anyio
async def test_an_attempt_ended_by_an_order_has_its_strays_ended_at_once(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A skip ends the run; what it started in a session of its own, its output elsewhere, is
    ended with it, not left running (its port taken) until the daemon stops."""
    seconds = unique_seconds()
    write_track(
        "t",
        [{"id": "R", "command": f"setsid sleep {seconds} >/dev/null 2>&1 </dev/null & sleep 30"}],
    )
    try:
        async with lh.live_daemon(tracks_dir) as live:
            await live.until(lambda: len(sleeping(seconds)) == 1)
            live.engine.order(TaskKey("t", "R"), Event.ORDER_SKIP, "skip it")
            log = live.state / "logs" / "t" / "R.attempt-1.log"
            await live.until(lambda: "--- ended what the command left running" in log.read_text())
            assert sleeping(seconds) == []
    finally:
        for pid in sleeping(seconds):
            os.kill(pid, 9)


def test_the_strays_found_at_once_share_one_grace_period(tmp_path: Path) -> None:
    """Each of two strays ends on SIGTERM only once the other has had it too. Ended one after
    the other (SIGTERM, the grace, SIGKILL, then the next), the first would wait for the other
    until killed: a stop with several strays would take a grace period each."""
    marker = procs.launch_marker("0123456789abcdef", dead_pid(), 1)

    def stray(me: str, other: str) -> subprocess.Popen[bytes]:
        on_term = (
            f"touch {me}.term; while [ ! -e {other}.term ]; do sleep 0.05; done; "
            f"touch {me}.exited; exit 0"
        )
        return subprocess.Popen(
            ["sh", "-c", f"trap '{on_term}' TERM; touch {me}.up; while :; do sleep 0.05; done"],
            cwd=tmp_path,
            env={**os.environ, procs.LAUNCH_VAR: marker},
            start_new_session=True,
        )

    children = [stray("a", "b"), stray("b", "a")]
    try:
        wait_for(lambda: (tmp_path / "a.up").exists() and (tmp_path / "b.up").exists())
        ended = strays.end(marker.__eq__, grace=20.0)
        assert set(ended) >= {child.pid for child in children}
        assert (tmp_path / "a.exited").exists()
        assert (tmp_path / "b.exited").exists()
    finally:
        for child in children:
            child.kill()
            child.wait()
