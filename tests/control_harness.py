"""A real daemon with its control service, in-process, and the real client talking to it.

The client is synchronous (as the commands use it), so its calls run in a worker thread while
the daemon's event loop serves them. Waiting is done on the engine's own announcements, never
by sleeping.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio

from orchestrator import config
from orchestrator.control.client import Client
from orchestrator.control.service import control_service
from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.model import Status, TaskKey
from orchestrator.supervisor import Control, serve, unwrap

from .daemon_harness import settings

T = TypeVar("T")
DEADLINE = 30.0


@dataclass
class Live:
    engine: Engine
    cfg: config.Config
    control: Control
    tracks: Path
    state: Path
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    code: int | None = None

    def client(self) -> Client:
        return Client.unix(self.state)

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking client call in a thread while the daemon serves it."""
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))

    async def ask(self, method: str, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with self.client() as client:
                return getattr(client, method)(*args, **kwargs)

        return await anyio.to_thread.run_sync(run)

    def _heard(self, kind: str, subject: object, data: Any) -> None:
        self.events.append((kind, str(subject), dict(data)))
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds, re-checked at each event of the engine."""
        with anyio.fail_after(DEADLINE):
            while not condition():
                await self._changed.wait()

    async def poll(self, fact: Callable[[], bool]) -> None:
        """Wait for a fact outside the daemon (a file a child writes): checked every 20 ms."""
        with anyio.fail_after(DEADLINE):
            while not fact():  # noqa: ASYNC110 (nothing announces a file a child writes)
                await anyio.sleep(0.02)

    async def until_status(self, ref: str, status: Status) -> None:
        track, _, ident = ref.partition(":")
        key = TaskKey(track, ident)
        await self.until(lambda: self.engine.graph.status(key) is status)

    def doc_task(self, name: str, ident: str) -> dict[str, Any]:
        import json

        doc = json.loads((self.tracks / f"{name}.json").read_text())
        items: list[dict[str, Any]] = doc["features"] if "features" in doc else doc["tasks"]
        return next(t for t in items if t["id"] == ident)


@asynccontextmanager
async def running_daemon(
    tracks: Path, state: Path | None = None, **extra: Any
) -> AsyncIterator[Live]:
    """A daemon (not ``--once``) with the control service, stopped when the block ends."""
    state = state or tracks.parent / "state"
    cfg = settings(tracks, state, **extra)
    control = Control()
    started = anyio.Event()
    holder: list[Live] = []

    def ready(engine: Engine) -> None:
        live = Live(engine, cfg, control, tracks, state)
        engine.listeners.append(live._heard)
        holder.append(live)
        started.set()

    try:
        async with _daemon(cfg, control, ready, started, holder) as live:
            yield live
    except BaseExceptionGroup as group:
        raise unwrap(group) from None


@asynccontextmanager
async def _daemon(
    cfg: config.Config,
    control: Control,
    ready: Callable[[Engine], None],
    started: anyio.Event,
    holder: list[Live],
) -> AsyncIterator[Live]:
    async with LocalExecutor(cfg.settings.kill_grace) as executor, anyio.create_task_group() as tg:

        async def main() -> None:
            code = await serve(
                cfg,
                executor,
                control=control,
                on_ready=ready,
                handle_signals=False,
                services=[control_service],
            )
            if holder:
                holder[0].code = code

        tg.start_soon(main)
        with anyio.fail_after(DEADLINE):
            await started.wait()
        try:
            yield holder[0]
        finally:
            control.request_stop(force=True)
