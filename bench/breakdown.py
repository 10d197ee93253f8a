"""Where the daemon's CPU per task goes, on the dispatch scenario (5,000 ``["/bin/true"]`` tasks).

Runs the scenario twice in this process: once as it is (the reference), once with the main
thread's CPU time (``time.thread_time``) counted around chosen functions, around every SQLite
statement, and around garbage collections. Figures are per task and *inclusive*: an indented
line is part of the line above it. Counting costs about a microsecond per counted call, which
the difference between the two runs shows. Nothing is asserted.

Only synchronous functions can be counted this way (an async one would count the time it
waits); the write-back's share is seen through the merge and the rendering it calls.
"""

from __future__ import annotations

import collections
import functools
import gc
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator import store as store_module

from .common import patch, run_daemon, scratch_root
from .gen import TRUE, write_tracks

TASKS = 5000
PARALLEL = 2

COUNTED: tuple[tuple[int, str, str], ...] = (
    (0, "orchestrator.daemon", "Engine.dispatch"),
    (1, "orchestrator.worker", "TrackWorker.launch"),
    (0, "orchestrator.daemon", "Engine.finished"),
    (0, "orchestrator.daemon", "Engine.after_commit"),
    (0, "orchestrator.worker", "plan_attempt"),
    (0, "orchestrator.worker", "_conclude"),
    (0, "orchestrator.store", "Store.begin_attempt"),
    (0, "orchestrator.store", "Store.finish_attempt"),
    (0, "orchestrator.store", "Store.record_process"),
    (0, "orchestrator.executors.local", "LocalExecutor._start"),
    (1, "orchestrator.executors.spawn", "spawn"),
    (2, "orchestrator.executors.spawn", "_posix_spawn"),
    (0, "orchestrator.executors.local", "LocalExecutor._on_exit"),
    (0, "orchestrator.attempt", "_Log.__init__"),
    (0, "orchestrator.attempt", "_Log.header"),
    (0, "orchestrator.attempt", "_Log.section"),
    (0, "orchestrator.merge", "merge_task"),
    (0, "orchestrator.filelayout", "Layout.render"),
)
"""(indent, module, attribute): the functions counted (see :func:`.common.patch`)."""


class _Counter:
    def __init__(self) -> None:
        self.ns: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.main = threading.get_ident()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock, main, ns, calls = time.thread_time_ns, self.main, self.ns, self.calls

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != main:
                return fn(*args, **kwargs)
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                ns[name] += clock() - start
                calls[name] += 1

        return counted


class _Connection:
    """A store's connection, counting the time of each kind of statement."""

    def __init__(self, db: sqlite3.Connection, counter: _Counter) -> None:
        self._db = db
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def _count(self, sql: str, call: Callable[[], Any]) -> Any:
        words = sql.split()
        kind = " ".join(words[:2] if words[0] in ("BEGIN", "COMMIT", "ROLLBACK") else words[:3])
        name = f"sql {kind}"
        start = time.thread_time_ns()
        try:
            return call()
        finally:
            self._counter.ns[name] += time.thread_time_ns() - start
            self._counter.calls[name] += 1

    def execute(self, sql: str, *args: Any) -> Any:
        return self._count(sql, lambda: self._db.execute(sql, *args))

    def executemany(self, sql: str, rows: Any) -> Any:
        return self._count(sql, lambda: self._db.executemany(sql, rows))


@contextmanager
def _counting(counter: _Counter) -> Iterator[None]:
    undo = [patch([(module, attribute) for _indent, module, attribute in COUNTED], counter.wrap)]
    store_init = store_module.Store.__init__

    def init(self: store_module.Store, *args: Any, **kwargs: Any) -> None:
        store_init(self, *args, **kwargs)
        self._db = _Connection(self._db, counter)  # type: ignore[assignment]

    store_module.Store.__init__ = init  # type: ignore[method-assign]
    undo.append(functools.partial(setattr, store_module.Store, "__init__", store_init))
    started = [0]

    def collections_(phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != counter.main:
            return
        if phase == "start":
            started[0] = time.thread_time_ns()
        else:
            counter.ns["garbage collection"] += time.thread_time_ns() - started[0]
            counter.calls["garbage collection"] += 1

    gc.callbacks.append(collections_)
    undo.append(lambda: gc.callbacks.remove(collections_))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def _scenario(root: Path) -> tuple[float, float]:
    """Run it; return the main thread's CPU per task and the whole process's (ms)."""
    write_tracks(root / "tracks", 20, TASKS // 20, command=[TRUE], cross=0.05)
    before = time.thread_time()
    result = run_daemon(root / "tracks", root / "state", max_parallel=PARALLEL)
    assert result["code"] == 0, "the benchmark run did not complete every task"
    main = (time.thread_time() - before) / TASKS * 1000
    return main, result["cpu"] / TASKS * 1000


def run() -> None:
    print(f"== breakdown: daemon CPU per task, {TASKS} [{TRUE!r}] tasks at parallelism {PARALLEL}")
    with tempfile.TemporaryDirectory(dir=scratch_root()) as scratch:
        reference, whole = _scenario(Path(scratch) / "plain")
        counter = _Counter()
        with _counting(counter):
            counted, _ = _scenario(Path(scratch) / "counted")
    print(f"  reference run: {whole:.3f} ms per task (all threads), main thread {reference:.3f}")
    print(f"  counted run: main thread {counted:.3f} ms per task (counting costs the rest)")
    print("  main thread, per task (inclusive; an indented line is part of the one above;")
    print("  Engine.finished and after_commit call Engine.dispatch; the Store lines hold the SQL):")
    rows = [(indent, name) for indent, _module, name in COUNTED]
    rows += [(0, name) for name in sorted(counter.ns) if name.startswith("sql ")]
    rows.append((0, "garbage collection"))
    for indent, name in rows:
        if not counter.calls[name]:
            continue
        per_task = counter.ns[name] / TASKS / 1000
        per_call = counter.ns[name] / counter.calls[name] / 1000
        label = "  " * indent + name
        print(
            f"    {label:34s} {per_task:6.1f} us  ({counter.calls[name]:5d} calls,"
            f" {per_call:6.1f} us each)"
        )
