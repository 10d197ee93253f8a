"""Shared fixtures: the real queue files and a helper to write queue files."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator import logs
from orchestrator.control.api import EVENT_TYPES
from orchestrator.daemon import Engine
from orchestrator.store import EventSpec, Store

from . import leftovers
from .ray_head import ray_head  # noqa: F401 - the session's Ray head, for the ``ray`` tests

EXAMPLES = Path(__file__).parent / "fixtures" / "examples"
REPO = Path(__file__).resolve().parent.parent

WriteTrack = Callable[..., Path]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RUN] = leftovers.mark_this_run()


def pytest_sessionfinish(session: pytest.Session) -> None:
    left = leftovers.end_leftovers(session.config.stash[_RUN])
    if left:
        writer = session.config.pluginmanager.get_plugin("terminalreporter")
        if writer is not None:
            title = f"{len(left)} processes left running by the tests, now killed"
            writer.write("\n")
            writer.section(title, sep="-", red=True)
            for line in left:
                writer.write_line(f"  {line}")


_RUN = pytest.StashKey[str]()


@pytest.fixture
def examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


@pytest.fixture
def tracks_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tracks"
    directory.mkdir()
    return directory


@pytest.fixture
def write_track(tracks_dir: Path) -> WriteTrack:
    """Write ``{name}.json`` into the tracks directory from a dict or a list of tasks."""

    def write(name: str, doc: dict[str, Any] | list[dict[str, Any]], **top: Any) -> Path:
        body: dict[str, Any] = {"features": doc, **top} if isinstance(doc, list) else doc
        path = tracks_dir / f"{name}.json"
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo ``logs.configure`` after a test (it sets up process-wide logging)."""
    yield
    logger = logging.getLogger(logs.LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _only_known_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event journaled or announced in any test is one that hooks can name
    (``control.api.EVENT_TYPES``, checked by the config): a new kind must be added there."""
    journal, announce = Store._events, Engine.announce

    def known(kind: str) -> None:
        assert kind in EVENT_TYPES, f"event {kind!r} is not in control.api.EVENT_TYPES"

    def checked_journal(self: Store, events: Sequence[EventSpec], now: str | None = None) -> None:
        for kind, _, _ in events:
            known(kind)
        journal(self, events, now)

    def checked_announce(self: Engine, kind: str, subject: Any, **data: Any) -> None:
        known(kind)
        announce(self, kind, subject, **data)

    monkeypatch.setattr(Store, "_events", checked_journal)
    monkeypatch.setattr(Engine, "announce", checked_announce)


@pytest.fixture(autouse=True)
def _outside_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run in a scratch directory: a track without ``workdir`` works in the daemon's
    working directory, and the project's own git checkout must never be that."""
    monkeypatch.chdir(tmp_path)
