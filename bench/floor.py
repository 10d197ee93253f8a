"""The floor under the daemon's cost per task: a loop doing only what every attempt must do.

Per task, in the order the daemon does it and with the daemon's own parts:

* a log file created for the attempt, with a header;
* the attempt recorded before the child starts (one transaction of the real :class:`Store`,
  with the daemon's event);
* the child spawned (:func:`orchestrator.executors.spawn.spawn`, the daemon's kind of
  environment, a new session, stdin from ``/dev/null``, output to the log), and its process
  (argv, pid, group, start) kept for the next transaction, as the daemon's recorder does;
* its exit seen through a pidfd on the event loop (uvloop where the daemon uses it), its group
  sent SIGTERM (what the command left behind ends with it), reaped;
* the end of its log read (where the daemon looks for ``<blocked>`` and ``<promise>``);
* the verdict, from the exit status and the log's end, recorded (a second transaction, with
  the daemon's two events).

Nothing else: no scheduler, graph, Ralph loop, write-back or bookkeeping. 5,000 independent
``/bin/true`` at parallelism 2, then the same without the store, then ``ninja -j2`` running
5,000 independent edges, then the daemon itself (``bench dispatch``'s graph, which has
dependencies: the issue's 1.0x ``ninja`` is set on that graph, as ``bench dispatch`` runs it),
all in one run. The floor shows which part of the daemon's cost a daemon built from these
parts (this Python, this store) pays whatever else it does, and which part is the daemon's own
work above it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from orchestrator import procs
from orchestrator.clock import SystemClock
from orchestrator.executors import spawn
from orchestrator.model import Status, TaskKey
from orchestrator.states import TaskState
from orchestrator.store import Store
from orchestrator.supervisor import uvloop_available

from .common import scratch_root
from .dispatch import CHAIN, PARALLEL, TASKS, timed_daemon
from .gen import TRUE, write_chain, write_tracks

TAIL = 65536
"""How much of a log's end is read (the daemon reads up to ``log_max_bytes``)."""


async def _floor(
    root: Path, *, store: Store | None, count: int, parallel: int, command: tuple[str, ...]
) -> tuple[float, float]:
    """Wall and CPU seconds of ``count`` attempts of ``command``, ``parallel`` at a time."""
    logs = root / "logs"
    logs.mkdir()
    loop = asyncio.get_running_loop()
    base = dict(os.environ)
    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    header = f"$ {shlex.join(command)}\n".encode()
    running = TaskState().with_owned(status=Status.IN_PROGRESS)
    ended = {
        verdict: running.with_owned(status=status, attempts=1)
        for verdict, status in (
            ("PASS", Status.COMPLETE),
            ("FAIL", Status.FAILED),
            ("BLOCKED", Status.BLOCKED),
        )
    }
    kinds = {"PASS": "task_complete", "FAIL": "task_failed", "BLOCKED": "task_blocked"}
    boot = procs.boot_id()
    left = list(range(count))

    async def attempt(number: int) -> None:
        key = TaskKey("t", f"T-{number}")
        path = str(logs / f"T-{number}.attempt-1.log")
        log = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(log, header)
            start = os.fstat(log).st_size  # the run's output begins here (as the daemon's header)
            attempt_id = 0
            if store is not None:
                started = ("task_started", key, {"attempt": 1, "iteration": 1, "max_iterations": 3})
                attempt_id = store.begin_attempt(key, running, 1, 1, path, started)
            env = dict(
                base,
                ORCHESTRATORD_TASK_ID=key.id,
                ORCHESTRATORD_TRACK=key.track,
                ORCHESTRATORD_ATTEMPT="1",
                ORCHESTRATORD_FAILURE_FILE=str(logs / f"{key.id}.last-failure.txt"),
            )
            env[procs.LAUNCH_VAR] = procs.launch_marker("floor", os.getpid(), attempt_id)
            pid = spawn.spawn(command, str(root), env, stdin, log)
            if pid is None:
                raise RuntimeError("posix_spawn is not usable here")
            record = 0
            if store is not None:
                ticks = procs.start_ticks_now()
                run_id = f"a{attempt_id}-run"
                record = store.record_process(
                    attempt_id,
                    "run",
                    command,
                    str(root),
                    pid,
                    ticks,
                    boot,
                    run_id=run_id,
                    later=True,
                )
            watch = os.pidfd_open(pid)
            exited = loop.create_future()
            loop.add_reader(watch, exited.set_result, None)
            try:
                await exited
            finally:
                loop.remove_reader(watch)
                os.close(watch)
            procs.terminate_group(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)  # noqa: ASYNC222 - it has exited (its pidfd said so)
            code = os.waitstatus_to_exitcode(status)
            size = os.fstat(log).st_size
            begin = max(start, size - TAIL)
            tail = os.pread(log, size - begin, begin)
        finally:
            os.close(log)
        # The verdict as the daemon's, from what the child did: nothing is taken for granted.
        verdict = "BLOCKED" if b"<blocked>" in tail else "PASS" if code == 0 else "FAIL"
        if store is not None:
            store.end_process(record, code)
            reason = None if verdict == "PASS" else f"exit status {code}"
            data = {"attempt": 1, "verdict": verdict, "reason": reason}
            finished = ("attempt_finished", key, data)
            done = (kinds[verdict], key, {"attempts": 1})
            state = ended[verdict]
            store.finish_attempt(attempt_id, key, state, verdict, reason, code, finished, done)

    async def slot() -> None:
        while left:
            await attempt(left.pop())

    wall, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(slot() for _ in range(parallel)))
    finally:
        os.close(stdin)
    return time.perf_counter() - wall, time.process_time() - cpu


