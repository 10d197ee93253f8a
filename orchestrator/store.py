"""The store: SQLite (WAL) in the state directory, the source of truth for runtime state.

It keeps every task's state, every attempt (with its processes: argv, pid, process group,
start and end, exit status, verdict, reason, log path), an event journal, and what the daemon
last wrote to each queue file (the base of the three-way merge). Every state change is one
transaction, committed before the daemon acts on it, so a daemon killed at any moment restarts
from a consistent picture: nothing recorded is lost and nothing is invented.

Calls are synchronous and short (WAL with ``synchronous=NORMAL``: a commit survives the
process being killed; only an operating-system crash can lose the last commits).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from .clock import Clock, iso
from .errors import StateError, state_stops
from .model import Owned, Status, TaskKey
from .states import TaskState

SCHEMA_VERSION = 9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    track TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    budget_base INTEGER NOT NULL,
    last_attempt TEXT,
    completed_at TEXT,
    passes INTEGER,
    error TEXT,
    verdict TEXT,
    files_changed TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (track, id)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    track TEXT NOT NULL,
    task_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    verdict TEXT,
    reason TEXT,
    exit_code INTEGER,
    log_path TEXT NOT NULL,
    daemon_pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts (track, task_id, number);
CREATE INDEX IF NOT EXISTS attempts_state ON attempts (state);
CREATE TABLE IF NOT EXISTS processes (
    id INTEGER PRIMARY KEY,
    attempt_id INTEGER NOT NULL REFERENCES attempts (id),
    role TEXT NOT NULL,
    argv TEXT NOT NULL,
    cwd TEXT NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    start_ticks INTEGER,
    boot_id TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    exit_code INTEGER
);
CREATE INDEX IF NOT EXISTS processes_open ON processes (ended_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    mono REAL NOT NULL,
    type TEXT NOT NULL,
    track TEXT,
    task_id TEXT,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS written (
    track TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    base TEXT NOT NULL
);
"""

_REMOTE_RUNS = """
ALTER TABLE processes ADD COLUMN executor TEXT NOT NULL DEFAULT 'local';
ALTER TABLE processes ADD COLUMN run_id TEXT;
CREATE INDEX IF NOT EXISTS processes_run ON processes (run_id);
CREATE TABLE IF NOT EXISTS run_logs (
    run_id TEXT PRIMARY KEY,
    log_offset INTEGER NOT NULL
);
"""
"""Remote runs (schema 2, additive): where each process ran (``executor``: ``local``, or
``ray:ADDRESS``) and its run id, so a restarted daemon re-attaches to remote runs instead
of treating them as leftovers; and how much of each remote run's output is in its log file."""

_AGENT_RUNS = """
ALTER TABLE attempts ADD COLUMN agent TEXT;
ALTER TABLE attempts ADD COLUMN tokens_in INTEGER;
ALTER TABLE attempts ADD COLUMN tokens_out INTEGER;
ALTER TABLE attempts ADD COLUMN cost_usd REAL;
ALTER TABLE attempts ADD COLUMN commit_id TEXT;
ALTER TABLE attempts ADD COLUMN files_changed TEXT;
ALTER TABLE attempts ADD COLUMN saved_ref TEXT;
CREATE INDEX IF NOT EXISTS attempts_started ON attempts (started_at);
CREATE TABLE IF NOT EXISTS holds (
    agent TEXT PRIMARY KEY,
    since TEXT NOT NULL,
    until TEXT NOT NULL,
    reason TEXT NOT NULL,
    tracks TEXT NOT NULL
);
"""
"""Agents and git (schema 3, additive): what each attempt used and produced (agent, tokens,
cost, commit, files, the ref keeping a failed attempt's changes), and usage-limit waits."""

