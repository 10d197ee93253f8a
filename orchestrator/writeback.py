"""Keeping queue files current: read, merge, write, for one track at a time.

A sync of a track reads its file as it is now, puts a changed definition in force (when it is
valid with every other track), applies the status orders a person wrote since the daemon's
last write, merges the daemon-owned fields three ways (``merge``), recomputes ``summary``, and
writes only what changed, atomically, and only if nobody saved the file in the meantime.
Syncs are coalesced: many transitions within ``writeback_delay`` make one write per file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from . import merge, queuefile
from .daemon import Engine, Track
from .model import Owned, TaskDef, TrackDef
from .problems import Problem
from .store import Written

log = structlog.get_logger("orchestratord")
_NO_OWNED = Owned()


def definition_of(track: TrackDef) -> TrackDef:
    """A track without its daemon-owned values: what a definition change compares."""
    return TrackDef(
        name=track.name,
        path=track.path,
        list_key=track.list_key,
        tasks=tuple(_bare(t) for t in track.tasks),
        settings=track.settings,
        project=track.project,
    )


def _bare(task: TaskDef) -> TaskDef:
    return replace(task, owned=_NO_OWNED)


class Writeback:
    """Coalesced, merged, atomic write-back of every track's queue file."""

    def __init__(self, engine: Engine, delay: float) -> None:
        self.engine = engine
        self.delay = delay
        self._dirty: set[str] = set()
        self._wake = anyio.Event()
        self._lock = anyio.Lock()

    def mark(self, track: str) -> None:
        self._dirty.add(track)
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(self.delay)
            # Only what is dirty now; changes made during these writes wait for the next round.
            async with self._lock:
                names, self._dirty = sorted(self._dirty), set()
                for name in names:
                    await self._sync(name)

    async def flush(self) -> None:
        """Sync every track marked dirty, now."""
        async with self._lock:
            while self._dirty:
                name = min(self._dirty)
                self._dirty.discard(name)
                await self._sync(name)

    async def sync(self, name: str) -> list[Problem]:
        async with self._lock:
            return await self._sync(name)

    async def _sync(self, name: str) -> list[Problem]:
        track = self.engine.tracks.get(name)
        if track is None:
            return []
        before = queuefile.file_id(track.path)
        qf = await anyio.to_thread.run_sync(queuefile.read, track.path)
        if not qf.ok or qf.track is None or qf.doc is None:
            return self._invalid(track, list(qf.problems))
        if qf.track.name != name:
            return self._invalid(
                track,
                [
                    Problem(
                        qf.display,
                        "track.name",
                        f"renamed to {qf.track.name!r}: add it as a new track",
                    )
                ],
            )
        if definition_of(qf.track) != definition_of(track.definition):
            problems = self.engine.reload_track(qf.track, track.path)
            if problems:
                return self._invalid(track, problems)
        track.problems = []
        edits, base = self._merge(track, qf.track, qf.doc)
        digest = qf.digest
        if edits:
            text = queuefile.render(qf, edits)
            wrote = await anyio.to_thread.run_sync(
                queuefile.write_if_unchanged, track.path, text, before
            )
            if not wrote:
                log.info("file changed while writing; merging again", track=name)
                self.mark(name)
                return []
            self.engine.stats["file_writes"] += 1
            digest = queuefile.digest(text.encode("utf-8"))
        self.engine.store.set_written(name, Written(str(track.path), digest, base))
        return []

    def _invalid(self, track: Track, problems: list[Problem]) -> list[Problem]:
        rendered = [p.render() for p in problems]
        if [p.render() for p in track.problems] != rendered:
            for line in rendered:
                log.warning("queue file not applied; the last good version stays", problem=line)
            self.engine.store.add_events(("queue_file_invalid", track.name, {"problems": rendered}))
            self.engine.announce("queue_file_invalid", track.name, problems=rendered)
        track.problems = problems
        return problems

    def _merge(
        self, track: Track, definition: TrackDef, doc: dict[str, Any]
    ) -> tuple[list[tuple[tuple[str | int, ...], Any]], dict[str, Any]]:
        engine = self.engine
        written = engine.store.written(track.name)
        base = dict(written.base) if written else {}
        items = doc[definition.list_key]
        edits: list[tuple[tuple[str | int, ...], Any]] = []
        new_base: dict[str, Any] = {}
        for task in _first_of_each_id(definition.tasks):
            raw = items[task.index]
            key = task.key
            task_base = base.get(key.id)
            if task_base is None:
                task_base = merge.file_fields(raw)
            changes = merge.user_changes(raw, task_base)
            if changes.order is not None and key in engine.states:
                engine.order(
                    key, changes.order, f"status set to {changes.ordered_status} in the file"
                )
            if changes.not_an_order:
                log.warning(
                    "status edit ignored: only pending, skipped, complete and blocked are orders",
                    task=str(key),
                    written=changes.not_an_order,
                )
            state = engine.states.get(key)
            if state is None:
                continue
            merged = merge.merge_task(raw, task_base, merge.store_fields(state), changes)
            edits.extend(((definition.list_key, task.index, f), v) for f, v in merged.edits.items())
            new_base[key.id] = merged.base
        summary = merge.summary(engine.counts(track.name), doc.get("summary"))
        if edits or summary != doc.get("summary"):
            edits.append((("summary",), summary))
        paused = engine.graph.track_paused(track.name)
        if paused != definition.settings.paused:
            edits.append(_paused_edit(doc, paused))
        return edits, new_base


def _paused_edit(doc: dict[str, Any], paused: bool) -> tuple[tuple[str | int, ...], Any]:
    if isinstance(doc.get("track"), dict):
        return (("track", "paused"), paused)
    return (("track",), {"paused": paused})


def _first_of_each_id(tasks: Iterable[TaskDef]) -> list[TaskDef]:
    seen: set[str] = set()
    out = []
    for task in tasks:
        if task.key.id not in seen:
            seen.add(task.key.id)
            out.append(task)
    return out
