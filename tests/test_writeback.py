"""The write-back on its own: failed writes, and what a read consumes."""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog.testing

from orchestrator import config, queuefile
from orchestrator import writeback as writeback_module
from orchestrator.clock import SystemClock
from orchestrator.daemon import Engine
from orchestrator.model import Status, TaskKey
from orchestrator.problems import Problem
from orchestrator.states import Event
from orchestrator.store import Store
from orchestrator.supervisor import _load_tracks
from orchestrator.writeback import Writeback

from .conftest import WriteTrack
from .fakes import FakeExecutor

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def daemon_parts(
    tracks: Path, kind: type[Writeback] = Writeback
) -> AsyncIterator[tuple[Engine, Writeback]]:
    """The engine and the write-back over ``tracks``, no workers (nothing runs)."""
    cfg = config.load(
        flags={"tracks": str(tracks), "state_dir": str(tracks.parent / "state")},
        env={},
        cwd=tracks.parent,
    )
    store = Store.open(cfg.state_dir, SystemClock())
    engine = Engine(cfg, store, FakeExecutor(), SystemClock())
    writeback = kind(engine, 0.0, quiet=0.0)
    _load_tracks(engine, cfg, writeback, store.load_tasks())
    engine.connect(lambda key: None, writeback.mark)
    try:
        yield engine, writeback
    finally:
        store.close()