_SMALLER_INDEXES = """
DROP INDEX IF EXISTS attempts_state;
CREATE INDEX IF NOT EXISTS attempts_running ON attempts (state) WHERE state = 'running';
DROP INDEX IF EXISTS processes_open;
CREATE INDEX IF NOT EXISTS processes_unended ON processes (ended_at) WHERE ended_at IS NULL;
"""
"""Smaller indexes (schema 4): only running attempts and open processes are looked up, so only
they are indexed; a finished attempt or an ended process leaves its index instead of moving
within it."""

_SPEND_INDEX = """
CREATE INDEX IF NOT EXISTS attempts_reported ON attempts (track, started_at)
    WHERE tokens_in IS NOT NULL OR tokens_out IS NOT NULL OR cost_usd IS NOT NULL;
"""
"""Spend by track (every ``status``) and budgets read only the attempts an agent reported on
(schema 5): a daemon that has run 100,000 commands does not scan them for each status."""

_STORE_ID = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
"""
"""A random id of this store (schema 6), part of the launch marker in every child's
environment (:mod:`orchestrator.procs`): it tells this state directory's children from those
of any other daemon on the machine."""

_LEANER_INDEXES = """
DROP INDEX IF EXISTS attempts_started;
DROP INDEX IF EXISTS processes_run;
CREATE INDEX IF NOT EXISTS processes_remote ON processes (run_id) WHERE executor != 'local';
"""
"""Indexes only where they are read (schema 7): spend reads ``attempts_reported`` (schema 5),
not ``attempts_started``; only remote runs are looked up by run id. Every attempt and every
process wrote a page of an index nobody read: two of the 13 pages an attempt commits."""

_RUN_LOG_SIZES = """
ALTER TABLE run_logs ADD COLUMN log_size INTEGER;
"""
"""The size of a remote run's log file right after its output was last written (schema 8):
output a daemon killed before journaling it had written is found in the file again, and is
not written a second time (``executors.ray``)."""

_COMMIT_INTENTS = """
ALTER TABLE attempts ADD COLUMN committing TEXT;
ALTER TABLE attempts ADD COLUMN verifies TEXT;
"""
"""The commit a PASS of an attempt was about to put on its branch, recorded before git moved
the branch, and a fingerprint of what that PASS was verified against (schema 9): a daemon
killed in between leaves that commit at HEAD, and the next one records the PASS from it only
when HEAD is exactly that commit and the task still asks for the same (:mod:`gitattempt`)."""

_STEPS: tuple[tuple[int, str], ...] = (
    (2, _REMOTE_RUNS),
    (3, _AGENT_RUNS),
    (4, _SMALLER_INDEXES),
    (5, _SPEND_INDEX),
    (6, _STORE_ID),
    (7, _LEANER_INDEXES),
    (8, _RUN_LOG_SIZES),
    (9, _COMMIT_INTENTS),
)
"""Migrations after the base schema (version 1), each ``(version it brings, script)``, applied
in order, each in its own transaction. Never edit one: add the next."""


@dataclass(frozen=True, slots=True)
class AttemptDetails:
    """What an attempt used and produced, beyond its verdict (schema 3)."""

    agent: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    commit_id: str | None = None
    files_changed: tuple[str, ...] | None = None
    saved_ref: str | None = None
    """Where a FAIL or BLOCKED attempt's changes were kept (a git ref)."""

    def columns(self) -> tuple[Any, ...]:
        files = None if self.files_changed is None else orjson.dumps(self.files_changed).decode()
        return (
            self.agent,
            self.tokens_in,
            self.tokens_out,
            self.cost_usd,
            self.commit_id,
            files,
            self.saved_ref,
        )


