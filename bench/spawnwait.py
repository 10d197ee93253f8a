"""The wait inside ``posix_spawn``, and what handing the spawn to a thread would cost.

glibc's ``posix_spawn`` clones with ``CLONE_VFORK``: the calling thread sleeps until the child
has exec'd. In the daemon that thread is the event loop's, the serial part of every task. This
benchmark spawns ``/bin/true`` (through :func:`orchestrator.executors.spawn.spawn`, with the
daemon's kind of environment) and prints the wall time and the caller's CPU per spawn call:

* ``waiting``: the caller waits for each child's exit in ``waitpid`` (a plain loop);
* ``busy``: the caller computes while each child runs (about 0.3 ms), as the daemon does;
* ``busy, pinned``: the same with the caller pinned to one CPU (children inherit the pin, so
  this is not something the daemon can do; it shows where the wait comes from).

It then times the round trip of handing a call to a worker thread and getting its result back
on an asyncio (uvloop) loop: what spawning from a thread would add to every task.
"""

from __future__ import annotations

import asyncio
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio

from orchestrator.executors import spawn
from orchestrator.supervisor import uvloop_available

SPAWNS = 3000
HANDOFFS = 20000
BURN = 3000
"""Steps of busy work between spawns (about 0.3 ms here)."""


def _spawns(busy: bool) -> tuple[float, float]:
    """Wall and caller CPU per spawn call, in microseconds."""
    env = dict(os.environ, ORCHESTRATORD_TASK_ID="T1", ORCHESTRATORD_ATTEMPT="1")
    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    out = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    poller = select.epoll()
    numbers = list(range(200_000))
    wall = cpu = 0
    try:
        for _ in range(SPAWNS):
            w, c = time.perf_counter_ns(), time.thread_time_ns()
            pid = spawn.spawn(["/bin/true"], os.getcwd(), env, stdin, out)
            wall += time.perf_counter_ns() - w
            cpu += time.thread_time_ns() - c
            if pid is None:
                raise RuntimeError("posix_spawn is not usable here")
            if busy:
                watch = os.pidfd_open(pid)
                poller.register(watch, select.EPOLLIN)
                total = 0
                for step in range(BURN):
                    total += numbers[step * 7919 % len(numbers)]
                poller.poll()
                poller.unregister(watch)
                os.close(watch)
            os.waitpid(pid, 0)
    finally:
        for fd in (stdin, out):
            os.close(fd)
        poller.close()
    return wall / SPAWNS / 1000, cpu / SPAWNS / 1000


def _handoff() -> tuple[float, float]:
    """Process CPU and wall per round trip to a worker thread, in microseconds."""
    jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, Any] | None]
    jobs = queue.SimpleQueue()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            call, loop, future = job
            loop.call_soon_threadsafe(future.set_result, call())

    async def main() -> tuple[float, float]:
        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        loop = asyncio.get_running_loop()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(HANDOFFS):
            future = loop.create_future()
            jobs.put((int, loop, future))
            await future
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        jobs.put(None)
        thread.join()
        return cpu / HANDOFFS * 1e6, wall / HANDOFFS * 1e6

    options = {"use_uvloop": uvloop_available()}
    result: tuple[float, float] = anyio.run(main, backend="asyncio", backend_options=options)
    return result


def run() -> None:
    print(f"== spawnwait: {SPAWNS} spawns of /bin/true; the caller's wait inside posix_spawn")
    if not spawn.AVAILABLE:
        print(f"  (posix_spawn cannot be used here: {spawn.UNAVAILABLE})")
        return
    rows: list[tuple[str, bool, set[int] | None]] = [("waiting", False, None), ("busy", True, None)]
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        rows.append(("busy, pinned", True, {min(os.sched_getaffinity(0))}))
    for label, busy, pin in rows:
        before = os.sched_getaffinity(0) if pin else None
        if pin:
            os.sched_setaffinity(0, pin)
        try:
            wall, cpu = _spawns(busy)
        finally:
            if before:
                os.sched_setaffinity(0, before)
        print(
            f"  {label:13s} {wall:5.0f} us per spawn call, of which the caller's CPU {cpu:4.0f}"
            f" us: waiting {wall - cpu:4.0f} us while the child execs"
        )
    cpu, wall = _handoff()
    print(
        f"  a hand-off to a worker thread and back: {cpu:.0f} us of CPU ({wall:.0f} us wall)"
        " per call"
    )


if __name__ == "__main__":
    run()
