"""Helpers shared by the benchmarks: scratch space and running the daemon in-process."""

from __future__ import annotations

import functools
import gc
import importlib
import inspect
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio

from orchestrator import config, logs
from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.supervisor import Service, serve, uvloop_available


def scratch_root() -> str | None:
    """tmpfs when there is one.

    File creation on this kind of machine's ext4 volume varies 30x between directories
    (21 us to 820 us measured), which would measure the disk, not the daemon: make and ninja
    create no file per task, the daemon creates one log per attempt.
    """
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def run_daemon(
    tracks: Path,
    state: Path,
    *,
    executor: LocalExecutor | None = None,
    on_ready: Callable[[Engine], None] | None = None,
    ballast_mb: int = 0,
    services: Sequence[Service] = (),
    **flags: Any,
) -> dict[str, Any]:
    """Run ``start --once`` in this process; return wall and CPU seconds and the engine.

    ``startup_cpu``: the CPU seconds until the daemon was ready (tracks loaded and checked,
    state reconciled, files synced), which ``cpu`` includes; ``startup_wall``: the same in wall
    seconds, which ``wall`` includes.
    """
    cfg = config.load(
        flags={"tracks": str(tracks), "state_dir": str(state), **flags}, env={}, cwd=tracks.parent
    )
    logs.configure("warning", "json")
    result: dict[str, Any] = {}

    def ready(engine: Engine) -> None:
        result["engine"] = engine
        result["ready_cpu"] = time.process_time()
        result["ready_wall"] = time.perf_counter()
        if on_ready is not None:
            on_ready(engine)

    async def main() -> None:
        ballast = bytearray(ballast_mb << 20)
        ballast[:: 1 << 12] = b"x" * len(ballast[:: 1 << 12])
        async with executor or LocalExecutor(1.0) as ex:
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            code = await serve(
                cfg, ex, once=True, on_ready=ready, handle_signals=False, services=services
            )
            result.update(code=code, wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)
            result["startup_cpu"] = result.pop("ready_cpu", cpu) - cpu
            result["startup_wall"] = result.pop("ready_wall", wall) - wall
        del ballast

    # Tracks without a workdir work in the daemon's working directory: the scratch directory,
    # never the project's own git checkout (where every attempt would be a git attempt).
    here = os.getcwd()
    os.chdir(tracks.parent)
    try:
        anyio.run(main, backend="asyncio", backend_options={"use_uvloop": uvloop_available()})
    finally:
        os.chdir(here)
    return result


def patch(
    targets: Iterable[tuple[str, str]],
    wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]],
) -> Callable[[], None]:
    """Replace each synchronous function ``(module, "Class.attribute")`` by ``wrap(attribute,
    function)``; return what puts them all back.

    A function called through another module's own name for it (``from x import f``) would
    not be seen: the targets are called through their module or class.
    """
    undo: list[Callable[[], None]] = []
    for module, attribute in targets:
        owner: Any = importlib.import_module(module)
        *path, last = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, last)
        if inspect.iscoroutinefunction(original):
            raise TypeError(f"{module}.{attribute} is async: it cannot be wrapped here")
        setattr(owner, last, wrap(attribute, original))
        undo.append(functools.partial(setattr, owner, last, original))

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore
