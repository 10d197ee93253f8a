"""The commands as a user runs them, against a real daemon process and without one."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator import lock
from orchestrator.cli import cli
from orchestrator.clock import SystemClock
from orchestrator.control import api
from orchestrator.model import Owned, Status, TaskKey
from orchestrator.states import TaskState
from orchestrator.store import Store

from .conftest import WriteTrack
from .daemon_harness import run_once
from .process_harness import ctrl_c_reaches_children, daemon, wait_for


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def gate(tmp_path: Path) -> str:
    return f"while [ ! -e {tmp_path / 'gate'} ]; do sleep 0.05; done"


def file_task(tracks: Path, name: str, ident: str) -> dict[str, object]:
    doc = json.loads((tracks / f"{name}.json").read_text())
    task: dict[str, object] = next(t for t in doc["features"] if t["id"] == ident)
    return task


def test_commands_steer_a_running_daemon(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "RUN", "description": "runs until the gate opens", "command": gate(tmp_path)},
            {"id": "NEXT", "command": "true", "dependencies": ["RUN"]},
        ],
    )
    state = tmp_path / "state"
    where = ("--tracks", str(tracks_dir), "--state-dir", str(state))
    proc = daemon(tracks_dir, state)
    try:
        wait_for((state / api.INFO_NAME).exists)
        wait_for(lambda: file_task(tracks_dir, "t", "RUN").get("status") == "in_progress")

        code, out, _ = run("status", "--json", *where)
        data = json.loads(out)
        assert (code, data["daemon"]["running"], data["daemon"]["pid"]) == (0, True, proc.pid)
        assert [r["ref"] for r in data["tracks"][0]["running"]] == ["t:RUN"]

        code, out, _ = run("status", *where)
        assert code == 0
        assert f"daemon running (pid {proc.pid}" in out
        assert "running: RUN (attempt 1, iteration 1/10" in out

        code, out, _ = run("explain", "NEXT", *where)
        assert code == 0
        assert "    t:RUN (in progress)" in out.splitlines()

        code, out, _ = run("board", *where)
        assert code == 0
        assert "| **t**<br>0/2 done |" in out
        assert "RUN (attempt 1/10)" in out

        code, out, _ = run("logs", "RUN", *where)
        assert (code, out.splitlines()[0]) == (0, "=== t:RUN attempt 1 ===")

        assert run("pause", *where)[:2] == (
            0,
            "the daemon is paused; running attempts finish, nothing new starts\n",
        )
        assert run("resume", *where)[:2] == (0, "the daemon is resumed\n")
        assert run("pause", "t", "--reason", "review", *where)[0] == 0
        assert json.loads((tracks_dir / "t.json").read_text())["track"]["paused"] is True
        assert run("resume", "t", *where)[0] == 0
        assert json.loads((tracks_dir / "t.json").read_text())["track"]["paused"] is False
        log = tmp_path / "daemon.log"  # the foreground log says both, as it does for the daemon
        wait_for(lambda: '"event": "track resumed"' in log.read_text())
        assert '"event": "track paused"' in log.read_text()

        code, out, _ = run("cancel", "RUN", *where)
        assert (code, out) == (0, "t:RUN: its attempt was ended; it is blocked\n")
        task = file_task(tracks_dir, "t", "RUN")
        assert (task["status"], task["error"]) == ("blocked", "cancelled")
        assert run("cancel", "RUN", *where)[:2] == (0, "t:RUN is blocked already; nothing runs\n")
        # Its log says it was cut short: output that just stops reads like a whole run.
        wait_for(lambda: run("logs", "RUN", *where)[1].endswith("\n--- interrupted: cancelled\n"))

        (tmp_path / "gate").touch()
        assert run("retry", "t:RUN", *where)[0] == 0
        wait_for(lambda: file_task(tracks_dir, "t", "NEXT").get("status") == "complete")
        code, _, err = run("skip", "RUN", *where)
        assert (code, err) == (
            1,
            "orchestratord: t:RUN is complete: skipping it would change nothing\n",
        )
        code, _, err = run("retry", "NOPE", *where)
        assert code == 1
        assert "unknown task 'NOPE'" in err

        assert run("reload", *where)[:2] == (0, "every queue file was read again\n")
        code, out, _ = run("stop", *where)
        assert (code, out) == (0, "stopping\nstopped\n")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_changing_commands_without_a_daemon_exit_3(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A"}])
    where = ("--tracks", str(tracks_dir), "--state-dir", str(tmp_path / "state"))
    for args in (
        ("retry", "A"),
        ("cancel", "A"),
        ("skip", "A"),
        ("pause",),
        ("pause", "t"),
        ("resume",),
        ("reload",),
        ("stop",),
    ):
        code, out, err = run(*args, *where)
        assert (code, out) == (3, ""), args
        assert f"no daemon is running with state dir {tmp_path / 'state'}" in err
    assert "set the task's status to pending in its queue file" in run("retry", "A", *where)[2]
    assert not (tmp_path / "state").exists()


@pytest.mark.anyio
async def test_reading_commands_without_a_daemon_use_the_state_database(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "OK", "command": "echo fine"},
            {"id": "BAD", "command": "echo broken; exit 4", "max_iterations": 2},
            {"id": "WAIT", "dependencies": ["BAD"]},
        ],
    )
    finished = await run_once(tracks_dir)
    assert finished.code == 1
    where = ("--tracks", str(tracks_dir), "--state-dir", str(finished.state))

    code, out, _ = run("status", "--json", *where)
    data = json.loads(out)
    assert data["daemon"] == {
        "running": False,
        "source": "state",
        "paused": False,
        "unfinished": [],
    }
    [failed] = data["tracks"][0]["failed"]
    assert (failed["ref"], failed["attempts"], failed["reason"], failed["verdict"]) == (
        "t:BAD",
        2,
        "the command exited with status 4",
        "FAIL",
    )
    api.StatusDocument.model_validate(data)

    code, out, err = run("logs", "BAD", "--attempt", "1", *where)
    assert code == 0
    assert out.splitlines()[:3] == [
        "=== t:BAD attempt 1 ===",
        "$ /bin/sh -c 'echo broken; exit 4'",
        "broken",
    ]
    assert err == "daemon not running: read from the queue files and the state database\n"
    code, _, err = run("logs", "BAD", "--attempt", "3", *where)
    assert (code, err.splitlines()[-1]) == (
        1,
        "orchestratord: t:BAD has no attempt 3 (attempts: 1, 2)",
    )
    assert run("logs", "BAD", "--attempt", "0", *where)[0] == 2

    code, out, _ = run("explain", "WAIT", *where)
    assert "t:BAD is failed after 2 attempts: the command exited with status 4: retry it" in out

    code, out, _ = run("board", *where)
    assert "- **t:BAD** failed after 2 attempts (FAIL): the command exited with status 4" in out
    lane = "| **t**<br>1/3 done<br>1 held by failed or blocked work |"
    assert f"{lane} WAIT |  | OK |  | BAD (FAIL, 2 attempts) |  |" in out


def test_without_a_daemon_the_state_database_wins_over_the_queue_files(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The file says both tasks are pending (its write-back lagging); the database of the
    stopped daemon says one failed, one was in progress when it stopped, and it was paused."""
    write_track("t", [{"id": "F", "command": "false"}, {"id": "P", "command": "true"}])
    state = tmp_path / "state"
    store = Store.open(state, SystemClock())
    try:
        store.put_tasks(
            {
                TaskKey("t", "F"): TaskState(
                    Owned(Status.FAILED, attempts=2, error="the tests failed", passes=False)
                ),
                TaskKey("t", "P"): TaskState(Owned(Status.IN_PROGRESS, attempts=1)),
            }
        )
        store.add_events(("daemon_paused", None, {"reason": "x"}))
    finally:
        store.close()
    assert "status" not in file_task(tracks_dir, "t", "F")

    where = ("--tracks", str(tracks_dir), "--state-dir", str(state))
    code, out, _ = run("status", "--json", *where)
    assert code == 0
    data = json.loads(out)
    api.StatusDocument.model_validate(data)
    assert data["daemon"] == {
        "running": False,
        "source": "state",
        "paused": True,
        "unfinished": [],
    }
    [track] = data["tracks"]
    assert [(f["ref"], f["attempts"], f["reason"]) for f in track["failed"]] == [
        ("t:F", 2, "the tests failed")
    ]
    counts = track["counts"]
    assert (counts["failed"], counts["in_progress"], counts["pending"]) == (1, 0, 1)
    assert ([t["ref"] for t in track["next"]], track["running"]) == (["t:P"], [])

    store = Store.open(state, SystemClock())
    try:
        store.add_events(("daemon_resumed", None, {}))
    finally:
        store.close()
    data = json.loads(run("status", "--json", *where)[1])
    assert data["daemon"]["paused"] is False  # the last of the pauses and resumes counts


