"""Where one link of a chain goes: the dispatch bench's chain, timed stage by stage.

In a chain (each task depends on the previous one) nothing overlaps: a link is the previous
task's verdict, the next task's start, its child's whole life and its verdict. This bench marks
six moments of every link (wall clock, ``time.perf_counter_ns``) and prints the median time
between each and the next, then a reference measured in the same run: the same ``/bin/true``
child started by the same spawn function and waited for through a pidfd in a plain loop, which
no daemon can beat. What the daemon adds to a link is the difference. Nothing is asserted.
"""

from __future__ import annotations

import functools
import itertools
import os
import select
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.executors import spawn

from .common import patch, run_daemon, scratch_root
from .gen import TRUE, write_chain

LINKS = 2000

MARKS: tuple[tuple[str, str, str, str], ...] = (
    ("orchestrator.store", "Store.finish_attempt", "after", "verdict committed"),
    ("orchestrator.store", "Store.begin_attempt", "before", "next attempt being recorded"),
    ("orchestrator.store", "Store.begin_attempt", "after", "attempt recorded"),
    ("orchestrator.executors.spawn", "spawn", "before", "spawn called"),
    ("orchestrator.executors.spawn", "spawn", "after", "spawn returned"),
    ("orchestrator.executors.local", "LocalExecutor._on_exit", "before", "exit seen"),
)
"""(module, function, before or after its call, the moment's name), in the order of a link."""

WHAT = {
    "next attempt being recorded": "the Ralph loop ends, the slot frees, the next task is chosen",
    "attempt recorded": "one transaction",
    "spawn called": "plan, log file, environment",
    "spawn returned": "the child is made and execs while the daemon waits",
    "exit seen": "the child runs; its pidfd wakes the loop",
    "verdict committed": "reap, read the log, decide, one transaction",
}


def _marking(moments: list[tuple[str, int]]) -> Callable[[], None]:
    by_function: dict[str, dict[str, str]] = {}
    for _module, function, when, name in MARKS:
        by_function.setdefault(function, {})[when] = name

    def wrap(function: str, original: Callable[..., Any]) -> Callable[..., Any]:
        before, after = by_function[function].get("before"), by_function[function].get("after")
        clock, note = time.perf_counter_ns, moments.append

        @functools.wraps(original)
        def marked(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                note((before, clock()))
            result = original(*args, **kwargs)
            if after is not None:
                note((after, clock()))
            return result

        return marked

    return patch(dict.fromkeys((m, f) for m, f, _w, _n in MARKS), wrap)


def _stages(moments: list[tuple[str, int]]) -> dict[str, list[float]]:
    """Microseconds from each moment to the next, by the later moment's name."""
    order = [name for *_rest, name in MARKS]
    out: dict[str, list[float]] = {name: [] for name in order}
    for (was, then), (name, now) in itertools.pairwise(moments):
        if order[(order.index(was) + 1) % len(order)] != name:
            raise RuntimeError(f"moments out of order: {was!r} then {name!r}")
        out[name].append((now - then) / 1000)
    return out


def _child_alone(directory: Path, runs: int) -> tuple[float, float]:
    """Median microseconds in the spawn call, and from its return to seeing the child exit,
    nothing else running."""
    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    calls, lives = [], []
    try:
        for i in range(runs):
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            out = os.open(directory / f"alone-{i}.log", flags, 0o644)
            try:
                began = time.perf_counter_ns()
                pid = spawn.spawn([TRUE], str(directory), env, stdin, out)
                returned = time.perf_counter_ns()
                if pid is None:
                    raise RuntimeError(f"spawn could not start {TRUE} here")
                pidfd = os.pidfd_open(pid)
                select.select([pidfd], [], [])
                lives.append((time.perf_counter_ns() - returned) / 1000)
                calls.append((returned - began) / 1000)
                os.close(pidfd)
                os.waitpid(pid, 0)
            finally:
                os.close(out)
    finally:
        os.close(stdin)
    return statistics.median(calls), statistics.median(lives)


def run() -> None:
    print(f"== chainpath: one link of a chain of {LINKS} [{TRUE!r}] tasks, stage by stage")
    if not spawn.AVAILABLE or not hasattr(os, "pidfd_open"):
        print("  skipped: needs posix_spawn with new sessions and pidfds (Linux)")
        return
    with tempfile.TemporaryDirectory(dir=scratch_root()) as scratch:
        root = Path(scratch)
        tracks = root / "tracks"
        write_chain(tracks, LINKS)
        moments: list[tuple[str, int]] = []
        restore = _marking(moments)
        try:
            result = run_daemon(tracks, root / "state", max_parallel=2)
        finally:
            restore()
        assert result["code"] == 0, "the benchmark run did not complete every task"
        alone = dict(zip(("spawn returned", "exit seen"), _child_alone(root, 1000), strict=True))
    stages = _stages(moments)
    span = (moments[-1][1] - moments[0][1]) / 1000 / (LINKS - 1)
    print(f"  {span:.0f} us per link (start-up left out); each stage, in microseconds:")
    print(f"    {'stage, to the moment':34s} {'median':>6s} {'mean':>6s} {'alone':>6s}")
    total = mean_total = own = 0.0
    for name in (n for *_rest, n in MARKS[1:] + MARKS[:1]):
        median, mean = statistics.median(stages[name]), statistics.fmean(stages[name])
        total += median
        mean_total += mean
        reference = alone.get(name)
        own += median - (reference or 0.0)
        column = f"{reference:6.0f}" if reference is not None else " " * 6
        print(f"    -> {name:31s} {median:6.0f} {mean:6.0f} {column}  {WHAT[name]}")
    alone_total = sum(alone.values())
    print(f"    {'sum':34s} {total:6.0f} {mean_total:6.0f} {alone_total:6.0f}")
    print(
        f"  alone: the same spawn of {TRUE} in a plain loop, in this run. The daemon adds"
        f" {own:.0f} us per link ({total / sum(alone.values()):.2f}x the child alone)."
    )
