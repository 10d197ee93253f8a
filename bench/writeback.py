"""Write-back cost: quick writes per task, in a focused loop and in the dispatch run.

* quick writes: one track of 250 (then 1,000) tasks, nothing running; rounds of 20 tasks
  changing state (started, then finished), each round written back by a sync. Main-thread CPU
  per write and per changed task, of the write-back as it is (each changed task object read
  and re-rendered alone, ``filelayout``) and, as the reference in the same run, of the
  whole-file path (the file parsed and spliced in full, as every quick write was before).
  Target: per write, the cost of what changed, not of the file's size.
* in the dispatch run (20 tracks of 250 ``true`` tasks, parallelism 2, as ``bench dispatch``):
  the write-back's main-thread CPU per task (the daemon's main thread is its bottleneck),
  metered around each sync while it runs, and the worker threads' (reading, hashing,
  writing). Budget: 0.03 ms per task on the main thread (an eighth of issue 3's 0.25 ms
  daemon CPU per task).
* batching: 1,000 quick tasks in one track; the file writes made for ~3,000 transitions,
  against the time of one synchronous full-file write.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

import anyio

from orchestrator import config, logs
from orchestrator import writeback as writeback_module
from orchestrator.clock import SystemClock
from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.model import Status, TaskKey
from orchestrator.queuefile import write_atomic
from orchestrator.store import Store
from orchestrator.supervisor import _load_tracks
from orchestrator.writeback import Writeback

from .common import run_daemon, scratch_root
from .gen import write_tracks

PER_ROUND = 20
ROUNDS = 60


class WholeFile(Writeback):
    """The reference: every quick write parses and splices the whole file."""

    async def _quick(self, track: Any, known: Any, read: Any, keys: Any) -> Any:
        return await self._quick_in_full(track, known, read, keys)


class Meter:
    """Thread CPU spent inside metered coroutines while they run (not while they wait)."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return _Metered(coro, self)


class _Metered:
    def __init__(self, coro: Coroutine[Any, Any, Any], meter: Meter) -> None:
        self.coro, self.meter = coro, meter

    def __await__(self) -> Generator[Any, Any, Any]:
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            start = time.thread_time_ns()
            try:
                waiting = self.coro.send(sent) if thrown is None else self.coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            finally:
                self.meter.ns += time.thread_time_ns() - start
            try:
                sent, thrown = (yield waiting), None
            except BaseException as exc:  # handed to the metered coroutine
                sent, thrown = None, exc


def _thread_meter(func: Callable[..., Any], meter: Meter) -> Callable[..., Any]:
    def metered(*args: Any) -> Any:
        start = time.thread_time_ns()
        try:
            return func(*args)
        finally:
            meter.ns += time.thread_time_ns() - start

    return metered


async def _quick_writes(root: Path, tasks: int, kind: type[Writeback]) -> tuple[float, int]:
    """Main-thread CPU of the syncs (seconds) and the number of writes."""
    tracks = root / "tracks"
    write_tracks(tracks, 1, tasks, command="true", cross=0)
    cfg = config.load(
        flags={"tracks": str(tracks), "state_dir": str(root / "state")}, env={}, cwd=root
    )
    store = Store.open(cfg.state_dir, SystemClock())
    try:
        engine = Engine(cfg, store, LocalExecutor(1.0), SystemClock())
        writeback = kind(engine, 0.0, quiet=0.0)
        _load_tracks(engine, cfg, writeback, store.load_tasks())
        engine.connect(lambda key: None, writeback.mark)
        engine.paused = True  # nothing starts: the rounds below change the states
        name = next(iter(engine.tracks))
        await writeback.sync(name)
        await writeback.sync(name)  # the first quick sync finds where the tasks are
        keys = list(engine.graph.keys(name))
        cpu = 0
        for round_ in range(ROUNDS):
            first = round_ * PER_ROUND // 2 % len(keys)  # each task: started, then finished
            for key in keys[first : first + PER_ROUND]:
                _step(engine, key, round_)
            start = time.thread_time_ns()
            await writeback.flush()
            cpu += time.thread_time_ns() - start
        return cpu / 1e9, ROUNDS
    finally:
        store.close()