def _run_floor(
    root: Path,
    with_store: bool,
    count: int = TASKS,
    parallel: int = PARALLEL,
    command: tuple[str, ...] = (TRUE,),
) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        store = Store.open(root / "state", SystemClock()) if with_store else None
        try:
            return await _floor(root, store=store, count=count, parallel=parallel, command=command)
        finally:
            if store is not None:
                store.close()

    (root / "state").mkdir(parents=True)
    return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": uvloop_available()})


def _ninja(root: Path) -> float:
    edges = [f"build t{n}: run" for n in range(TASKS)]
    (root / "build.ninja").write_text("\n".join(["rule run", f"  command = {TRUE}", *edges]) + "\n")
    start = time.perf_counter()
    subprocess.run(["ninja", f"-j{PARALLEL}"], cwd=root, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _make_chain(root: Path) -> float:
    """Links per second of ``make`` running a chain of CHAIN recipes of ``/bin/true``."""
    links = [f"C{n}:{' C' + str(n - 1) if n else ''}\n\t{TRUE}" for n in range(CHAIN)]
    phony = " ".join(f"C{n}" for n in range(CHAIN))
    (root / "Makefile").write_text(f".PHONY: all {phony}\nall: C{CHAIN - 1}\n" + "\n".join(links))
    start = time.perf_counter()
    subprocess.run(["make", "-s", f"-j{PARALLEL}"], cwd=root, check=True)
    return CHAIN / (time.perf_counter() - start)


def _print(label: str, count: int, wall: float, cpu: float, note: str) -> None:
    rate, per_task = count / wall, cpu / count * 1e6
    print(f"  {label:<16} {rate:6.0f} tasks/s  {per_task:4.0f} us CPU per task  {note}".rstrip())


def _ready_on(daemon: dict[str, Any]) -> tuple[float, str]:
    """The daemon's run from ready to exit (the floor has no start-up), and a note saying so."""
    startup, wall = daemon["startup_wall"], daemon["wall"]
    return wall - startup, f"the same run from ready on (start-up: {startup:.2f} s of {wall:.2f} s)"


def _independent() -> None:
    figures: dict[str, tuple[float, float]] = {}
    for label, with_store in (("floor", True), ("floor, no store", False)):
        with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
            figures[label] = _run_floor(Path(tmp), with_store)
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        write_tracks(Path(tmp) / "tracks", 20, TASKS // 20, command=[TRUE], cross=0.05)
        daemon = timed_daemon(Path(tmp) / "tracks", Path(tmp) / "state")
        figures["daemon"] = (daemon["wall"], daemon["cpu"] - daemon["startup_cpu"])
    running, running_note = _ready_on(daemon)
    figures["daemon, ready on"] = (running, figures["daemon"][1])
    notes = {
        "floor": "log, record, spawn, pidfd, end the group, reap, read the log's end, record",
        "floor, no store": "the same without the two transactions",
        "daemon": "bench dispatch's graph: 20 tracks, with dependencies (CPU: start-up left out)",
        "daemon, ready on": running_note,
    }
    print(f"  {TASKS} /bin/true at parallelism {PARALLEL} (the floor and ninja: independent):")
    for label, (wall, cpu) in figures.items():
        _print(label, TASKS, wall, cpu, notes[label])
    floor, bare, ours = (
        figures[k][1] / TASKS * 1e6 for k in ("floor", "floor, no store", "daemon")
    )
    print(
        f"  the store's two transactions: {floor - bare:.0f} us per task; the daemon's own"
        f" work above the floor: {ours - floor:.0f} us per task"
    )
    if shutil.which("ninja"):
        with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
            ninja = TASKS / _ninja(Path(tmp))
        print(f"  {'ninja -j2':<16} {ninja:6.0f} tasks/s")
        floor_rate, ours_rate, ready_rate = (
            TASKS / figures[k][0] for k in ("floor", "daemon", "daemon, ready on")
        )
        print(
            f"  floor / ninja -j2: {floor_rate / ninja:.2f}x;"
            f" daemon / ninja -j2: {ours_rate / ninja:.2f}x (target 1.0x on the same graph:"
            f" bench dispatch), from ready on {ready_rate / ninja:.2f}x"
        )


def _chain() -> None:
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        floor = _run_floor(Path(tmp), True, count=CHAIN, parallel=1)
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        write_chain(Path(tmp) / "tracks", CHAIN, [TRUE])
        daemon = timed_daemon(Path(tmp) / "tracks", Path(tmp) / "state")
    print(f"  a chain of {CHAIN} (each link waits for the one before):")
    _print("floor", CHAIN, *floor, "the same steps, one at a time")
    cpu = daemon["cpu"] - daemon["startup_cpu"]
    running, running_note = _ready_on(daemon)
    _print("daemon", CHAIN, daemon["wall"], cpu, "")
    _print("daemon, ready on", CHAIN, running, cpu, running_note)
    if shutil.which("make"):
        with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
            make = _make_chain(Path(tmp))
        print(f"  {'make -j2':<16} {make:6.0f} links/s")
        print(
            f"  floor / make: {CHAIN / floor[0] / make:.2f}x;"
            f" daemon / make: {CHAIN / daemon['wall'] / make:.2f}x (target 0.8x),"
            f" from ready on {CHAIN / running / make:.2f}x"
        )


def run() -> None:
    print("== floor (issue 3): only what every attempt must do, against the daemon, one run")
    _independent()
    _chain()


if __name__ == "__main__":
    run()