def _paused_when_it_stopped(state: Path) -> None:
    """The state of a daemon that was paused ("for the night") when it stopped."""
    store = Store.open(state, SystemClock())
    try:
        store.add_events(("daemon_paused", None, {"reason": "for the night"}))
    finally:
        store.close()


@pytest.mark.anyio
async def test_resume_without_a_daemon_lifts_the_pause_a_stopped_daemon_kept(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A daemon paused when it stopped starts paused, and with --once it then exits at once:
    `resume` must work without a daemon, or a --once user could never run the tasks again."""
    write_track("t", [{"id": "A", "command": "true"}])
    state = tmp_path / "state"
    where = ("--tracks", str(tracks_dir), "--state-dir", str(state))
    _paused_when_it_stopped(state)
    paused = await run_once(tracks_dir, state)
    assert (paused.code, paused.task("t", "A").get("status")) == (1, None)

    code, out, err = run("resume", *where)
    assert (code, err) == (0, "")
    assert out.startswith("the stopped daemon was paused (since ")
    assert out.endswith(
        ": for the night); it is resumed: the next `orchestratord start` starts tasks\n"
    )
    assert lock.holder(state) is None
    assert run("resume", *where)[0] == 3  # not paused any more: there is nothing to resume

    resumed = await run_once(tracks_dir, state)
    assert (resumed.code, resumed.task("t", "A")["status"]) == (0, "complete")


def test_without_a_daemon_status_and_board_say_the_stopped_daemon_is_paused(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """As explain does: the next start starts nothing until `resume`."""
    write_track("t", [{"id": "A", "command": "true"}])
    state = tmp_path / "state"
    where = ("--tracks", str(tracks_dir), "--state-dir", str(state))
    _paused_when_it_stopped(state)
    assert (
        "- the daemon is paused (`orchestratord resume` continues)."
        in run("explain", "A", *where)[1]
    )
    out = " ".join(run("status", *where)[1].split())
    assert out.startswith(
        "daemon not running: showing the queue files and the state database"
        " PAUSED: `orchestratord resume` lets the next start start tasks"
    )
    board = run("board", *where)[1]
    assert " · daemon not running, PAUSED · " in board


def test_without_a_daemon_a_track_whose_file_has_errors_is_not_said_to_run(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The daemon does not load such a file: none of its tasks is next, or ready."""
    write_track("a", [{"id": "A", "command": "true"}])
    write_track(
        "g",
        [
            {"id": "G1", "command": "true"},
            {"id": "G2", "command": "true", "dependencies": ["nowhere:X"]},
        ],
    )
    where = ("--tracks", str(tracks_dir), "--state-dir", str(tmp_path / "state"))
    data = json.loads(run("status", "--json", *where)[1])
    tracks = {t["name"]: t for t in data["tracks"]}
    assert (tracks["a"]["loaded"], [t["id"] for t in tracks["a"]["next"]]) == (True, ["A"])
    assert (tracks["g"]["loaded"], tracks["g"]["next"], tracks["g"]["ready_count"]) == (
        False,
        [],
        0,
    )
    out = run("status", *where)[1]
    assert "g  (" in out
    assert "not loaded: its queue file has errors (listed below)" in out
    assert "next: G1" not in out
    explained = run("explain", "G1", *where)[1].splitlines()
    assert explained[0] == "g:G1 has every dependency done, but it does not start:"
    assert explained[1].endswith(
        "has 1 error(s): the daemon does not load it, so none of its tasks runs until it is fixed:"
    )
    board = run("board", *where)[1]
    assert "| **g**<br>0/2 done<br>not loaded: its file has errors |" in board


@pytest.mark.anyio
async def test_status_and_board_say_which_pending_tasks_a_failed_one_holds(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Its dependents wait, in another track too, and behind a trigger: `pending` alone
    read as work still to come."""
    write_track("alpha", [{"id": "A2", "command": "exit 3", "max_iterations": 1}])
    write_track(
        "gamma",
        [
            # Listed in file order, not in the order the wait reaches them (G1, then G2).
            {"id": "G2", "command": "true", "dependencies": ["G1"]},
            {"id": "G1", "command": "true", "dependencies": ["alpha:A2"]},
            {"id": "G3", "command": "true"},
        ],
    )
    write_track(
        "delta",
        {"track": {"start_after": ["alpha:A2"]}, "tasks": [{"id": "D1", "command": "true"}]},
    )
    state = tmp_path / "state"
    done = await run_once(tracks_dir, state)
    assert done.code == 1
    where = ("--tracks", str(tracks_dir), "--state-dir", str(state))
    data = json.loads(run("status", "--json", *where)[1])
    held = {t["name"]: [(h["ref"], h["waits_for"]) for h in t["held"]] for t in data["tracks"]}
    assert held == {
        "alpha": [],
        "delta": [("delta:D1", "alpha:A2")],
        "gamma": [("gamma:G2", "alpha:A2"), ("gamma:G1", "alpha:A2")],
    }
    out = run("status", *where)[1]
    assert "held by failed alpha:A2: G2, G1" in out.splitlines()
    assert "held by failed alpha:A2: D1" in out.splitlines()
    board = run("board", *where)[1]
    assert "| **gamma**<br>1/3 done<br>2 held by failed or blocked work |" in board


def test_without_a_daemon_attempts_a_killed_daemon_left_unfinished_are_said(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Killed (or crashed) in the night: its attempts never ended, and what they started may
    still run. Status, the board and explain say so, not only that the task is ready."""
    pidfile = tmp_path / "pid"
    write_track("t", [{"id": "LONG", "command": f"echo $$ > {pidfile}; exec sleep 60"}])
    state = tmp_path / "state"
    proc = daemon(tracks_dir, state)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit())
    proc.kill()
    proc.wait(10)
    orphan = int(pidfile.read_text())
    try:
        where = ("--tracks", str(tracks_dir), "--state-dir", str(state))
        data = json.loads(run("status", "--json", *where)[1])
        assert data["daemon"]["unfinished"] == ["t:LONG"]
        out = " ".join(run("status", *where)[1].split())
        assert (
            "1 attempt the daemon started never finished (it was killed, or left it running on"
            " a cluster): t:LONG; the next start takes it over"
        ) in out
        board = " ".join(run("board", *where)[1].split())
        assert (
            "**1 attempt the daemon started never finished** (it was killed, or left it running"
            " on a cluster): t:LONG; the next start takes it over"
        ) in board
        explained = run("explain", "LONG", *where)[1].splitlines()
        assert explained[-1] == (
            "Its attempt 1 was running when the daemon stopped and never finished: the next"
            " start ends what it left running (or takes its cluster run over) and runs it again."
        )
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_logs_names_each_attempt_number_once_when_an_interrupted_one_ran_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}])
    state = tmp_path / "state"
    key = TaskKey("t", "A")
    log = tmp_path / "A.log"
    log.write_text("=== t:A attempt 1 ===\n")
    store = Store.open(state, SystemClock())
    try:
        running = TaskState(Owned(Status.IN_PROGRESS))
        cut = store.begin_attempt(key, running, 1, 1, str(log))
        store.interrupt_attempts([cut], {key: TaskState(Owned(Status.PENDING))}, "killed")
        again = store.begin_attempt(key, running, 1, 1, str(log))
        done = TaskState(Owned(Status.COMPLETE, attempts=1))
        store.finish_attempt(again, key, done, "PASS", None, 0)
    finally:
        store.close()
    where = ("--tracks", str(tracks_dir), "--state-dir", str(state))
    code, _, err = run("logs", "A", "--attempt", "2", *where)
    assert (code, err.splitlines()[-1]) == (1, "orchestratord: t:A has no attempt 2 (attempts: 1)")


