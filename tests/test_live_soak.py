"""Soak: many random saves, made every way people make them, against a daemon running tasks.

Two tracks run short tasks while saves arrive every few tens of milliseconds: tasks added,
reworded, removed, keys of the person's own, status orders, written in place, renamed over,
vim-style, truncated then written, streamed in pieces. At the end, once the daemon is idle and
has written everything back: no save was reported as broken (none was: half-written reads must
not be), every file is valid JSON with every task and key the person wrote, in their order, and
the status of every task in the files is the daemon's. ``make soak`` runs it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.model import OWNED_FIELDS, Status, TaskKey

from . import live_harness as lh

pytestmark = [pytest.mark.anyio, pytest.mark.soak]

SAVES = 300
TRACKS = ("a", "b")


async def _in_place(path: Path, text: str) -> None:
    lh.write_in_place(path, text)


async def _rename(path: Path, text: str) -> None:
    lh.write_and_rename(path, text)


async def _vim(path: Path, text: str) -> None:
    lh.write_like_vim(path, text)


async def _truncate(path: Path, text: str) -> None:
    await lh.truncate_then_write(path, text, pause=0.02)


async def _pieces(path: Path, text: str) -> None:
    await lh.write_in_pieces(path, text, pieces=3, pause=0.02)


STYLES: list[Callable[[Path, str], Awaitable[None]]] = [
    _in_place,
    _rename,
    _vim,
    _truncate,
    _pieces,
]


def _current(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _render(
    current: dict[str, Any], mine: list[dict[str, Any]], order: tuple[str, str] | None
) -> str:
    on_disk = {t["id"]: t for t in current["features"]}
    items = []
    for task in mine:
        item = {k: v for k, v in on_disk.get(task["id"], {}).items() if k not in task}
        item = {**task, **{k: v for k, v in item.items() if k in OWNED_FIELDS}}
        if order is not None and order[0] == task["id"]:
            item["status"] = order[1]
        items.append(item)
    return lh.dump({**current, "features": items})


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_saves_against_a_running_daemon(
    tmp_path: Path, tracks_dir: Path, seed: int
) -> None:
    rng = random.Random(seed)
    ledger = tmp_path / "ledger"
    mine: dict[str, list[dict[str, Any]]] = {}
    counter = 0

    def new_task(track: str) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        ident = f"{track.upper()}{counter}"
        pause = rng.choice(["0", "0.02", "0.05"])
        return {"id": ident, "command": f"sleep {pause}; echo {track}:{ident} >> {ledger}"}

    for track in TRACKS:
        mine[track] = [new_task(track) for _ in range(5)]
        (tracks_dir / f"{track}.json").write_text(lh.dump({"features": mine[track]}))

    async with lh.live_daemon(tracks_dir, writeback_delay=0.02, max_parallel=3) as live:
        for _ in range(SAVES):
            track = rng.choice(TRACKS)
            path = tracks_dir / f"{track}.json"
            tasks = mine[track]
            order: tuple[str, str] | None = None
            what = rng.random()
            if what < 0.25 or len(tasks) < 3:
                tasks.append(new_task(track))
            elif what < 0.45:
                rng.choice(tasks)["description"] = rng.choice(["fix it", "naïve", "x" * 30])
            elif what < 0.55:
                rng.choice(tasks)["notes"] = [rng.randrange(100)]
            elif what < 0.65:
                tasks.remove(rng.choice(tasks))
            else:
                order = (rng.choice(tasks)["id"], rng.choice(["pending", "skipped", "complete"]))
            await rng.choice(STYLES)(path, _render(_current(path), tasks, order))
            await anyio.sleep(rng.uniform(0, 0.06))

        def idle_and_written() -> bool:
            if live.engine.busy() or live.engine.graph.ready_count():
                return False
            for track in TRACKS:
                doc = _current(tracks_dir / f"{track}.json")
                for item in doc["features"]:
                    state = live.engine.states[TaskKey(track, item["id"])]
                    if item.get("status", "pending") != state.status.value:
                        return False
            return True

        await live.until(idle_and_written, within=60)
        assert live.kinds("queue_file_invalid") == []
        for track in TRACKS:
            doc = _current(tracks_dir / f"{track}.json")
            assert [t["id"] for t in doc["features"]] == [t["id"] for t in mine[track]]
            for item, task in zip(doc["features"], mine[track], strict=True):
                for key, value in task.items():
                    assert item[key] == value, (track, key, item, task)
            states = [live.engine.states[TaskKey(track, t["id"])].status for t in mine[track]]
            assert all(s in (Status.COMPLETE, Status.SKIPPED) for s in states), states
            assert doc["summary"]["total"] == len(mine[track])
