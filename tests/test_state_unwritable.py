"""A state directory that cannot be written (a full disk): the daemon stops and loses nothing.

Nothing may be acted on that is not recorded, so when a change cannot be recorded (SQLite
cannot commit, an attempt's log cannot be written) the daemon stops with one plain message
that names the file and the fix; the next start, once there is room, carries on from what was
recorded. Here the daemon's file size limit (``RLIMIT_FSIZE``) stands in for a full disk:
every write past it fails, as on a full disk, but without a file system to fill.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from orchestrator import attempt
from orchestrator.clock import SystemClock
from orchestrator.errors import ControlError, StateError
from orchestrator.lock import StateLock
from orchestrator.model import Status, TaskKey
from orchestrator.states import TaskState
from orchestrator.store import Store
from orchestrator.supervisor import unwrap

from .conftest import WriteTrack
from .control_harness import running_daemon
from .process_harness import clean_env, start_once

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the limit's effect on SQLite is Linux's"
)

TASKS = 40
LIMIT = 256 * 1024
"""Bytes any file of the daemon may grow to: the database's log passes it after a few tasks."""


def _start_limited(
    tracks: Path, state: Path, limit: int, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``start --once`` as a child whose files may grow to ``limit`` bytes at most."""
    argv = [sys.executable, "-m", "orchestrator", "start", "--once", "--no-progress"]
    argv += ["--tracks", str(tracks), "--state-dir", str(state), "--log-format", "json"]

    def limited() -> None:  # only setrlimit, in the child before it execs
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=clean_env(),
        preexec_fn=limited,
    )


def test_a_state_that_cannot_be_written_stops_the_daemon_and_loses_nothing(
    tmp_path: Path,
) -> None:
    tracks, state, ledger = tmp_path / "tracks", tmp_path / "state", tmp_path / "ledger"
    tracks.mkdir()
    items = [{"id": f"T{i}", "command": f"echo T{i} >> {ledger}"} for i in range(TASKS)]
    (tracks / "a.json").write_text(json.dumps({"features": items}, indent=2) + "\n")

    stopped = _start_limited(tracks, state, LIMIT, timeout=120)

    assert stopped.returncode == 1, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    message = stopped.stderr.strip().splitlines()[-1]
    assert message.startswith(f"orchestratord: {state / 'state.db'}: cannot record"), message
    assert "then start the daemon again" in message
    last = json.loads(stopped.stderr.strip().splitlines()[-2])
    assert (last["event"], last["level"]) == ("daemon stopped", "error")
    ran_before = Counter(ledger.read_text().split())
    assert 0 < len(ran_before) < TASKS  # it stopped part-way

    finished = start_once(tracks, state)  # room again: it carries on from what was recorded

    assert finished.returncode == 0, finished.stderr[-2000:]
    doc = json.loads((tracks / "a.json").read_text())
    assert [t["status"] for t in doc["features"]] == ["complete"] * TASKS
    assert doc["summary"]["complete"] == TASKS
    runs = Counter(ledger.read_text().split())
    assert set(runs) == {f"T{i}" for i in range(TASKS)}
    store = Store.open(state, SystemClock())
    try:
        for i in range(TASKS):
            attempts = store.attempts(TaskKey("a", f"T{i}"))
            passes = [a for a in attempts if a.verdict == "PASS"]
            assert len(passes) == 1, attempts
            assert passes[0].id == max(a.id for a in attempts)  # nothing ran after its PASS
            # A run whose PASS could not be recorded ran again; no other ran twice.
            assert runs[f"T{i}"] <= len(attempts), (i, runs[f"T{i}"], attempts)
    finally:
        store.close()
    assert os.path.getsize(state / "state.db") > 0


def test_an_attempt_log_or_failure_output_that_cannot_be_written_stops_the_daemon(
    tmp_path: Path,
) -> None:
    # Without its log an attempt cannot be judged, without the failure output the next one
    # would run blind: both are the state directory's, like the database.
    if os.path.exists("/dev/full"):  # every write there fails as on a full disk
        log = attempt._Log("/dev/full")
        with pytest.raises(StateError, match=r"^/dev/full: cannot write \(No space left"):
            log.write("=== attempt 1\n")
        log.close()
    in_a_file = tmp_path / "a-file"
    in_a_file.write_text("")
    with pytest.raises(StateError, match=r"cannot write .*check its disk and permissions"):
        attempt._Log(str(in_a_file / "attempt-1.log"))
    with pytest.raises(StateError, match="then start the daemon again"):
        attempt.write_failure_file(str(in_a_file / "failure.txt"), "the last failure")


def test_a_database_another_program_keeps_locked_is_named_as_such(tmp_path: Path) -> None:
    store = Store.open(tmp_path, SystemClock())
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a person's sqlite3 shell, in a write
        store._db.execute("PRAGMA busy_timeout=50")  # the daemon waits 5 s; not here
        with pytest.raises(StateError, match="another program keeps it locked"):
            store.put_task(TaskKey("a", "T1"), TaskState())
        other.execute("ROLLBACK")
        store.put_task(TaskKey("a", "T1"), TaskState())  # closed: the store goes on
        assert store.task(TaskKey("a", "T1")) == TaskState()
    finally:
        other.close()
        store.close()


@pytest.mark.anyio
async def test_an_order_that_cannot_be_recorded_stops_the_daemon(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    # Refusing the order and running on would leave the daemon up while its client is told
    # to start it again, and the state as unwritable for the next transition.
    gate, began = tmp_path / "gate", tmp_path / "began"
    write_track(
        "t",
        [
            {"id": "A", "command": f"touch {began}; while [ ! -e {gate} ]; do sleep 0.05; done"},
            {"id": "B", "command": "true", "dependencies": ["A"]},
        ],
    )
    with pytest.raises(StateError, match="another program keeps it locked"):
        await _skip_while_locked(tracks_dir, began)
    store = Store.open(tracks_dir.parent / "state", SystemClock())
    try:
        state = store.task(TaskKey("t", "B")) or TaskState()
        assert state.status is Status.PENDING  # not skipped: that was not recorded
    finally:
        store.close()


async def _skip_while_locked(tracks_dir: Path, began: Path) -> None:
    """Order ``B`` skipped while another program holds the database; wait for the end."""
    async with running_daemon(tracks_dir) as live:
        await live.poll(began.exists)  # its attempt recorded: nothing else to record now
        live.engine.store._db.execute("PRAGMA busy_timeout=50")  # the daemon waits 5 s
        other = sqlite3.connect(live.state / "state.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # a person's sqlite3 shell, in a write
            with pytest.raises(ControlError, match="another program keeps it locked"):
                await live.ask("order", "B", "skip")
        finally:
            other.execute("ROLLBACK")  # closed at once: the daemon could record again
            other.close()
        with anyio.fail_after(20):
            await anyio.sleep_forever()  # until the daemon stops by itself


def test_a_state_dir_full_at_start_up_stops_the_daemon_with_the_line(tmp_path: Path) -> None:
    # Its first write is the lock's pid: on a full disk that failed with a traceback.
    tracks, state = tmp_path / "tracks", tmp_path / "state"
    tracks.mkdir()
    (tracks / "a.json").write_text(json.dumps({"features": [{"id": "T", "command": "true"}]}))

    stopped = _start_limited(tracks, state, 0, timeout=60)  # not a byte fits

    assert stopped.returncode == 1, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    message = stopped.stderr.strip().splitlines()[-1]
    assert message.startswith(f"orchestratord: {state / 'daemon.lock'}: cannot write"), message
    assert "then start the daemon again" in message
    in_a_file = tmp_path / "a-file"
    in_a_file.write_text("")
    with pytest.raises(StateError, match=r"daemon.lock: cannot write .*check its disk"):
        StateLock(in_a_file / "state").acquire()


_OPEN = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # nothing more can be written: a full disk
from orchestrator.clock import SystemClock
from orchestrator.errors import StateError
from orchestrator.store import Store
try:
    Store.open(Path(sys.argv[1]), SystemClock())
except StateError as error:
    print(error)
"""


def test_a_database_that_cannot_be_written_at_start_up_is_not_called_unusable(
    tmp_path: Path,
) -> None:
    # 'move it aside to start afresh' would have the user throw away what was recorded.
    store = Store.open(tmp_path, SystemClock())
    store.put_task(TaskKey("a", "T1"), TaskState())
    store.close()
    said = subprocess.run(
        [sys.executable, "-c", _OPEN, str(tmp_path)],
        capture_output=True,  # a pipe: the limit is on files
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],  # this checkout's package
        env=clean_env(),
    ).stdout
    assert "cannot record in the state database" in said, said
    assert "move it aside" not in said, said
    assert "then start the daemon again" in said, said


