"""``python -m bench ray``: what running on Ray costs, against local runs in the same run.

Starts one Ray head on 127.0.0.1 (as the ``ray`` tests do) and measures:

* latency of one short run (``true``), submit to result, local vs Ray, at two poll intervals;
* throughput: 16 short runs submitted at once (the head offers 8 CPUs, one per run);
* memory per running job on the node: the resident memory the head's process tree gains
  while 8 jobs run ``sleep`` (Ray's job supervisor, the shell, the wrapper, ``timeout``);
* the daemon's own CPU time per Ray run (polling and log streaming).

Skips with a message when Ray is not installed (``make test-ray`` installs it).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from orchestrator.executors.base import Executor, RunSpec, RunState
from orchestrator.executors.local import LocalExecutor
from orchestrator.executors.ray import RayCluster, RayExecutor

SEQUENTIAL = 10
CONCURRENT = 16
RESIDENT = 8


def _tree_rss(root: int) -> tuple[int, int]:
    """Resident bytes and process count of ``root`` and all its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[pid] = int(line.split()[1]) * 1024
    total, count = 0, 0
    for pid, resident in rss.items():
        walk = pid
        while walk > 1 and walk != root:
            walk = parents.get(walk, 1)
        if walk == root:
            total += resident
            count += 1
    return total, count


def _spec(directory: str, name: str, argv: tuple[str, ...]) -> RunSpec:
    return RunSpec(name, argv, directory, {"PATH": "/usr/bin:/bin"}, f"{directory}/{name}.log")


async def _latency(executor: Executor, directory: str, tag: str) -> list[float]:
    times: list[float] = []
    for i in range(SEQUENTIAL):
        spec = _spec(directory, f"{tag}-{i}", ("true",))
        began = time.perf_counter()
        info = await executor.wait((await executor.submit(spec)).run_id)
        times.append(time.perf_counter() - began)
        assert info.succeeded, info
    return times


async def _burst(executor: Executor, directory: str, tag: str) -> float:
    specs = [_spec(directory, f"{tag}-{i}", ("true",)) for i in range(CONCURRENT)]
    began = time.perf_counter()
    for spec in specs:
        await executor.submit(spec)
    for spec in specs:
        assert (await executor.wait(spec.run_id)).succeeded
    return time.perf_counter() - began


async def _until_running(executor: Executor, run_id: str) -> None:
    for _ in range(100_000):
        if (await executor.status(run_id)).state is RunState.RUNNING:
            return
        await anyio.sleep(0.1)


def _describe(name: str, times: list[float]) -> str:
    return (
        f"{name:<28} mean {statistics.mean(times) * 1000:7.1f} ms   "
        f"median {statistics.median(times) * 1000:7.1f} ms   max {max(times) * 1000:7.1f} ms"
    )


async def _measure(address: str, head_pid: int) -> None:
    directory = tempfile.mkdtemp(prefix="bench-ray-")
    async with LocalExecutor(1.0) as local:
        local_times = await _latency(local, directory, "local")
        local_burst = await _burst(local, directory, "local-burst")
    print(_describe("local, one run", local_times))
    results: dict[float, list[float]] = {}
    cpu_per_run = 0.0
    for interval in (0.1, 1.0):
        cluster = RayCluster(address, job_prefix=f"bench{interval:g}-", poll_interval=interval)
        async with RayExecutor(cluster, kill_grace=1.0) as ray:
            cpu = time.process_time()
            results[interval] = await _latency(ray, directory, f"seq{interval:g}")
            if interval == 0.1:
                cpu_per_run = (time.process_time() - cpu) / SEQUENTIAL
        print(_describe(f"ray, one run (poll {interval:g} s)", results[interval]))
    overhead = statistics.median(results[0.1]) - statistics.median(local_times)
    print(f"{'ray overhead per run':<28} {overhead * 1000:7.1f} ms (median, poll 0.1 s)")
    print(f"{'daemon CPU per ray run':<28} {cpu_per_run * 1000:7.1f} ms (submit, polls, log)")
    cluster = RayCluster(address, job_prefix="bench-burst-", poll_interval=0.1)
    async with RayExecutor(cluster, kill_grace=1.0) as ray:
        ray_burst = await _burst(ray, directory, "burst")
        print(
            f"{CONCURRENT} runs at once{'':<15} local {local_burst:6.2f} s   ray {ray_burst:6.2f} s"
            f"   ({CONCURRENT / ray_burst:.1f} runs/s on 8 logical CPUs)"
        )
        before, procs_before = _tree_rss(head_pid)
        specs = [_spec(directory, f"sleep-{i}", ("sleep", "60")) for i in range(RESIDENT)]
        for spec in specs:
            await ray.submit(spec)
        with anyio.fail_after(120):
            for spec in specs:
                await _until_running(ray, spec.run_id)
        await anyio.sleep(1.0)
        after, procs_after = _tree_rss(head_pid)
        for spec in specs:
            await ray.cancel(spec.run_id, 1.0)
    per_job = (after - before) / RESIDENT
    print(
        f"{'memory per running job':<28} {per_job / (1 << 20):7.1f} MiB resident on the node "
        f"({(procs_after - procs_before) / RESIDENT:.1f} processes per job)"
    )
    print(f"{'the idle head':<28} {before / (1 << 20):7.1f} MiB in {procs_before} processes")


def run() -> None:
    print("ray: the Ray executor against local runs")
    try:
        from tests.ray_head import ray_installed, start_head  # noqa: PLC0415
    except ImportError:
        print("ray: skipped (run from the repository: the head is started as in the tests)")
        return
    if not ray_installed():
        print("ray: skipped: Ray is not installed (make test-ray installs it)")
        return
    began = time.perf_counter()
    head = start_head()
    print(f"{'head start':<28} {time.perf_counter() - began:7.1f} s")
    try:
        anyio.run(_measure, head.address, head.proc.pid)
    finally:
        left = head.stop()
        if left:
            print(f"warning: processes of the head left: {left}", file=sys.stderr)
