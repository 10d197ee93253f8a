"""Running the real daemon inside a test: real child processes, a real store, real files."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import agentrun, config
from orchestrator.clock import SystemClock
from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.store import Store
from orchestrator.supervisor import Control, serve, unwrap


@dataclass
class Run:
    code: int
    engine: Engine
    tracks: Path
    state: Path
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def doc(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.tracks / f"{name}.json").read_text())
        return data

    def task(self, name: str, ident: str) -> dict[str, Any]:
        doc = self.doc(name)
        items: list[dict[str, Any]] = doc["features"] if "features" in doc else doc["tasks"]
        return next(t for t in items if t["id"] == ident)

    def store(self) -> Store:
        return Store.open(self.state, SystemClock())


def settings(tracks: Path, state: Path, **extra: Any) -> config.Config:
    flags = {"tracks": str(tracks), "state_dir": str(state), "writeback_delay": 0.05, **extra}
    return config.load(flags=flags, env={}, cwd=tracks.parent)


async def run_once(
    tracks: Path,
    state: Path | None = None,
    *,
    control: Control | None = None,
    on_ready: Callable[[Engine], None] | None = None,
    **extra: Any,
) -> Run:
    state = state or tracks.parent / "state"
    cfg = settings(tracks, state, **extra)
    engines: list[Engine] = []
    events: list[tuple[str, str, dict[str, Any]]] = []

    def ready(engine: Engine) -> None:
        engines.append(engine)
        engine.listeners.append(
            lambda kind, subject, data: events.append((kind, str(subject), dict(data)))
        )
        if on_ready is not None:
            on_ready(engine)

    try:
        async with LocalExecutor(cfg.settings.kill_grace) as executor:
            code = await serve(
                cfg,
                executor,
                once=True,
                control=control,
                on_ready=ready,
                handle_signals=False,
                services=[agentrun.service],
            )
    except BaseExceptionGroup as group:
        raise unwrap(group) from None
    return Run(code, engines[0], tracks, state, events)