def test_runners_that_all_met_an_unwritable_state_report_it_once() -> None:
    # Several tracks' runners recording at once each raise it: one cause, one line.
    first, second = StateError("first"), StateError("second")
    group = BaseExceptionGroup("", [ExceptionGroup("", [first]), ExceptionGroup("", [second])])
    assert unwrap(group) is first
    mixed = BaseExceptionGroup("", [first, ValueError("a defect")])
    assert unwrap(mixed) is mixed  # another failure besides: every one is shown


def test_a_start_gives_back_the_database_log_a_stopped_daemon_left(tmp_path: Path) -> None:
    # A daemon killed, or stopped by a full disk, leaves SQLite's write-ahead log as long as
    # it grew (SQLite reuses it, never shortens it): on a nearly full disk the next start
    # would stop again at once. The next daemon moves it into the database and cuts it.
    tracks, state = tmp_path / "tracks", tmp_path / "state"
    tracks.mkdir()
    (tracks / "a.json").write_text(json.dumps({"features": [{"id": "T", "command": "true"}]}))
    left = Store.open(state, SystemClock())  # never closed, as by a killed daemon
    try:
        for i in range(300):
            left.put_task(TaskKey("old", f"T{i}"), TaskState())
        wal = state / "state.db-wal"
        grown = wal.stat().st_size
        assert grown > 1_000_000

        finished = start_once(tracks, state)

        assert finished.returncode == 0, finished.stderr[-2000:]
        assert wal.stat().st_size < grown / 4  # cut at the start, grown only by this run
        assert len(left.load_tasks()) == 301  # nothing lost on the way
    finally:
        left.close()


def test_sqlite_errors_are_told_apart_by_their_primary_code(tmp_path: Path) -> None:
    # Python gives SQLite's extended code: a busy snapshot (517) is a lock all the same.
    store = Store.open(tmp_path, SystemClock())
    try:
        codes = {
            517: "another program keeps it locked",  # SQLITE_BUSY_SNAPSHOT
            sqlite3.SQLITE_LOCKED: "another program keeps it locked",
            sqlite3.SQLITE_FULL: "free space on the disk that holds",
            sqlite3.SQLITE_IOERR | (3 << 8): "check the disk and the permissions",  # IOERR_WRITE
        }
        for code, fix in codes.items():
            error = sqlite3.OperationalError("what SQLite said")
            error.sqlite_errorcode = code
            message = str(store.unwritable(error))
            assert f"({error}): {fix}" in message, (code, message)
            assert message.endswith("attempts cut short run again.")
    finally:
        store.close()
