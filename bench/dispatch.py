"""Dispatch throughput, chain latency and CPU per task, against make and ninja in the same run.

Every task is ``/bin/true`` (the program; ``true`` alone would be the shell's builtin, and
ninja would run no program at all). ninja runs each edge through ``/bin/sh -c``; make execs a
recipe with no shell syntax directly, and so does the daemon (a string command with no shell
syntax is started without the shell; an argv list always is). The daemon runs the graph three
ways: ``"command": ["/bin/true"]``, ``"command": "/bin/true"`` (the same start as the list),
and ``"command": "/bin/true;"``, whose shell syntax makes it run through ``/bin/sh -c`` as
ninja runs every edge.

* dispatch: 5,000 tasks in 20 tracks with cross-track dependencies, no verification, state
  persisted, at parallelism 2; the same graph as a Makefile (``make -j2``) and a
  ``build.ninja`` (``ninja -j2``). Targets: at least 1.0x ninja, aiming for 0.7x make.
* chain: 2,000 tasks each depending on the previous. Target: at least 0.8x make.
* trigger latency, on the chain (where nothing waits for a slot): from a dependency's
  completion being recorded to the dependent's process starting. Targets: p50 2 ms, p99 10 ms.
* daemon CPU per spawned task (target 0.25 ms), with and without 1 GB more daemon memory.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.daemon import Engine
from orchestrator.executors.base import RunInfo, RunSpec
from orchestrator.executors.local import LocalExecutor
from orchestrator.supervisor import uvloop_available

from .common import run_daemon, scratch_root
from .gen import TRUE, write_chain, write_tracks

PARALLEL = 2
TASKS = 5000
CHAIN = 2000


class TimedExecutor(LocalExecutor):
    """The local executor, noting when each run's process started (for trigger latency)."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.spawned: dict[str, float] = {}

    async def submit(self, spec: RunSpec) -> RunInfo:
        info = await super().submit(spec)
        self.spawned[spec.run_id] = time.perf_counter()
        return info


def graph_of(tracks: Path) -> dict[str, list[str]]:
    """Task ref -> the refs it depends on, read back from the queue files."""
    deps: dict[str, list[str]] = {}
    for path in sorted(tracks.glob("*.json")):
        for task in json.loads(path.read_text())["features"]:
            wanted = [d if ":" in d else f"{path.stem}:{d}" for d in task["dependencies"]]
            deps[f"{path.stem}:{task['id']}"] = wanted
    return deps


def _name(ref: str) -> str:
    return ref.replace(":", "__")


def write_build_files(deps: dict[str, list[str]], directory: Path) -> None:
    """The same graph as a Makefile and a build.ninja, every recipe ``/bin/true``."""
    targets = " ".join(_name(r) for r in deps)
    make = [f".PHONY: all {targets}", f"all: {targets}"]
    ninja = ["rule run", f"  command = {TRUE}"]
    for ref, wanted in deps.items():
        make += [f"{_name(ref)}: {' '.join(_name(d) for d in wanted)}", f"\t{TRUE}"]
        order = f" || {' '.join(_name(d) for d in wanted)}" if wanted else ""
        ninja.append(f"build {_name(ref)}: run{order}")
    ninja.append(f"default {targets}")
    (directory / "Makefile").write_text("\n".join(make) + "\n")
    (directory / "build.ninja").write_text("\n".join(ninja) + "\n")


def _children_cpu() -> float:
    """CPU seconds used by this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def trigger_latencies(tracks: Path, state: Path, result: dict[str, Any]) -> list[float]:
    """For each task with dependencies: its spawn minus its last dependency's completion."""
    db = sqlite3.connect(state / "state.db")
    rows = db.execute("SELECT id, track, task_id FROM attempts")
    run_of = {f"a{i}-run": f"{track}:{task}" for i, track, task in rows}
    spawned = {run_of[r]: t for r, t in result["spawned"].items() if r in run_of}
    out = []
    for ref, wanted in graph_of(tracks).items():
        if wanted and ref in spawned:
            last = max(result["completed"][d] for d in wanted)
            out.append((spawned[ref] - last) * 1000)
    return sorted(out)


def timed_daemon(tracks: Path, state: Path, **flags: Any) -> dict[str, Any]:
    executor = TimedExecutor()
    completed: dict[str, float] = {}

    def ready(engine: Engine) -> None:
        def listen(kind: str, subject: object, data: Any) -> None:
            if kind == "task_complete":
                completed[str(subject)] = time.perf_counter()

        engine.listeners.append(listen)

    result = run_daemon(
        tracks, state, executor=executor, on_ready=ready, max_parallel=PARALLEL, **flags
    )
    assert result["code"] == 0, "the benchmark run did not complete every task"
    result.update(spawned=executor.spawned, completed=completed)
    return result


FORMS: dict[str, str | list[str]] = {"exec": [TRUE], "string": TRUE, "shell": f"{TRUE};"}
HOW = {
    "exec": "an argv list, exec'd as make execs a plain recipe",
    "string": "a string with no shell syntax: exec'd the same",
    "shell": "shell syntax: through /bin/sh -c, as ninja runs every edge",
}


