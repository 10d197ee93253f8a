"""Keeping queue files current: read, merge, write, for one track at a time.

A sync of a track reads its file as it is now, puts a changed definition in force (when it is
valid with every other track), applies the status orders a person wrote since the daemon's
last write, merges the daemon-owned fields three ways (``merge``), recomputes ``summary``, and
writes only what changed, atomically, and only if nobody saved the file in the meantime.
Syncs are coalesced: many transitions within ``writeback_delay`` make one write per file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import orjson
import structlog
from anyio.abc import TaskStatus

from . import jsonedit, merge, queuefile
from .daemon import Engine, Track
from .model import Owned, TaskDef, TaskKey, TrackDef
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


Edit = tuple[tuple[str | int, ...], Any]


@dataclass(slots=True)
class _Known:
    """What the write-back knows of one file as the daemon last left it."""

    digest: str
    index: dict[str, int]
    """Task id -> position in the task list (first of each id)."""
    list_key: str
    base: dict[str, Any]
    style: jsonedit.Style | None = None
    """The file's formatting: the daemon's writes keep it, so it is detected once."""


class Writeback:
    """Coalesced, merged, atomic write-back of every track's queue file.

    When a file is byte for byte what the daemon last wrote, only the tasks whose state changed
    since are merged (a write costs what changed, not the file's size); otherwise the whole
    file is read, checked and merged.
    """

    def __init__(self, engine: Engine, delay: float) -> None:
        self.engine = engine
        self.delay = delay
        self._dirty: dict[str, set[TaskKey] | None] = {}
        """Track -> tasks changed since its last sync (None: look at every task)."""
        self._known: dict[str, _Known] = {}
        self._persisted: set[str] = set()
        self._wake = anyio.Event()
        self._lock = anyio.Lock()

    def mark(self, track: str, key: TaskKey | None = None) -> None:
        keys = self._dirty.get(track, set())
        if key is None or keys is None:
            self._dirty[track] = None
        else:
            keys.add(key)
            self._dirty[track] = keys
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(self.delay)
            # Only what is dirty now; changes made during these writes wait for the next round.
            async with self._lock:
                batch, self._dirty = self._dirty, {}
                for name in sorted(batch):
                    await self._sync(name, batch[name])

    async def flush(self) -> None:
        """Sync every track marked dirty, now."""
        async with self._lock:
            while self._dirty:
                name = min(self._dirty)
                await self._sync(name, self._dirty.pop(name))

    async def sync(self, name: str) -> list[Problem]:
        """Read, merge and write one track's file in full."""
        async with self._lock:
            self._dirty.pop(name, None)
            return await self._sync(name, None)

    async def _sync(self, name: str, keys: set[TaskKey] | None) -> list[Problem]:
        track = self.engine.tracks.get(name)
        if track is None:
            return []
        before = queuefile.file_id(track.path)
        data = await anyio.to_thread.run_sync(_read_bytes, track.path)
        known = self._known.get(name)
        if data is not None and known is not None and queuefile.digest(data) == known.digest:
            return await self._quick(track, known, data, keys, before)
        return await self._full(track, before)

    async def _quick(
        self,
        track: Track,
        known: _Known,
        data: bytes,
        keys: set[TaskKey] | None,
        before: tuple[int, int, int] | None,
    ) -> list[Problem]:
        """The file is as the daemon left it: merge only what changed since."""
        text = data.decode("utf-8")
        doc = orjson.loads(text.removeprefix(queuefile.BOM))
        items = doc[known.list_key]
        wanted = (
            known.index
            if keys is None
            else {k.id: known.index[k.id] for k in keys if k.id in known.index}
        )
        edits: list[Edit] = []
        base = dict(known.base)
        for ident, index in wanted.items():
            state = self.engine.states.get(TaskKey(track.name, ident))
            if state is None:
                continue
            raw = items[index]
            task_base = base.get(ident) or merge.file_fields(raw)
            merged = merge.merge_task(
                raw, task_base, merge.store_fields(state), merge.UserChanges()
            )
            edits.extend(((known.list_key, index, f), v) for f, v in merged.edits.items())
            base[ident] = merged.base
        edits.extend(self._top_edits(track, doc, bool(edits)))
        return await self._write(
            track, text, doc, edits, base, known.list_key, known.index, before, known.style
        )

    async def _full(self, track: Track, before: tuple[int, int, int] | None) -> list[Problem]:
        """Someone else wrote the file (or this is the first sync): read, check, merge all."""
        name = track.name
        qf = await anyio.to_thread.run_sync(queuefile.read, track.path)
        if not qf.ok or qf.track is None or qf.doc is None or qf.text is None:
            return self._invalid(track, list(qf.problems))
        if qf.track.name != name:
            problem = Problem(
                qf.display, "track.name", f"renamed to {qf.track.name!r}: add it as a new track"
            )
            return self._invalid(track, [problem])
        if definition_of(qf.track) != definition_of(track.definition):
            problems = self.engine.reload_track(qf.track, track.path)
            if problems:
                return self._invalid(track, problems)
        track.problems = []
        edits, base, index = self._merge(track, qf.track, qf.doc)
        return await self._write(
            track, qf.text, qf.doc, edits, base, qf.track.list_key, index, before
        )

    async def _write(
        self,
        track: Track,
        text: str,
        doc: dict[str, Any],
        edits: list[Edit],
        base: dict[str, Any],
        list_key: str,
        index: dict[str, int],
        before: tuple[int, int, int] | None,
        style: jsonedit.Style | None = None,
    ) -> list[Problem]:
        if edits:
            style = style or jsonedit.detect_style(text)
            new_text = jsonedit.apply_edits(
                text, edits, insert_before={(): list_key}, style=style, parsed=doc
            )
            wrote = await anyio.to_thread.run_sync(
                queuefile.write_if_unchanged, track.path, new_text, before
            )
            if not wrote:
                log.info("file changed while writing; merging again", track=track.name)
                self.mark(track.name)
                return []
            self.engine.stats["file_writes"] += 1
            text = new_text
        digest = queuefile.digest(text.encode("utf-8"))
        self._known[track.name] = _Known(digest, index, list_key, base, style)
        if edits or track.name not in self._persisted:
            self.engine.store.set_written(track.name, Written(str(track.path), digest, base))
            self._persisted.add(track.name)
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
    ) -> tuple[list[Edit], dict[str, Any], dict[str, int]]:
        """Every task: apply the orders a person wrote, then merge the owned fields."""
        engine = self.engine
        known = self._known.get(track.name)
        if known is not None:
            base = dict(known.base)
        else:
            written = engine.store.written(track.name)
            base = dict(written.base) if written else {}
        items = doc[definition.list_key]
        edits: list[Edit] = []
        new_base: dict[str, Any] = {}
        index: dict[str, int] = {}
        for task in definition.tasks:
            key = task.key
            if key.id in index:
                continue
            index[key.id] = task.index
            raw = items[task.index]
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
        edits.extend(self._top_edits(track, doc, bool(edits), definition.settings.paused))
        return edits, new_base, index

    def _top_edits(
        self, track: Track, doc: dict[str, Any], changed: bool, paused_in_file: bool | None = None
    ) -> list[Edit]:
        """``summary`` (recomputed with any write, or when wrong) and ``track.paused``."""
        out: list[Edit] = []
        summary = merge.summary(self.engine.counts(track.name), doc.get("summary"))
        if changed or summary != doc.get("summary"):
            out.append((("summary",), summary))
        if paused_in_file is None:
            section = doc.get("track")
            paused_in_file = bool(section.get("paused")) if isinstance(section, dict) else False
        paused = self.engine.graph.track_paused(track.name)
        if paused != paused_in_file:
            out.append(_paused_edit(doc, paused))
        return out


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _paused_edit(doc: dict[str, Any], paused: bool) -> tuple[tuple[str | int, ...], Any]:
    if isinstance(doc.get("track"), dict):
        return (("track", "paused"), paused)
    return (("track",), {"paused": paused})