_SET_DETAILS = (
    "UPDATE attempts SET agent = ?, tokens_in = ?, tokens_out = ?, cost_usd = ?, commit_id = ?,"
    " files_changed = ?, saved_ref = ? WHERE id = ?"
)
_REPORTED = "(tokens_in IS NOT NULL OR tokens_out IS NOT NULL OR cost_usd IS NOT NULL)"
"""Attempts whose agent reported what it used (the only ones spend is summed over)."""
_SPENT = (
    "COALESCE(SUM(COALESCE(tokens_in, 0) + COALESCE(tokens_out, 0)), 0),"
    " COALESCE(SUM(cost_usd), 0.0), COUNT(*)"
)
# Built from the constants above only (no input): the same columns and filter in both queries.
_SPEND = (
    f"SELECT {_SPENT} FROM attempts WHERE {_REPORTED}"  # noqa: S608
    " AND (?1 IS NULL OR track = ?1) AND (?2 IS NULL OR task_id = ?2)"
    " AND (?3 IS NULL OR started_at >= ?3)"
)
_SPEND_BY_TRACK = f"SELECT track, {_SPENT} FROM attempts WHERE {_REPORTED} GROUP BY track"  # noqa: S608


@dataclass(frozen=True, slots=True)
class Spend:
    """Tokens and USD that attempts used, as far as their agents reported."""

    tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class HoldRow:
    """An agent waiting for its usage limit to reset."""

    agent: str
    since: str
    until: str
    reason: str
    tracks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    key: TaskKey
    number: int
    iteration: int
    state: str
    """``running``, ``finished`` or ``interrupted``."""
    started_at: str
    ended_at: str | None
    verdict: str | None
    reason: str | None
    exit_code: int | None
    log_path: str
    daemon_pid: int
    """The daemon that started it (with the store id, the launch marker of its children)."""
    details: AttemptDetails = AttemptDetails()
    committing: str | None = None
    """The commit a PASS of this attempt was about to put on its branch (schema 9)."""
    verifies: str | None = None
    """What that PASS was verified against (:func:`verification.fingerprint`)."""


@dataclass(frozen=True, slots=True)
class ProcessRow:
    id: int
    attempt_id: int
    role: str
    argv: tuple[str, ...]
    cwd: str
    pid: int | None
    pgid: int | None
    start_ticks: int | None
    boot_id: str | None
    started_at: str
    ended_at: str | None
    exit_code: int | None
    executor: str = "local"
    """``local``, or where a remote run ran (``ray:ADDRESS``)."""
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    at: str
    mono: float
    type: str
    key: TaskKey | None
    data: Mapping[str, Any]
    track: str | None = None
    """The event's track (set for track events as well as task events)."""


@dataclass(frozen=True, slots=True)
class Written:
    """What the daemon last wrote to one queue file."""

    path: str
    digest: str
    base: Mapping[str, Mapping[str, Any]]
    """Task id -> the daemon-owned fields as written."""


EventSpec = tuple[str, TaskKey | str | None, Mapping[str, Any]]
"""An event to journal with a change: (type, task key or track name or None, data)."""


class _Transaction:
    """A store transaction as a context manager (a class: cheaper than a generator, and it
    runs several times per task)."""

    __slots__ = ("_store", "_took")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._took = False
        """Whether the kept process records and ends went into this transaction: they are
        forgotten only once it commits (a rolled-back one leaves them for the next)."""

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        db = store._db
        try:
            db.execute("BEGIN IMMEDIATE")
            if store._later or store._ends:
                db.executemany(_INSERT_PROCESS, store._later.values())
                db.executemany(
                    "UPDATE processes SET ended_at = ?, exit_code = ? WHERE id = ?", store._ends
                )
                self._took = True
        except BaseException as error:
            _roll_back(db)  # (a failed BEGIN began nothing: then there is nothing to end)
            if isinstance(error, sqlite3.Error):
                raise store.unwritable(error) from error
            raise
        return db

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        if exc is not None:
            _roll_back(store._db)
            if isinstance(exc, sqlite3.Error):
                raise store.unwritable(exc) from exc
            return
        try:
            store._db.execute("COMMIT")
        except sqlite3.Error as error:
            _roll_back(store._db)
            raise store.unwritable(error) from error
        if self._took:
            store._later.clear()
            store._ends.clear()


