"""Live editing against a running daemon: real edits, real watcher, real processes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import inotify
from orchestrator.model import Status, TaskKey

from . import live_harness as lh
from .conftest import WriteTrack

pytestmark = pytest.mark.anyio


def base_doc(tmp_path: Path) -> dict[str, Any]:
    return {
        "project": "p",
        "notes": "a key the daemon does not know",
        "features": [{"id": "A1", "command": lh.note("A1", tmp_path), "owner": "me"}],
    }


def with_new_task(doc: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    doc["features"][0]["description"] = "edited"
    doc["features"].append({"id": "NEW", "command": lh.note("NEW", tmp_path)})
    return doc


Edit = Callable[[Path, Path], Awaitable[None]]


def edited(path: Path, tmp: Path) -> str:
    return lh.dump(with_new_task(json.loads(path.read_text()), tmp))


async def _in_place(path: Path, tmp: Path) -> None:
    lh.write_in_place(path, edited(path, tmp))


async def _rename(path: Path, tmp: Path) -> None:
    lh.write_and_rename(path, edited(path, tmp))


async def _vim_like(path: Path, tmp: Path) -> None:
    lh.write_like_vim(path, edited(path, tmp))


async def _truncate(path: Path, tmp: Path) -> None:
    await lh.truncate_then_write(path, edited(path, tmp))


async def _pieces(path: Path, tmp: Path) -> None:
    await lh.write_in_pieces(path, edited(path, tmp))


async def _sed(path: Path, tmp: Path) -> None:
    new = json.dumps({"id": "NEW", "command": lh.note("NEW", tmp)}).replace("/", r"\/")
    lh.sed_in_place(path, rf's/"features": \[/"features": [{new},/')
    lh.sed_in_place(path, r's/"owner": "me"/"owner": "me", "description": "edited"/')


async def _jq(path: Path, tmp: Path) -> None:
    if lh.tool("jq") is None:
        pytest.skip("jq is not installed (.ci/run installs it)")
    task = json.dumps({"id": "NEW", "command": lh.note("NEW", tmp)})
    lh.jq_and_move(path, f'.features += [{task}] | .features[0].description = "edited"')


async def _vim(path: Path, tmp: Path) -> None:
    if lh.tool("vim") is None:
        pytest.skip("vim is not installed (.ci/run installs it)")
    new = json.dumps({"id": "NEW", "command": lh.note("NEW", tmp)})
    lh.vim_substitute(path, r'"features": \[', f'"features": [{new},')
    lh.vim_substitute(path, '"owner": "me"', '"owner": "me", "description": "edited"')


EDITS: dict[str, Edit] = {
    "in-place": _in_place,
    "temp-and-rename": _rename,
    "vim-like-backup": _vim_like,
    "vim": _vim,
    "sed-i": _sed,
    "jq-tmp-mv": _jq,
    "truncate-then-write": _truncate,
    "in-pieces": _pieces,
}


@pytest.fixture(params=["inotify", "watchfiles"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The watcher reads inotify on Linux and watchfiles elsewhere: both are tested here."""
    name: str = request.param
    if name == "inotify" and not inotify.available():
        pytest.skip("no inotify on this system")
    if name == "watchfiles":
        monkeypatch.setattr(inotify, "available", lambda: False)
    return name


@pytest.mark.parametrize("how", list(EDITS))
async def test_an_edit_saved_any_way_is_applied_once(
    how: str, backend: str, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track("a", base_doc(tmp_path))
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("a:A1") is Status.COMPLETE)
        await live.settled("a")
        await EDITS[how](path, tmp_path)
        await live.until(lambda: TaskKey("a", "NEW") in live.engine.states)
        await live.until(lambda: live.status("a:NEW") is Status.COMPLETE)
        doc = await live.settled("a")
        assert live.engine.defs[TaskKey("a", "A1")].description == "edited"
        assert lh.ledger(tmp_path) == ["A1", "NEW"]  # A1 not run again, NEW once
        assert live.kinds("queue_file_invalid") == []
        assert live.engine.all_problems() == []
        plans = live.kinds("reload_plan")
        assert len(plans) == 1, plans  # one save, one reload
        assert plans[0][2]["added"] == ["NEW"]
        assert plans[0][2]["changed"] == {"A1": ["description"]}
        assert doc["notes"] == "a key the daemon does not know"
        assert live.task("a", "A1")["owner"] == "me"
        assert live.task("a", "NEW")["status"] == "complete"
        assert doc["summary"]["complete"] == 2