def save(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(".tmp.json")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_failed_write_does_not_take_its_orders_twice(
    tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_track(
        "t", [{"id": "A", "status": "failed", "attempts": 2}, {"id": "B", "dependencies": ["A"]}]
    )
    async with daemon_parts(tracks_dir) as (engine, writeback):
        await writeback.sync("t")
        doc = json.loads(path.read_text())
        doc["features"][0]["status"] = "blocked"
        save(path, doc)

        with monkeypatch.context() as patch:
            patch.setattr(queuefile, "write_if_unchanged", disk_full)
            await writeback.sync("t")  # reads the order, cannot write
        key = TaskKey("t", "A")
        assert engine.states[key].status is Status.BLOCKED

        engine.order(key, Event.ORDER_RETRY, "retry")  # given from elsewhere meanwhile
        await writeback.sync("t")  # the disk works again
        written = json.loads(path.read_text())["features"][0]
        # "blocked" in the file was spent already: the retry stands (A was launched again).
        assert engine.states[key].status is Status.IN_PROGRESS
        assert written["status"] == "in_progress"


async def test_a_failed_write_is_tried_again_by_itself(
    tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_track("t", [{"id": "A", "status": "failed"}])
    monkeypatch.setattr(writeback_module, "WRITE_RETRY_SECONDS", 0.05)
    async with daemon_parts(tracks_dir) as (engine, writeback), anyio.create_task_group() as tg:
        await tg.start(writeback.run)
        with structlog.testing.capture_logs() as logged:
            with monkeypatch.context() as patch:
                patch.setattr(queuefile, "write_if_unchanged", disk_full)
                await writeback.sync("t")
                await writeback.sync("t")
                with anyio.fail_after(5):
                    while len(logged) < 4:  # noqa: ASYNC110
                        await anyio.sleep(0.01)  # tried again by itself, twice or more
                assert "summary" not in json.loads(path.read_text())
            # The file is renamed into place (in a worker thread) before the write returns
            # and says so: wait for the words, then look at the file.
            again = "queue file written again"
            with anyio.fail_after(5):
                while not any(e["event"] == again for e in logged):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert "summary" in json.loads(path.read_text())
        failed = [e for e in logged if e["event"].startswith("cannot write the queue file")]
        # Said once, not at every try: a disk full all night makes one warning.
        assert [e["log_level"] for e in failed[:3]] == ["warning", "debug", "debug"]
        assert failed[0]["file"] == "tracks/t.json", failed[0]
        assert [e["event"] for e in logged if e not in failed] == ["queue file written again"]
        assert engine.stats["file_writes"] > 0
        tg.cancel_scope.cancel()


class WholeFile(Writeback):
    """The write-back with every quick write made on the whole file (parsed, spliced)."""

    async def _quick(self, track: Any, known: Any, read: Any, keys: Any) -> list[Problem]:
        return await self._quick_in_full(track, known, read, keys)


class Counting(Writeback):
    """The write-back as it is, noting each quick write it made on the whole file instead."""

    in_full = 0

    async def _quick_in_full(self, track: Any, known: Any, read: Any, keys: Any) -> list[Problem]:
        self.in_full += 1
        return await super()._quick_in_full(track, known, read, keys)


LAYOUTS: dict[str, Callable[[Any], str]] = {
    "two spaces": lambda doc: json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
    "tabs, CRLF and a BOM": lambda doc: (
        "\ufeff" + json.dumps(doc, indent="\t").replace("\n", "\r\n")
    ),
    "one line": json.dumps,
    "compact": lambda doc: json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
async def test_quick_writes_are_the_writes_of_the_whole_file(tmp_path: Path, layout: str) -> None:
    tasks: list[dict[str, Any]] = [
        {"id": f"T{i}", "description": "naïve {x} [y]", "status": "pending", "mine": {"k": i}}
        for i in range(8)
    ]
    tasks.append({"id": "T8", "status": "pending", "description": '{"status": "x"}'})
    tasks[5]["files_actually_changed"] = []
    doc = {"track": {"name": "t"}, "features": tasks, "notes": ["kept"]}
    paths = []
    for side in ("quick", "whole"):
        (tmp_path / side / "tracks").mkdir(parents=True)
        paths.append(tmp_path / side / "tracks" / "t.json")
        paths[-1].write_text(LAYOUTS[layout](doc), encoding="utf-8")
    async with (
        daemon_parts(paths[0].parent, Counting) as (quick, quick_wb),
        daemon_parts(paths[1].parent, WholeFile) as (whole, whole_wb),
    ):
        quick.paused = whole.paused = True  # nothing starts by itself
        assert isinstance(quick_wb, Counting)
        in_full = []
        for round_ in range(6):
            for engine in (quick, whole):
                change(engine, round_)
            before = quick_wb.in_full
            await quick_wb.flush()
            await whole_wb.flush()
            assert paths[0].read_bytes() == paths[1].read_bytes(), round_
            if quick_wb.in_full > before:
                in_full.append(round_)
        # Only a write that changes track.paused (rounds 3, 4) or first adds the summary
        # (round 0) is made on the whole file: the others re-render only what changed.
        assert set(in_full) <= {0, 3, 4}, in_full
        written = json.loads(paths[0].read_bytes().decode("utf-8").removeprefix("\ufeff"))
        assert written["features"][4]["status"] == "complete"
        assert written["summary"]["complete"] == 2
        mine, reference = quick.store.written("t"), whole.store.written("t")
        assert mine is not None
        assert reference is not None
        assert (mine.digest, mine.base) == (reference.digest, reference.base)


def change(engine: Engine, round_: int) -> None:
    """The same changes in every engine: attempts start and end, orders, a pause."""
    key = TaskKey("t", f"T{round_}")
    state = engine.states[key]
    stamp = f"2025-01-01T00:00:0{round_}Z"
    engine.apply(key, state.with_owned(status=Status.IN_PROGRESS, attempts=1, last_attempt=stamp))
    if round_:
        before = TaskKey("t", f"T{round_ - 1}")
        files = ("src/a.py", "é.py") if round_ % 2 else ()
        finished = engine.states[before].with_owned(
            status=Status.COMPLETE if round_ > 3 else Status.FAILED,
            passes=round_ > 3,
            error=None if round_ > 3 else "exit 1: naïve",
            files_actually_changed=files,
        )
        engine.apply(before, finished)
    if round_ == 2:
        engine.order(TaskKey("t", "T7"), Event.ORDER_SKIP, "not needed")
    if round_ == 3:
        engine.pause_track("t", "for a while")
    if round_ == 4:
        engine.resume_track("t")
