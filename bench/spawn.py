"""The local executor alone: how fast it starts and reaps children, and what that costs.

5,000 runs of ``true`` at concurrency 2 (two tasks, each submitting a run and waiting for
it), each with its own log file and an environment like the daemon's, for each way of
spawning, in the same process: Popen from spawner threads (the fallback), and
:mod:`orchestrator.executors.spawn` from spawner threads and from the event loop (the
default). Printed: runs/s, CPU of the whole process per run, and CPU of the event-loop thread
per run (the daemon's serial bottleneck; spawner threads add GIL time it does not show), and
the process CPU against Popen's (the loop thread's alone would favour the spawner threads,
whose spawning it does not count).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from orchestrator.executors import spawn
from orchestrator.executors.base import RunSpec
from orchestrator.executors.local import LocalExecutor
from orchestrator.supervisor import uvloop_available

from .common import scratch_root

RUNS = 5000
CONCURRENCY = 2


def _env() -> dict[str, str]:
    """The daemon's environment plus the variables it gives each task."""
    env = dict(os.environ)
    env.update(
        ORCHESTRATORD_TASK_ID="T1",
        ORCHESTRATORD_TRACK="bench",
        ORCHESTRATORD_ATTEMPT="1",
        ORCHESTRATORD_FAILURE_FILE="/nonexistent/failure.txt",
    )
    return env


def measure(root: Path, label: str, **options: Any) -> dict[str, float]:
    """Run ``RUNS`` ``true`` through one executor; wall, process CPU, loop-thread CPU."""
    logs = root / label
    logs.mkdir()
    env = _env()
    failed: list[str] = []

    async def main() -> dict[str, float]:
        async with LocalExecutor(1.0, **options) as executor:
            ids = iter(range(RUNS))

            async def runner() -> None:
                for i in ids:
                    spec = RunSpec(f"r{i}", ("true",), str(root), dict(env), str(logs / f"{i}.log"))
                    await executor.submit(spec)
                    if not (await executor.wait(spec.run_id)).succeeded:
                        failed.append(spec.run_id)

            gc.collect()
            cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(CONCURRENCY):
                    tg.start_soon(runner)
            return {
                "wall": time.perf_counter() - wall,
                "cpu": time.process_time() - cpu,
                "loop": time.thread_time() - thread,
            }

    figures = anyio.run(main, backend="asyncio", backend_options={"use_uvloop": uvloop_available()})
    assert not failed, f"{len(failed)} runs failed, e.g. {failed[0]}"
    return figures


def run() -> None:
    print(f"== spawn: the local executor alone, {RUNS} x true at concurrency {CONCURRENCY}")
    if not spawn.AVAILABLE:
        print(f"  (posix_spawn cannot be used here: {spawn.UNAVAILABLE}; Popen only)")
    variants: dict[str, dict[str, Any]] = {"popen, threads": {"fast_spawn": False}}
    if spawn.AVAILABLE:
        variants["posix_spawn, threads"] = {"fast_spawn": True, "spawn_threads": 2}
        variants["posix_spawn, loop"] = {"fast_spawn": True}  # the default
    results = {}
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        for label, options in variants.items():
            results[label] = measure(Path(tmp), label.replace(", ", "-"), **options)
    reference = results["popen, threads"]
    for label, r in results.items():
        print(
            f"  {label:22s} {RUNS / r['wall']:6.0f} runs/s  CPU per run: "
            f"process {r['cpu'] / RUNS * 1e6:5.0f} us, loop thread {r['loop'] / RUNS * 1e6:5.0f} us"
            f"  (process CPU {r['cpu'] / reference['cpu']:.2f}x popen's)"
        )


if __name__ == "__main__":
    run()
