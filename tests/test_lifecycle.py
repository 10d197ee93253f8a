"""Signals, a second daemon, and recovery after SIGKILL, with a real daemon process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.clock import SystemClock
from orchestrator.model import TaskKey
from orchestrator.store import Store

from .conftest import WriteTrack
from .process_harness import alive, daemon, start_once, stop, wait_for


def test_sigterm_stops_gracefully_and_records_the_interruption(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    pidfile = tmp_path / "pid"
    write_track("t", [{"id": "LONG", "command": f"echo $$ > {pidfile}; exec sleep 60"}])
    state = tmp_path / "state"
    proc = daemon(tracks_dir, state)
    wait_for(pidfile.exists)
    wait_for(lambda: pidfile.read_text().strip().isdigit())
    child = int(pidfile.read_text())
    assert alive(child)
    started = time.monotonic()
    assert stop(proc) == 0
    assert time.monotonic() - started < 15
    wait_for(lambda: not alive(child), timeout=5)
    store = Store.open(state, SystemClock())
    attempts = store.attempts(TaskKey("t", "LONG"))
    assert [(a.state, a.reason) for a in attempts] == [("interrupted", "the daemon is stopping")]
    task = json.loads((tracks_dir / "t.json").read_text())["features"][0]
    assert task["status"] == "pending"
    log = (tmp_path / "daemon.log").read_text()
    assert '"event": "daemon stopping"' in log
    events = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()]
    stopping = next(e for e in events if e["type"] == "daemon_stopping")
    assert stopping["text"] == "orchestratord is stopping (1 running): asked to stop"
    last = json.loads(log.splitlines()[-1])  # what a service's log ends with
    assert (last["event"], last["exit_status"], last["total"], last["pending"]) == (
        "daemon stopped",
        0,
        1,
        1,
    )


def test_once_ends_its_log_with_why_it_exits_1(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Not on a terminal there is no summary table: the log's last line says what is left."""
    write_track(
        "t",
        [
            {"id": "OK", "command": "true"},
            {"id": "BAD", "command": "exit 3", "max_iterations": 1},
            {"id": "AFTER", "command": "true", "dependencies": ["BAD"]},
        ],
    )
    done = start_once(tracks_dir, tmp_path / "state", "--log-format", "json")
    assert done.returncode == 1
    last = json.loads(done.stderr.splitlines()[-1])
    counts = {k: last[k] for k in ("total", "complete", "failed", "pending", "in_progress")}
    assert (last["event"], last["exit_status"]) == ("daemon stopped", 1)
    assert counts == {"total": 3, "complete": 1, "failed": 1, "pending": 1, "in_progress": 0}
    # The journal (and a notification) says why it stops.
    events = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["text"] == (
        "orchestratord is stopping (0 running): nothing more can run"
    )


def test_once_exits_1_when_a_queue_file_could_not_be_loaded(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A file the daemon could not load ran none of its tasks: they are not complete."""
    write_track("good", [{"id": "OK", "command": "true"}])
    (tracks_dir / "broken.json").write_text('{"features": [{"id": "X", "command": "true"},,]}')
    done = start_once(tracks_dir, tmp_path / "state", "--log-format", "json")
    assert done.returncode == 1, done.stderr
    last = json.loads(done.stderr.splitlines()[-1])
    assert (last["event"], last["exit_status"], last["complete"]) == ("daemon stopped", 1, 1)
    assert [Path(f).name for f in last["files_not_loaded"]] == ["broken.json"]


def test_a_second_sigint_does_not_wait_for_the_grace(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    pidfile = tmp_path / "pid"
    write_track("t", [{"id": "LONG", "command": f"echo $$ > {pidfile}; exec sleep 60"}])
    proc = daemon(tracks_dir, tmp_path / "state", shutdown_grace="30")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit())
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # let the first signal be handled on its own
    assert stop(proc, signal.SIGINT) == 0
    assert time.monotonic() - started < 10  # the grace is 30 s
    assert not alive(int(pidfile.read_text()))


def test_second_start_names_the_running_pid(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    pidfile = tmp_path / "pid"
    write_track("t", [{"id": "LONG", "command": f"echo $$ > {pidfile}; exec sleep 60"}])
    proc = daemon(tracks_dir, tmp_path / "state")
    try:
        wait_for(pidfile.exists)
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "start",
                "--once",
                "--tracks",
                str(tracks_dir),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1
        assert f"another orchestratord (pid {proc.pid}) is running" in second.stderr
    finally:
        stop(proc)


def test_after_sigkill_leftovers_are_ended_and_the_attempt_runs_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    marker, child_pid = tmp_path / "marker", tmp_path / "child.pid"
    script = (
        f"if [ -f {marker} ]; then echo second-run; exit 0; fi; touch {marker}; "
        f"sh -c 'echo $$ > {child_pid}; exec sleep 60' & wait"
    )
    write_track(
        "t", [{"id": "X", "command": script}, {"id": "Y", "command": "true", "dependencies": ["X"]}]
    )
    state = tmp_path / "state"
    proc = daemon(tracks_dir, state)
    wait_for(lambda: child_pid.exists() and child_pid.read_text().strip().isdigit())
    orphan = int(child_pid.read_text())
    proc.kill()
    proc.wait(10)
    assert alive(orphan)  # the dead daemon's child is still there
    json.loads((tracks_dir / "t.json").read_text())  # the file parses
    again = start_once(tracks_dir, state)
    assert again.returncode == 0, again.stderr
    assert not alive(orphan)
    assert "recovered after an unclean stop" in again.stderr
    store = Store.open(state, SystemClock())
    attempts = store.attempts(TaskKey("t", "X"))
    assert [(a.number, a.iteration, a.state, a.verdict) for a in attempts] == [
        (1, 1, "interrupted", None),
        (1, 1, "finished", "PASS"),
    ]
    doc = json.loads((tracks_dir / "t.json").read_text())
    assert [t["status"] for t in doc["features"]] == ["complete", "complete"]
