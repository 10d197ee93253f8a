"""The write-back on its own: failed writes, and what a read consumes."""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator import config, queuefile
from orchestrator import writeback as writeback_module
from orchestrator.clock import SystemClock
from orchestrator.daemon import Engine
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event
from orchestrator.store import Store
from orchestrator.supervisor import _load_tracks
from orchestrator.writeback import Writeback

from .conftest import WriteTrack
from .fakes import FakeExecutor

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def daemon_parts(tracks: Path) -> AsyncIterator[tuple[Engine, Writeback]]:
    """The engine and the write-back over ``tracks``, no workers (nothing runs)."""
    cfg = config.load(
        flags={"tracks": str(tracks), "state_dir": str(tracks.parent / "state")},
        env={},
        cwd=tracks.parent,
    )
    store = Store.open(cfg.state_dir, SystemClock())
    engine = Engine(cfg, store, FakeExecutor(), SystemClock())
    writeback = Writeback(engine, 0.0, quiet=0.0)
    _load_tracks(engine, cfg, writeback)
    engine.connect(lambda key: None, writeback.mark)
    try:
        yield engine, writeback
    finally:
        store.close()


def save(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(".tmp.json")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def disk_full(*args: object) -> None:
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
    async with daemon_parts(tracks_dir) as (_engine, writeback), anyio.create_task_group() as tg:
        await tg.start(writeback.run)
        with monkeypatch.context() as patch:
            patch.setattr(queuefile, "write_if_unchanged", disk_full)
            await writeback.sync("t")
            assert "summary" not in json.loads(path.read_text())
        with anyio.fail_after(5):
            while "summary" not in json.loads(path.read_text()):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
