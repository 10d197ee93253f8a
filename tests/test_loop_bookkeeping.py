"""The engine's bookkeeping of Ralph loops under random orders, pauses, removals and re-adds.

A live daemon runs two tracks of tasks whose runs are slow to end (they ignore SIGTERM, so a
cut-short attempt lasts until the kill grace), while a seeded random sequence of actions comes
in between: orders (retry, skip, accept, block), track and daemon pauses and resumes, tasks
and whole files removed and put back, dependencies added to a running task. Throughout:

- a track's ``running`` count is its launched, not ended loops plus its queued launches;
- a task is queued only while a loop of it is launched, and only in progress;
- no two Ralph loops of one task, nor two runs of its command, ever overlap.

At the end, everything put back and resumed, once the daemon is idle: no slot is taken, every
file says what the engine knows, and the store agrees with the engine. ``make test`` runs two
short seeds; ``make soak`` runs longer ones.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator import worker
from orchestrator.daemon import Engine
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event

from . import live_harness as lh

pytestmark = pytest.mark.anyio

KILL_GRACE = 0.3
TRACKS: dict[str, dict[str, Any]] = {
    "t": {"tasks": "ABCD", "concurrency": 2},
    "u": {"tasks": "EF", "concurrency": 1},
}
ORDERS = (Event.ORDER_RETRY, Event.ORDER_SKIP, Event.ORDER_ACCEPT, Event.ORDER_BLOCK)


def _script(tmp_path: Path) -> Path:
    """One run of a task: note an overlap if an earlier run of the same task is still alive,
    ignore SIGTERM, take a while, and pass or fail at random."""
    script = tmp_path / "run.sh"
    ledger = tmp_path / "ledger"
    script.write_text(
        "trap '' TERM\n"
        f'pids={tmp_path}/"$1".pids; touch "$pids"\n'
        'for p in $(cat "$pids"); do\n'
        f'  grep -qs "run.sh $1" /proc/$p/cmdline 2>/dev/null && echo "overlap $1" >> {ledger}\n'
        "done\n"
        'echo $$ >> "$pids"\n'
        f'echo "start $1" >> {ledger}\n'
        "sleep 0.$(( $(od -An -N1 -tu1 /dev/urandom) % 8 + 2 ))\n"
        "exit $(( $(od -An -N1 -tu1 /dev/urandom) % 3 == 0 ))\n"
    )
    return script


def _task(script: Path, ident: str) -> dict[str, Any]:
    return {"id": ident, "command": f"sh {script} {ident}", "max_iterations": 3}


class Checker:
    """Checks the engine's loop bookkeeping and counts Ralph loops per task."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.active: Counter[TaskKey] = Counter()
        self.problems: list[str] = []
        self.loops = 0

    def check(self, when: str) -> None:
        engine = self.engine
        loops, queued = engine._loops, engine._queued
        for track, count in engine.running.items():
            expected = sum(k.track == track for k in loops) + sum(k.track == track for k in queued)
            if count != expected:
                self.problems.append(f"{when}: running[{track}] = {count}, loops say {expected}")
        if not queued <= loops:
            self.problems.append(f"{when}: queued without a loop: {queued - loops}")
        for key in queued:
            if engine.states[key].status is not Status.IN_PROGRESS:
                self.problems.append(f"{when}: {key} queued, {engine.states[key].status}")
        if not set(engine._scopes) <= loops:
            self.problems.append(f"{when}: a scope without a loop: {set(engine._scopes) - loops}")

    def counting(self, run_task: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def counted(engine: Engine, key: TaskKey, resume: Any = None) -> None:
            self.active[key] += 1
            self.loops += 1
            if self.active[key] > 1:
                self.problems.append(f"two Ralph loops of {key} at once")
            try:
                await run_task(engine, key, resume)
            finally:
                self.active[key] -= 1

        return counted


class Actions:
    """The random actions, on the live daemon and its files."""

    def __init__(self, live: lh.Live, script: Path, rng: random.Random) -> None:
        self.live = live
        self.script = script
        self.rng = rng
        self.removed_tasks: dict[str, set[str]] = {name: set() for name in TRACKS}
        self.removed_files: set[str] = set()
        self.cut: TaskKey | None = None

    @property
    def engine(self) -> Engine:
        return self.live.engine

    def path(self, name: str) -> Path:
        return self.live.tracks / f"{name}.json"

    def keys(self) -> list[TaskKey]:
        return [k for k in self.engine.graph.keys(None) if k.track in self.engine.tracks]

    def order(self) -> str:
        """An order on any task, or (more often) one that cuts a running task short, or a
        retry of the task cut short last (its loop may still be ending)."""
        engine = self.engine
        running = [k for k in engine.running_keys() if k in engine.graph]
        if self.cut is not None and self.cut in engine.graph and self.rng.random() < 0.7:
            key, self.cut = self.cut, None
            engine.order(key, Event.ORDER_RETRY, "random retry")
            return f"retry {key}, cut short just now"
        if running and self.rng.random() < 0.6:
            key = self.rng.choice(running)
            event = self.rng.choice(ORDERS[1:])
            self.cut = key
        else:
            keys = self.keys()
            if not keys:
                return "no order: no task"
            key = self.rng.choice(keys)
            event = self.rng.choice((*ORDERS, Event.ORDER_RETRY, Event.ORDER_RETRY))
        engine.order(key, event, "random order")
        return f"{event.name} {key}"

    def pause(self) -> str:
        """Pause the daemon or a track, or (more often, once something is) resume."""
        engine = self.engine
        paused = [n for n in engine.tracks if engine.graph.track_paused(n)]
        if (engine.paused or paused) and self.rng.random() < 0.7:
            if engine.paused:
                engine.resume_daemon()
                return "resume the daemon"
            name = self.rng.choice(paused)
            engine.resume_track(name)
            return f"resume {name}"
        if self.rng.random() < 0.3:
            engine.pause_daemon("random pause")
            return "pause the daemon"
        if not engine.tracks:
            return "no pause: no track"
        name = self.rng.choice(sorted(engine.tracks))
        engine.pause_track(name, "random pause")
        return f"pause {name}"

    def _edit(self, name: str, change: Callable[[list[dict[str, Any]]], None]) -> None:
        path = self.path(name)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # being written by the daemon this very moment: another time
        change(doc["features"])
        lh.write_and_rename(path, lh.dump(doc))

    def task_out_or_in(self) -> str:
        name = self.rng.choice([n for n in TRACKS if n not in self.removed_files] or ["-"])
        if name == "-":
            return "no edit: every file removed"
        gone = self.removed_tasks[name]
        if gone and self.rng.random() < 0.6:
            ident = self.rng.choice(sorted(gone))
            gone.discard(ident)
            self._edit(name, lambda items: items.append(_task(self.script, ident)))
            return f"put {name}:{ident} back"
        present = [i for i in TRACKS[name]["tasks"] if i not in gone]
        if len(present) <= 1:
            return "no edit: keep one task"
        ident = self.rng.choice(present)
        gone.add(ident)
        self._edit(name, lambda items: items.remove(next(t for t in items if t["id"] == ident)))
        return f"remove {name}:{ident}"

    def file_out_or_in(self) -> str:
        if self.removed_files and self.rng.random() < 0.7:
            name = self.removed_files.pop()
            self.write(name)
            return f"put {name}.json back"
        name = self.rng.choice(sorted(TRACKS))
        if name in self.removed_files:
            return "no edit"
        self.removed_files.add(name)
        self.path(name).unlink()
        return f"remove {name}.json"

    def depend(self) -> str:
        """Give a running task of ``u`` a dependency on a task of ``t``, or take it away."""
        if "u" in self.removed_files:
            return "no edit"
        target = self.rng.choice(TRACKS["t"]["tasks"])

        def change(items: list[dict[str, Any]]) -> None:
            for item in items:
                if item.get("dependencies"):
                    item.pop("dependencies")
                elif self.rng.random() < 0.5:
                    item["dependencies"] = [f"t:{target}"]

        self._edit("u", change)
        return f"dependencies of u changed (t:{target})"

    def write(self, name: str) -> None:
        """The file as first written, less the tasks removed (statuses: the daemon's)."""
        items = [
            _task(self.script, i)
            for i in TRACKS[name]["tasks"]
            if i not in self.removed_tasks[name]
        ]
        doc = {"track": {"concurrency": TRACKS[name]["concurrency"]}, "features": items}
        lh.write_and_rename(self.path(name), lh.dump(doc))

    def restore(self) -> None:
        """Every file and task back, nothing paused."""
        for name in TRACKS:
            self.removed_tasks[name].clear()
            self.write(name)
        self.removed_files.clear()
        self.engine.resume_daemon()
        for name in TRACKS:
            self.engine.resume_track(name)


async def _run(tmp_path: Path, seed: int, seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    script = _script(tmp_path)
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    for name, spec in TRACKS.items():
        doc = {
            "track": {"concurrency": spec["concurrency"]},
            "features": [_task(script, i) for i in spec["tasks"]],
        }
        (tracks / f"{name}.json").write_text(lh.dump(doc))
    checker: Checker | None = None
    counted = worker.run_task

    async def run_task(engine: Engine, key: TaskKey, resume: Any = None) -> None:
        assert checker is not None
        await checker.counting(counted)(engine, key, resume)

    monkeypatch.setattr(worker, "run_task", run_task)
    async with lh.live_daemon(
        tracks, kill_grace=KILL_GRACE, watch_quiet=0.05, max_parallel=3
    ) as live:
        checker = Checker(live.engine)
        live.engine.listeners.append(lambda kind, subject, data: checker.check(kind))
        actions = Actions(live, script, rng)
        menu = [
            (actions.order, 8),
            (actions.pause, 2),
            (actions.task_out_or_in, 2),
            (actions.file_out_or_in, 1),
            (actions.depend, 1),
        ]
        done: list[str] = []
        with anyio.move_on_after(seconds):
            while True:
                action = rng.choices([a for a, _ in menu], [w for _, w in menu])[0]
                done.append(action())
                checker.check(done[-1])
                wait = rng.choice([None, 0, 0.01, 0.05, 0.1, 0.2])
                if wait is not None:  # (None: the next action in the same turn)
                    await anyio.sleep(wait)
                    checker.check("a while later")
        context = f"seed {seed}, actions: {done}"
        assert checker.problems == [], context
        actions.restore()
        engine = live.engine

        def settled() -> bool:
            graph = engine.graph
            present = all(
                TaskKey(n, i) in graph for n, spec in TRACKS.items() for i in spec["tasks"]
            )
            return present and not engine.busy() and graph.ready_count() == 0

        await live.until(settled, within=30)
        checker.check("at the end")
        assert checker.problems == [], context
        assert engine.running == dict.fromkeys(TRACKS, 0), context
        assert not engine._loops, context
        assert not engine._queued, context
        ledger = lh.ledger(tmp_path)
        assert "overlap" not in ledger, context
        assert checker.loops > 0

        def files_say_so() -> bool:
            # Statuses only: the restored files dropped the other daemon-owned fields, which
            # then keep the person's value until the daemon changes them again (merge.py).
            for name in TRACKS:
                try:
                    items = live.doc(name)["features"]
                except (OSError, ValueError):
                    return False
                for item in items:
                    state = engine.states[TaskKey(name, item["id"])]
                    if item.get("status", "pending") != state.status.value:
                        return False
            return True

        await live.until(files_say_so)
        for key in engine.graph.keys(None):
            stored = engine.store.task(key)
            assert stored is not None
            assert stored.status is engine.states[key].status, (key, context)


@pytest.mark.parametrize("seed", [11, 12])
async def test_loop_bookkeeping_holds_under_random_actions(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _run(tmp_path, seed, 4.0, monkeypatch)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(20, 30))
async def test_loop_bookkeeping_holds_under_random_actions_soak(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _run(tmp_path, seed, 10.0, monkeypatch)
