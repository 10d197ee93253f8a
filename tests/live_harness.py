"""A running daemon with its file watcher, inside a test, and the ways people edit files.

:func:`live_daemon` runs the real daemon (real processes, store, files, watcher) in the test's
event loop until the ``async with`` block ends. The editing functions write a queue file the
way editors and tools do: in place, through a temporary file and a rename, with ``sed -i``,
``jq ... > tmp && mv tmp file``, vim, truncate-then-write, and in pieces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.model import Status, TaskKey
from orchestrator.states import Event
from orchestrator.supervisor import Control, Service, serve, unwrap
from orchestrator.watcher import watch_tracks

from .daemon_harness import settings

DEADLINE = 20.0
QUIET = 0.3
STUBBORN_GRACE = 2.0
"""The kill grace for :func:`stubborn` runs: how long a cut-short first run takes to end."""


@dataclass
class Live:
    tracks: Path
    state: Path
    control: Control
    engine: Engine = field(init=False)
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def on_event(self, kind: str, subject: object, data: Any) -> None:
        self.events.append((kind, str(subject), dict(data)))

    def kinds(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [e for e in self.events if e[0] == kind]

    def status(self, ref: str) -> Status:
        track, ident = ref.split(":")
        return self.engine.states[TaskKey(track, ident)].status

    def doc(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.tracks / f"{name}.json").read_text())
        return data

    def task(self, name: str, ident: str) -> dict[str, Any]:
        doc = self.doc(name)
        items: list[dict[str, Any]] = doc.get("features", doc.get("tasks", []))
        return next(t for t in items if t["id"] == ident)

    async def until(self, what: Callable[[], bool], within: float = DEADLINE) -> None:
        """Wait for a fact about the daemon or its files; fail after ``within`` seconds."""
        with anyio.move_on_after(within):
            # Facts about files and processes have no event to wait on: look every 10 ms.
            while not what():  # noqa: ASYNC110
                await anyio.sleep(0.01)
            return
        raise AssertionError(f"timed out waiting for {what}")

    async def settled(self, name: str) -> dict[str, Any]:
        """The file once the daemon has written back everything it knows (each task's status
        and error: a person's edit of a status already matches, before the daemon's write)."""

        def current() -> bool:
            try:
                doc = self.doc(name)
            except (OSError, ValueError):
                return False
            items = doc.get("features", doc.get("tasks", []))
            for item in items:
                key = TaskKey(name, item["id"])
                state = self.engine.states.get(key)
                if state is None:
                    continue
                if item.get("status", "pending") != state.status.value:
                    return False
                if item.get("error") != state.owned.error:
                    return False
            return True

        await self.until(current)
        return self.doc(name)


@asynccontextmanager
async def live_daemon(
    tracks: Path,
    state: Path | None = None,
    *,
    watch: bool = True,
    services: Sequence[Service] = (),
    **extra: Any,
) -> AsyncIterator[Live]:
    """The daemon, with its file watcher unless ``watch`` is false (then only an explicit
    reload, ``live.control.reload``, looks at the files), and ``services``."""
    state = state or tracks.parent / "state"
    extra = {"watch_quiet": QUIET, "shutdown_grace": 1, "kill_grace": 0.5, **extra}
    cfg = settings(tracks, state, **extra)
    live = Live(tracks, state, Control())
    ready = anyio.Event()

    def on_ready(engine: Engine) -> None:
        live.engine = engine
        engine.listeners.append(live.on_event)
        ready.set()

    async def daemon() -> None:
        async with LocalExecutor(cfg.settings.kill_grace) as executor:
            await serve(
                cfg,
                executor,
                control=live.control,
                on_ready=on_ready,
                handle_signals=False,
                services=[*([watch_tracks] if watch else []), *services],
            )

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon)
            await ready.wait()
            try:
                yield live
            finally:
                live.control.request_stop()
    except BaseExceptionGroup as group:
        raise unwrap(group) from None


# ---------------------------------------------------------------------- how people edit


def ledger(tmp_path: Path) -> list[str]:
    """What the tasks made with :func:`note` wrote, in order."""
    path = tmp_path / "ledger"
    return path.read_text().split() if path.exists() else []


def note(ident: str, tmp_path: Path) -> str:
    """A task command that writes ``ident`` to the ledger (see :func:`ledger`)."""
    return f"echo {ident} >> {tmp_path / 'ledger'}"


def stubborn(tmp_path: Path) -> str:
    """A run that notes ``start`` in the ledger (``overlap`` first if an earlier run of it is
    still alive). The first run ignores SIGTERM from before it notes ``start``, and sleeps: a cut
    ends it only when it is killed, :data:`STUBBORN_GRACE` later (give the daemon that
    ``kill_grace``). The others note ``end`` at once."""
    pids, ledger = tmp_path / "pids", tmp_path / "ledger"
    return (
        f"touch {pids}; "
        f"for p in $(cat {pids}); do kill -0 $p 2>/dev/null && echo overlap >> {ledger}; done; "
        f"echo $$ >> {pids}; n=$(wc -l < {pids}); if [ $n -eq 1 ]; then trap '' TERM; fi; "
        f"echo start >> {ledger}; if [ $n -eq 1 ]; then sleep 30; fi; echo end >> {ledger}"
    )


QUEUED = TaskKey("t", "K")
"""The task of :func:`retry_queued`."""


@asynccontextmanager
async def retry_queued(
    tmp_path: Path,
    tracks_dir: Path,
    write_track: Callable[..., Path],
    *,
    concurrency: int = 2,
    others: tuple[dict[str, Any], ...] = (),
) -> AsyncIterator[tuple[Live, Path]]:
    """A live daemon (and track ``t``'s file) whose task :data:`QUEUED` (:func:`stubborn`) was
    skipped while it ran and retried at once: the retry waits, queued, behind the attempt the
    skip is ending (for :data:`STUBBORN_GRACE`). ``others``: more tasks of the track."""
    path = write_track(
        "t",
        [{"id": "K", "command": stubborn(tmp_path)}, *others],
        track={"concurrency": concurrency},
    )
    async with live_daemon(tracks_dir, kill_grace=STUBBORN_GRACE) as live:
        await live.until(lambda: ledger(tmp_path) == ["start"])
        live.engine.order(QUEUED, Event.ORDER_SKIP, "skip it")
        live.engine.order(QUEUED, Event.ORDER_RETRY, "run it after all")
        yield live, path


def set_status(path: Path, ident: str, status: str | None) -> None:
    """Save the file with the task's status set (None: the task removed)."""
    doc = json.loads(path.read_text())
    items: list[dict[str, Any]] = doc["features"]
    index = next(i for i, t in enumerate(items) if t["id"] == ident)
    if status is None:
        del items[index]
    else:
        items[index]["status"] = status
    write_and_rename(path, dump(doc))


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def write_in_place(path: Path, text: str) -> None:
    """Open, truncate, write: what ``>`` and many editors' plain save do."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)


def write_and_rename(path: Path, text: str) -> None:
    """A temporary file next to it, renamed over it (VS Code, JetBrains, most libraries)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_like_vim(path: Path, text: str) -> None:
    """Vim's default save: swap file, the original renamed to a backup, a new file written."""
    swap = path.with_name(f".{path.name}.swp")
    swap.write_bytes(b"b0VIM 9.0")
    backup = path.with_name(path.name + "~")
    os.replace(path, backup)
    path.write_text(text, encoding="utf-8")
    backup.unlink()
    swap.unlink()


async def truncate_then_write(path: Path, text: str, pause: float = 0.05) -> None:
    """Two separate writes: the file is empty for a moment."""
    os.truncate(path, 0)
    await anyio.sleep(pause)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


async def write_in_pieces(path: Path, text: str, pieces: int = 4, pause: float = 0.05) -> None:
    """A streaming writer: the file is half written between pieces."""
    step = max(len(text) // pieces, 1)
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, len(text), step):
            handle.write(text[start : start + step])
            handle.flush()
            await anyio.sleep(pause)


def tool(name: str) -> str | None:
    return shutil.which(name)


def run(argv: list[str], cwd: Path | None = None) -> None:
    subprocess.run(argv, check=True, cwd=cwd, capture_output=True, timeout=30)


def sed_in_place(path: Path, script: str) -> None:
    run(["sed", "-i", script, str(path)])


def jq_and_move(path: Path, program: str) -> None:
    """``jq PROGRAM file > file.tmp && mv file.tmp file``, through a real shell."""
    run(
        [
            "sh",
            "-c",
            f"jq '{program}' {path.name} > {path.name}.tmp && mv {path.name}.tmp {path.name}",
        ],
        cwd=path.parent,
    )


def vim_substitute(path: Path, pattern: str, replacement: str) -> None:
    """A real vim, saving with its defaults (no user vimrc)."""
    command = f"%s#{pattern}#{replacement}#"
    run(["vim", "-u", "NONE", "-i", "NONE", "-N", "-es", "-c", command, "-c", "wq", str(path)])


@dataclass(frozen=True)
class Held:
    """A function that waits, where it is called (a worker thread), until released."""

    entered: threading.Event
    """Set when the function is called (and is waiting)."""
    release: threading.Event
    """Set it to let the function go on (after 10 s it goes on anyway)."""


def hold(monkeypatch: Any, owner: object, name: str) -> Held:
    """Make ``owner.name`` wait for :attr:`Held.release` each time it is called, then do its
    work: the daemon's state can be changed while it waits, deterministically."""
    original = getattr(owner, name)
    held = Held(threading.Event(), threading.Event())

    def holding(*args: Any, **kwargs: Any) -> Any:
        held.entered.set()
        held.release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, holding)
    return held