def _dispatch(root: Path, tools: set[str]) -> None:
    runs: dict[str, dict[str, Any]] = {}
    tasks_cpu: dict[str, float] = {}
    for form, command in FORMS.items():
        tracks = root / form / "tracks"
        write_tracks(tracks, 20, TASKS // 20, command=command, cross=0.05)
        before = _children_cpu()
        runs[form] = timed_daemon(tracks, root / form / "state")
        tasks_cpu[form] = (_children_cpu() - before) / TASKS * 1000
    write_build_files(graph_of(root / "exec" / "tracks"), root)
    rates = {form: TASKS / run["wall"] for form, run in runs.items()}
    for tool in sorted(tools):
        rates[tool] = TASKS / timed([tool, f"-j{PARALLEL}"], root)
    labels = {
        **{form: f"orchestratord {json.dumps(command)}" for form, command in FORMS.items()},
        **{tool: f"{tool} -j{PARALLEL}" for tool in tools},
    }
    print(f"  {TASKS} tasks of {TRUE} in 20 tracks:")
    for name, rate in rates.items():
        print(f"    {labels[name]:32s} {rate:5.0f} tasks/s  {HOW.get(name, '')}".rstrip())
    for tool, form, target in (
        ("ninja", "string", "1.0x"),
        ("ninja", "shell", ""),
        ("make", "exec", "0.7x"),
    ):
        if tool in rates:
            ratio = rates[form] / rates[tool]
            aim = f" (target {target})" if target else ""
            print(f"    {labels[form]} / {labels[tool]}: {ratio:.2f}x{aim}")
    ours = runs["exec"]
    per_task = ours["cpu"] / TASKS * 1000
    startup = ours["startup_cpu"] / TASKS * 1000
    print(f"    daemon CPU per task: {per_task:.3f} ms (target 0.25 ms)")
    print(
        f"      of which start-up {startup:.3f} ms ({ours['startup_cpu'] * 1000:.0f} ms once),"
        f" running the tasks {per_task - startup:.3f} ms"
    )
    print(
        f"      string: {runs['string']['cpu'] / TASKS * 1000:.3f} ms;"
        f" through /bin/sh -c: {runs['shell']['cpu'] / TASKS * 1000:.3f} ms"
    )
    print(
        f"    CPU per task of the tasks themselves: {tasks_cpu['exec']:.3f} ms exec'd,"
        f" {tasks_cpu['string']:.3f} ms as a string, {tasks_cpu['shell']:.3f} ms through /bin/sh -c"
    )
    cores = os.cpu_count() or 1
    if "ninja" in rates:
        room = cores / rates["ninja"] * 1000 - tasks_cpu["string"]
        print(
            f"    on {cores} cores, matching ninja leaves the daemon at most {room:.3f} ms of CPU"
            " per task"
        )


def _chain(root: Path, tools: set[str]) -> None:
    rates: dict[str, float] = {}
    latencies: list[float] = []
    for form in ("exec", "shell"):
        tracks = root / form / "tracks"
        write_chain(tracks, CHAIN, FORMS[form])
        ours = timed_daemon(tracks, root / form / "state")
        rates[form] = CHAIN / ours["wall"]
        if form == "exec":
            latencies = trigger_latencies(tracks, root / form / "state", ours)
    line = f'  chain of {CHAIN}, ["{TRUE}"]: {rates["exec"]:.0f} links/s'
    line += f" ({1000 / rates['exec']:.2f} ms per link)"
    if "make" in tools:
        links = [f"C{i}:{' C' + str(i - 1) if i else ''}\n\t{TRUE}" for i in range(CHAIN)]
        phony = " ".join(f"C{i}" for i in range(CHAIN))
        (root / "Makefile").write_text(
            f".PHONY: all {phony}\nall: C{CHAIN - 1}\n" + "\n".join(links) + "\n"
        )
        make_rate = CHAIN / timed(["make", "-s", f"-j{PARALLEL}"], root)
        line += f"; make {make_rate:.0f}/s -> {rates['exec'] / make_rate:.2f}x (target 0.8x)"
    print(line)
    print(f'    "{FORMS["shell"]}" through /bin/sh -c: {1000 / rates["shell"]:.2f} ms per link')
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    print(f"  trigger latency over {len(latencies)} links: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print("    (targets: p50 under 2 ms, p99 under 10 ms)")


def _memory_independence(root: Path, tools: set[str]) -> None:
    figures = []
    for label, ballast in (("small", 0), ("1gb", 1024)):
        tracks = root / label / "tracks"
        write_tracks(tracks, 5, 200, command=[TRUE], cross=0.05)
        result = run_daemon(
            tracks, root / label / "state", ballast_mb=ballast, max_parallel=PARALLEL
        )
        figures.append(result["cpu"] / 1000 * 1000)
    print(
        f"  CPU per task: {figures[0]:.3f} ms in a small daemon, {figures[1]:.3f} ms with 1 GB "
        f"more memory ({figures[1] / figures[0]:.2f}x: spawning does not copy the daemon)"
    )


def run() -> None:
    print(f"== dispatch (issue 3): parallelism {PARALLEL}, uvloop {uvloop_available()}")
    tools = {t for t in ("make", "ninja") if shutil.which(t)}
    if len(tools) < 2:
        print("  (make or ninja not installed: apt-get install make ninja-build)")
    for part in (_dispatch, _chain, _memory_independence):
        with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
            part(Path(tmp), tools)


if __name__ == "__main__":
    run()