@pytest.mark.anyio
async def test_without_a_daemon_a_status_a_person_wrote_is_the_order_the_next_start_obeys(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}, {"id": "B", "command": "true"}])
    first = await run_once(tracks_dir)
    assert first.code == 0
    where = ("--tracks", str(tracks_dir), "--state-dir", str(first.state))
    path = tracks_dir / "t.json"
    path.write_text(path.read_text().replace('"status": "complete"', '"status": "pending"', 1))
    assert file_task(tracks_dir, "t", "A")["status"] == "pending"  # run A again, says the person

    data = json.loads(run("status", "--json", *where)[1])
    counts = data["tracks"][0]["counts"]
    assert (counts["pending"], counts["complete"]) == (1, 1)
    assert [t["ref"] for t in data["tracks"][0]["next"]] == ["t:A"]
    assert run("explain", "A", *where)[1].startswith("t:A is ready")

    again = await run_once(tracks_dir, first.state)
    assert [a.number for a in again.store().attempts(TaskKey("t", "A"))] == [1, 2]


@pytest.mark.anyio
async def test_status_into_a_pipe_keeps_each_line_whole(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    check = "test -f reports/provider-onboarding/credentialing/step-7-collaborative-agreement.md"
    write_track("t", [{"id": "F", "command": "true", "verify": check, "max_iterations": 1}])
    finished = await run_once(tracks_dir)
    where = ("--tracks", str(tracks_dir), "--state-dir", str(finished.state))
    code, out, _ = run("status", *where)
    assert code == 0
    lines = out.splitlines()
    assert (
        "all tracks: total 1  pending 0  in_progress 0  complete 0  blocked 0  failed 1  "
        "skipped 0" in lines[1]
    )
    assert f"failed: F: verify 1/1 `{check}` exited with status 1" in lines


def test_a_config_that_does_not_load_is_a_message_not_a_traceback(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}])
    bad = tmp_path / "orchestratord.toml"
    bad.write_text("max_paralel = 1\n")
    for args in (("status",), ("explain", "A"), ("logs", "A"), ("stop",), ("retry", "A")):
        result = CliRunner().invoke(cli, [*args, "--config", str(bad)])
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert (result.exit_code, result.stdout) == (2, ""), args
        assert result.stderr == (
            f"orchestratord: {bad}:1: max_paralel: unknown setting; did you mean 'max_parallel'?\n"
        )


def test_status_watch_redraws_when_the_daemon_says_something_changed(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "RUN", "command": gate(tmp_path)}])
    state = tmp_path / "state"
    proc = daemon(tracks_dir, state)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATORD_")}
    argv = [sys.executable, "-m", "orchestrator", "status", "--watch", "--json"]
    argv += ["--tracks", str(tracks_dir), "--state-dir", str(state)]
    watcher = None
    try:
        wait_for((state / api.INFO_NAME).exists)
        with ctrl_c_reaches_children():  # unbuffered: select sees every line not yet read
            watcher = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, bufsize=0
            )
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["daemon"]["running"] is True
        # Nothing happens: nothing is printed (a document per change, not per second).
        assert select.select([watcher.stdout], [], [], 2.5)[0] == []
        (tmp_path / "gate").touch()
        deadline = time.monotonic() + 20
        while True:  # the change is pushed by the daemon: printed without polling
            ready = select.select([watcher.stdout], [], [], deadline - time.monotonic())[0]
            assert ready, "no document after the task completed"
            if json.loads(watcher.stdout.readline())["totals"]["complete"] == 1:
                break
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
    finally:
        if watcher is not None:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
            if watcher.stdout is not None:
                watcher.stdout.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