def _step(engine: Engine, key: TaskKey, round_: int) -> None:
    state = engine.states[key]
    stamp = f"2025-01-01T00:{round_ // 60 % 60:02d}:{round_ % 60:02d}Z"
    if state.status is Status.IN_PROGRESS:
        new = state.with_owned(
            status=Status.COMPLETE, passes=True, completed_at=stamp, verification_verdict="PASS"
        )
    else:
        new = state.with_owned(
            status=Status.IN_PROGRESS, attempts=state.owned.attempts + 1, last_attempt=stamp
        )
    engine.apply(key, new)


def quick_writes() -> None:
    print(f"  quick writes, {PER_ROUND} tasks changed per write (main-thread CPU):")
    for tasks in (250, 1000):
        figures = {}
        for kind in (Writeback, WholeFile):
            with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
                figures[kind] = anyio.run(_quick_writes, Path(tmp), tasks, kind)
        (cpu, writes), (ref, _) = figures[Writeback], figures[WholeFile]
        per_write, ref_write = cpu / writes * 1e3, ref / writes * 1e3
        print(
            f"    {tasks:5,} tasks: {per_write:.2f} ms per write, "
            f"{per_write / PER_ROUND * 1e3:.1f} us per changed task; whole-file path "
            f"{ref_write:.2f} ms per write ({ref_write / per_write:.1f}x)"
        )


def in_dispatch() -> None:
    main, threads = Meter(), Meter()
    sync, read, write = Writeback._sync, writeback_module._read, writeback_module._write

    async def metered_sync(self: Writeback, name: str, keys: Any) -> Any:
        return await main(sync(self, name, keys))

    Writeback._sync = metered_sync  # type: ignore[method-assign]
    writeback_module._read = _thread_meter(read, threads)
    writeback_module._write = _thread_meter(write, threads)
    try:
        with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
            root = Path(tmp)
            write_tracks(root / "tracks", 20, 250, command="true", cross=0.05)
            result = run_daemon(root / "tracks", root / "state", max_parallel=2)
    finally:
        Writeback._sync = sync  # type: ignore[method-assign]
        writeback_module._read, writeback_module._write = read, write
    writes = result["engine"].stats["file_writes"]
    per_task = main.ns / 5000 / 1e6
    print("  in the dispatch run (5,000 tasks in 20 tracks of 250, -j2):")
    print(
        f"    write-back main-thread CPU: {per_task:.3f} ms per task (budget 0.03 ms: "
        f"{per_task / 0.03:.2f}x); worker threads {threads.ns / 5000 / 1e6:.3f} ms per task"
    )
    print(f"    {writes} writes ({5000 / max(writes, 1):.0f} tasks per write)")


def batching() -> None:
    print("  batching: one file of 1,000 tasks")
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        root = Path(tmp)
        tracks = root / "tracks"
        write_tracks(tracks, 1, 1000, command="true", cross=0)
        path = next(tracks.glob("*.json"))
        doc = json.loads(path.read_text())
        start = time.perf_counter()
        for _ in range(20):
            write_atomic(root / "copy.json", json.dumps(doc, indent=2))
        per_write = (time.perf_counter() - start) / 20
        result = run_daemon(tracks, root / "state", max_parallel=2)
        engine = result["engine"]
        writes = engine.stats["file_writes"]
        transitions = 3 * 1000
        rate = 1000 / result["wall"]
        cap = 1 / per_write / 3
        print(f"    one synchronous full-file write: {per_write * 1000:.1f} ms")
        print(f"      -> at most {cap:.0f} tasks/s if the file were written per transition")
        per = transitions / max(writes, 1)
        print(f"    daemon: {rate:.0f} tasks/s, {writes} writes for {transitions} transitions")
        print(f"      ({per:.0f} transitions per write)")
        final = json.loads(path.read_text())
        size = os.path.getsize(path) // 1024
        print(f"    summary after the run: {final['summary']} ({size} KB file)")


def run() -> None:
    print("== write-back (issue 3)")
    logs.configure("warning", "json")
    quick_writes()
    in_dispatch()
    batching()


if __name__ == "__main__":
    run()