def _primary(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``error`` (its extended code carries more in the high
    bits: ``SQLITE_BUSY_SNAPSHOT`` is a ``SQLITE_BUSY``); None when it has none."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _roll_back(db: sqlite3.Connection) -> None:
    """End a failed transaction, if SQLite has not ended it already (a rollback that fails
    too changes nothing: the database keeps its last committed state)."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


_PUT_TASK = (
    "INSERT INTO tasks (track, id, status, attempts, budget_base, last_attempt,"
    " completed_at, passes, error, verdict, files_changed, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (track, id) DO UPDATE SET status = excluded.status,"
    " attempts = excluded.attempts, budget_base = excluded.budget_base,"
    " last_attempt = excluded.last_attempt, completed_at = excluded.completed_at,"
    " passes = excluded.passes, error = excluded.error, verdict = excluded.verdict,"
    " files_changed = excluded.files_changed, updated_at = excluded.updated_at"
)
"""A task's row, with the values of :func:`_owned_row` in this order."""

_INSERT_PROCESS = (
    "INSERT INTO processes (id, attempt_id, role, argv, cwd, pid, pgid, start_ticks, boot_id,"
    " started_at, executor, run_id, ended_at, exit_code)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_OPEN_RUN = (
    "SELECT * FROM processes WHERE run_id = ? AND executor != 'local' AND ended_at IS NULL"
    " ORDER BY id DESC"
)
"""A remote run's open record (through ``processes_remote``)."""
_ENDED_AT = 12
"""Where ``ended_at`` is in a row of :data:`_INSERT_PROCESS` (``exit_code`` follows)."""


_RUNNING_ATTEMPT = "SELECT track, task_id, number FROM attempts WHERE id = ? AND state = 'running'"


def _numbered(number: int | None, reason: str) -> dict[str, Any]:
    """An ``attempt_interrupted`` event's data."""
    return {"reason": reason} if number is None else {"attempt": number, "reason": reason}


def _owned_row(key: TaskKey, state: TaskState, now: str) -> tuple[Any, ...]:
    o = state.owned
    files = (
        None
        if o.files_actually_changed is None
        else orjson.dumps(o.files_actually_changed).decode()
    )
    return (
        key.track,
        key.id,
        o.status.value,
        o.attempts,
        state.budget_base,
        o.last_attempt,
        o.completed_at,
        None if o.passes is None else int(o.passes),
        o.error,
        o.verification_verdict,
        files,
        now,
    )


def _state_of(row: sqlite3.Row) -> TaskState:
    files = row["files_changed"]
    passes = row["passes"]
    return TaskState(
        owned=Owned(
            status=Status(row["status"]),
            attempts=row["attempts"],
            last_attempt=row["last_attempt"],
            completed_at=row["completed_at"],
            passes=None if passes is None else bool(passes),
            error=row["error"],
            verification_verdict=row["verdict"],
            files_actually_changed=None if files is None else tuple(orjson.loads(files)),
        ),
        budget_base=row["budget_base"],
    )


def _attempt(row: sqlite3.Row) -> AttemptRow:
    files = row["files_changed"]
    return AttemptRow(
        id=row["id"],
        key=TaskKey(row["track"], row["task_id"]),
        number=row["number"],
        iteration=row["iteration"],
        state=row["state"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        verdict=row["verdict"],
        reason=row["reason"],
        exit_code=row["exit_code"],
        log_path=row["log_path"],
        daemon_pid=row["daemon_pid"],
        details=AttemptDetails(
            agent=row["agent"],
            tokens_in=row["tokens_in"],
            tokens_out=row["tokens_out"],
            cost_usd=row["cost_usd"],
            commit_id=row["commit_id"],
            files_changed=None if files is None else tuple(orjson.loads(files)),
            saved_ref=row["saved_ref"],
        ),
        committing=row["committing"],
        verifies=row["verifies"],
    )


def _process(row: sqlite3.Row) -> ProcessRow:
    return ProcessRow(
        id=row["id"],
        attempt_id=row["attempt_id"],
        role=row["role"],
        argv=tuple(orjson.loads(row["argv"])),
        cwd=row["cwd"],
        pid=row["pid"],
        pgid=row["pgid"],
        start_ticks=row["start_ticks"],
        boot_id=row["boot_id"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        exit_code=row["exit_code"],
        executor=row["executor"],
        run_id=row["run_id"],
    )


def _event(row: sqlite3.Row) -> EventRow:
    return EventRow(
        seq=row["seq"],
        at=row["at"],
        mono=row["mono"],
        type=row["type"],
        key=TaskKey(row["track"], row["task_id"]) if row["task_id"] is not None else None,
        data=orjson.loads(row["data"]),
        track=row["track"],
    )


WAL_LIMIT = 8 * 1024 * 1024
"""Bytes the write-ahead log is cut back to each time SQLite starts it over: a burst (importing
thousands of tasks at start-up, a reader holding the log for a while) can grow it far past its
usual few MB, and SQLite would otherwise keep the file that long all night."""


class Store:
    """The daemon's SQLite database. One instance per process; not thread-safe."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self._clock = clock
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the state database: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._ends: list[tuple[str, int | None, int]] = []
        self._later: dict[int, list[Any]] = {}
        """Process records that go into the next transaction, by id (see record_process)."""
        self._last_process = -1
        """The highest process id given out (-1: not read yet)."""
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            self._migrate()
            self.store_id: str = self._db.execute(
                "SELECT value FROM meta WHERE key = 'store_id'"
            ).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if _primary(exc) not in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, None):
                # A full disk or a lock at start-up: the database is fine, keep it.
                raise self.unwritable(exc) from None
            raise StateError(
                f"{path}: not a usable state database ({exc}); move it aside to start afresh"
            ) from None

    @classmethod
    def open(cls, state_dir: Path, clock: Clock) -> Store:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(state_dir / "state.db", clock)

    def close(self) -> None:
        self.flush()
        self._db.close()

    def shrink_log(self) -> None:
        """Move the whole write-ahead log into the database and cut the log to nothing.

        For the daemon at start-up, the only writer then (it holds the lock). A daemon that did
        not close the database (killed, or stopped by a full disk) leaves the log as long as it
        had grown, up to a few MB, and SQLite reuses that space but never gives it back: on a
        nearly full disk the next start would stop again at once.
        """
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as error:
            raise self.unwritable(error) from error

    def unwritable(self, error: sqlite3.Error) -> StateError:
        """The error that stops the daemon when a change cannot be recorded: nothing may be
        acted on that is not recorded, and what was recorded before stays as it was."""
        code = _primary(error)
        if code == sqlite3.SQLITE_FULL:
            fix = f"free space on the disk that holds {self.path.parent}"
        elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            fix = "another program keeps it locked (an open sqlite3 shell?): close that"
        else:
            fix = f"check the disk and the permissions of {self.path.parent}"
        return state_stops(f"{self.path}: cannot record in the state database ({error})", fix)

    def flush(self) -> None:
        """Commit the process records and ends kept for the next transaction, now."""
        if self._later or self._ends:
            with self._tx():
                pass  # the transaction itself records the pending process records and ends

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: written by a newer orchestratord (schema {version}); upgrade"
            )
        if version < 1:
            # executescript commits on its own: each step is one script, one transaction.
            self._db.executescript(f"BEGIN;\n{_SCHEMA}\nPRAGMA user_version=1;\nCOMMIT;")
        for step, script in _STEPS:
            if version < step:
                self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={step};\nCOMMIT;")

    def _tx(self) -> _Transaction:
        """``with self._tx() as db:``: one transaction, committed on leaving, rolled back on
        an exception. Kept process records and ends go into it (and stay kept if it rolls
        back)."""
        return _Transaction(self)

    def _now(self) -> str:
        return iso(self._clock.now())

    def _events(self, events: Sequence[EventSpec], now: str | None = None) -> None:
        """Journal events; ``now``: the transaction's timestamp, when it has one already."""
        if not events:
            return
        now, mono = now or self._now(), self._clock.monotonic()
        rows = []
        for kind, subject, data in events:
            track: str | None
            task_id: str | None
            if isinstance(subject, TaskKey):
                track, task_id = subject.track, subject.id
            else:
                track, task_id = subject, None
            rows.append((now, mono, kind, track, task_id, orjson.dumps(dict(data)).decode()))
        self._db.executemany(
            "INSERT INTO events (at, mono, type, track, task_id, data) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    # ------------------------------------------------------------------ tasks

    def load_tasks(self) -> dict[TaskKey, TaskState]:
        rows = self._db.execute("SELECT * FROM tasks").fetchall()
        return {TaskKey(r["track"], r["id"]): _state_of(r) for r in rows}

    def task(self, key: TaskKey) -> TaskState | None:
        row = self._db.execute(
            "SELECT * FROM tasks WHERE track = ? AND id = ?", (key.track, key.id)
        ).fetchone()
        return None if row is None else _state_of(row)

    def put_tasks(
        self, states: Mapping[TaskKey, TaskState], events: Sequence[EventSpec] = ()
    ) -> None:
        """Record new states for tasks (and their events) in one transaction."""
        now = self._now()
        with self._tx() as db:
            db.executemany(
                _PUT_TASK,
                [_owned_row(key, state, now) for key, state in states.items()],
            )
            self._events(events, now)

    def put_task(self, key: TaskKey, state: TaskState, *events: EventSpec) -> None:
        self.put_tasks({key: state}, events)

    # ------------------------------------------------------------------ attempts

    def begin_attempt(
        self,
        key: TaskKey,
        state: TaskState,
        number: int,
        iteration: int,
        log_path: str,
        *events: EventSpec,
    ) -> int:
        """Record a new running attempt with the task's new state; return its id."""
        now = self._now()
        with self._tx() as db:
            db.execute(
                _PUT_TASK,
                _owned_row(key, state, now),
            )
            cur = db.execute(
                "INSERT INTO attempts (track, task_id, number, iteration, state, started_at,"
                " log_path, daemon_pid) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (key.track, key.id, number, iteration, now, log_path, os.getpid()),
            )
            self._events(events, now)
        attempt_id = cur.lastrowid
        assert attempt_id is not None
        return attempt_id

    def finish_attempt(
        self,
        attempt_id: int,
        key: TaskKey,
        state: TaskState,
        verdict: str,
        reason: str | None,
        exit_code: int | None,
        *events: EventSpec,
        details: AttemptDetails | None = None,
    ) -> None:
        """Record an attempt's verdict together with the task's new state."""
        now = self._now()
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET state = 'finished', ended_at = ?, verdict = ?, reason = ?,"
                " exit_code = ? WHERE id = ?",
                (now, verdict, reason, exit_code, attempt_id),
            )
            if details is not None:
                db.execute(
                    _SET_DETAILS,
                    (*details.columns(), attempt_id),
                )
            db.execute(
                _PUT_TASK,
                _owned_row(key, state, now),
            )
            self._events(events, now)

    def interrupt_attempts(
        self, attempt_ids: Sequence[int], states: Mapping[TaskKey, TaskState], reason: str
    ) -> list[EventSpec]:
        """Mark attempts interrupted (the daemon stopped or died) and reset their tasks; the
        events journaled, one ``attempt_interrupted`` per task reset (with the number of its
        attempt among ``attempt_ids``, if one is)."""
        now = self._now()
        with self._tx() as db:
            numbers: dict[TaskKey, int] = {}
            for attempt_id in attempt_ids:
                row = db.execute(_RUNNING_ATTEMPT, (attempt_id,)).fetchone()
                if row is not None:
                    numbers[TaskKey(row["track"], row["task_id"])] = row["number"]
            db.executemany(
                "UPDATE attempts SET state = 'interrupted', ended_at = ?, reason = ?"
                " WHERE id = ? AND state = 'running'",
                [(now, reason, attempt_id) for attempt_id in attempt_ids],
            )
            db.executemany(
                _PUT_TASK,
                [_owned_row(key, state, now) for key, state in states.items()],
            )
            events: list[EventSpec] = [
                ("attempt_interrupted", key, _numbered(numbers.get(key), reason)) for key in states
            ]
            self._events(events, now)
        return events

    def set_attempt_iteration(self, attempt_id: int, iteration: int) -> None:
        """A retry order while the attempt ran made it the first of a fresh budget."""
        with self._tx() as db:
            db.execute("UPDATE attempts SET iteration = ? WHERE id = ?", (iteration, attempt_id))

    def set_attempt_details(self, attempt_id: int, details: AttemptDetails) -> None:
        with self._tx() as db:
            db.execute(
                _SET_DETAILS,
                (*details.columns(), attempt_id),
            )

    def set_committing(self, attempt_id: int, commit: str, verifies: str) -> None:
        """Record the commit a PASS of the attempt is about to put on its branch, and what it
        was verified against; committed before git moves the branch (see schema 9)."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET committing = ?, verifies = ? WHERE id = ?",
                (commit, verifies, attempt_id),
            )

    def spend(
        self, track: str | None = None, task_id: str | None = None, since: str | None = None
    ) -> Spend:
        """What the attempts of a task, a track, or all (since a time) used."""
        row = self._db.execute(_SPEND, (track, task_id, since)).fetchone()
        return Spend(int(row[0]), float(row[1]), int(row[2]))

    def spend_by_track(self) -> dict[str, Spend]:
        rows = self._db.execute(_SPEND_BY_TRACK)
        return {r[0]: Spend(int(r[1]), float(r[2]), int(r[3])) for r in rows}

    def running_attempts(self) -> list[AttemptRow]:
        rows = self._db.execute("SELECT * FROM attempts WHERE state = 'running' ORDER BY id")
        return [_attempt(r) for r in rows]

    def attempts(self, key: TaskKey) -> list[AttemptRow]:
        rows = self._db.execute(
            "SELECT * FROM attempts WHERE track = ? AND task_id = ? ORDER BY number, id",
            (key.track, key.id),
        )
        return [_attempt(r) for r in rows]

    # ------------------------------------------------------------------ processes

    def record_process(
        self,
        attempt_id: int,
        role: str,
        argv: Sequence[str],
        cwd: str,
        pid: int | None,
        start_ticks: int | None,
        boot_id: str | None,
        *,
        executor: str = "local",
        run_id: str | None = None,
        later: bool = False,
    ) -> int:
        """Record a child process (or remote run); return its record's id.

        ``later``: the record goes into the next transaction instead of one of its own (a
        commit fewer per process). Only for children a restarted daemon can find without it:
        local children whose environment carries the attempt's launch marker, on a system
        where :func:`orchestrator.procs.find_launched` can read it.

        Ids are given out here, from the highest in the table when first needed: only the
        daemon's store records processes (it holds the state directory's lock). A second
        instance recording into the same database would give out the same ids.
        """
        if self._last_process < 0:
            row = self._db.execute("SELECT MAX(id) FROM processes").fetchone()
            self._last_process = int(row[0] or 0)
        self._last_process += 1
        process_id = self._last_process
        values = [
            process_id,
            attempt_id,
            role,
            orjson.dumps(list(argv)).decode(),
            cwd,
            pid,
            pid,
            start_ticks,
            boot_id,
            self._now(),
            executor,
            run_id,
            None,
            None,
        ]
        self._later[process_id] = values
        if not later:
            self.flush()
        return process_id

    def end_process(self, process_id: int, exit_code: int | None) -> None:
        """Record that a process ended, with the next transaction (no commit of its own).

        If the daemon dies before that commit, the process merely looks open to the next
        start, which finds nothing of it to end: safe, and one commit fewer per process.
        """
        now = self._now()
        values = self._later.get(process_id)
        if values is not None:  # not written yet: written ended
            values[_ENDED_AT : _ENDED_AT + 2] = (now, exit_code)
        else:
            self._ends.append((now, exit_code, process_id))

    def open_processes(self) -> list[ProcessRow]:
        self.flush()
        rows = self._db.execute("SELECT * FROM processes WHERE ended_at IS NULL ORDER BY id")
        return [_process(r) for r in rows]

    def open_run(self, run_id: str) -> ProcessRow | None:
        """The open record of a remote run, to record a re-attached run only once."""
        self.flush()
        row = self._db.execute(_OPEN_RUN, (run_id,)).fetchone()
        return None if row is None else _process(row)

    def remote_attempts(self) -> dict[int, list[ProcessRow]]:
        """Running attempts with remote runs: attempt id -> those runs (ended or not)."""
        self.flush()
        rows = self._db.execute(
            "SELECT p.* FROM processes p JOIN attempts a ON a.id = p.attempt_id"
            " WHERE p.executor != 'local' AND a.state = 'running' ORDER BY p.id"
        )
        out: dict[int, list[ProcessRow]] = {}
        for row in rows:
            proc = _process(row)
            out.setdefault(proc.attempt_id, []).append(proc)
        return out

    def run_log_mark(self, run_id: str) -> tuple[int, int | None]:
        """Bytes of a remote run's output already in its log file, and the file's size right
        after they were written (None: not known)."""
        row = self._db.execute(
            "SELECT log_offset, log_size FROM run_logs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return (0, None) if row is None else (int(row[0]), row[1])

    def set_run_log_mark(self, run_id: str, offset: int, size: int | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO run_logs (run_id, log_offset, log_size) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE"
                " SET log_offset = excluded.log_offset, log_size = excluded.log_size",
                (run_id, offset, size),
            )

    def processes(self, attempt_id: int) -> list[ProcessRow]:
        self.flush()
        rows = self._db.execute(
            "SELECT * FROM processes WHERE attempt_id = ? ORDER BY id", (attempt_id,)
        )
        return [_process(r) for r in rows]

    # ------------------------------------------------------------------ events

    def add_events(self, *events: EventSpec) -> None:
        with self._tx():
            self._events(events)

    def events(self, after: int = 0, limit: int = 1000) -> list[EventRow]:
        rows = self._db.execute(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [_event(r) for r in rows]

    def last_event(self, types: Sequence[str]) -> EventRow | None:
        """The latest journaled event of one of ``types`` (say, the daemon's last pause)."""
        marks = ", ".join("?" for _ in types)
        row = self._db.execute(
            f"SELECT * FROM events WHERE type IN ({marks}) ORDER BY seq DESC LIMIT 1",  # noqa: S608
            tuple(types),
        ).fetchone()
        return None if row is None else _event(row)

    def last_seq(self) -> int:
        """The sequence number of the latest journaled event (0 when there is none)."""
        row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    # ------------------------------------------------------------------ usage-limit holds

    def put_hold(self, hold: HoldRow, *events: EventSpec) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO holds VALUES (?, ?, ?, ?, ?)",
                (
                    hold.agent,
                    hold.since,
                    hold.until,
                    hold.reason,
                    orjson.dumps(hold.tracks).decode(),
                ),
            )
            self._events(events)

    def drop_hold(self, agent: str, *events: EventSpec) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM holds WHERE agent = ?", (agent,))
            self._events(events)

    def holds(self) -> list[HoldRow]:
        rows = self._db.execute("SELECT * FROM holds ORDER BY until, agent")
        return [
            HoldRow(
                r["agent"], r["since"], r["until"], r["reason"], tuple(orjson.loads(r["tracks"]))
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ write-back base

    def written(self, track: str) -> Written | None:
        row = self._db.execute("SELECT * FROM written WHERE track = ?", (track,)).fetchone()
        if row is None:
            return None
        return Written(row["path"], row["digest"], orjson.loads(row["base"]))

    def set_written(self, track: str, written: Written) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO written VALUES (?, ?, ?, ?)",
                (track, written.path, written.digest, orjson.dumps(dict(written.base)).decode()),
            )
