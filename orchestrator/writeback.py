"""Keeping queue files current: read, merge, write, for one track at a time.

A sync of a track reads its file as it is now, puts a changed definition in force (when it is
valid with every other track), applies the status orders a person wrote since the daemon's
last write, merges the daemon-owned fields three ways (``merge``), recomputes ``summary``, and
writes only what changed, atomically, and only if nobody saved the file in the meantime.
Syncs are coalesced: many transitions within ``writeback_delay`` make one write per file.

Before a changed file is applied, the plan of what it changes is logged and journaled
(``plan``). A file that does not read or validate is reported only once it has been quiet
(``settle``): a file caught half-written is neither applied nor reported. When applying a file
starts tasks, their processes start first and the file is merged on the next round; what the
read consumed (orders, new tasks) is remembered, so a deferred or refused write never makes
the next read take it again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import orjson
import structlog
from anyio.abc import TaskStatus

from . import filelayout, jsonedit, merge, queuefile
from . import plan as plans
from .control import orders
from .daemon import Engine, Track
from .model import Status, TaskKey, TrackDef
from .problems import Problem
from .queuefile import FileId
from .schema import TaskMemo
from .settle import Later, Settle
from .states import TaskState
from .store import Written

log = structlog.get_logger("orchestratord")

WRITE_RETRY_SECONDS = 5.0


Edit = tuple[tuple[str | int, ...], Any]


@dataclass(slots=True)
class _Known:
    """What the write-back knows of one file as the daemon last left it."""

    digest: str
    fid: FileId | None
    """The file's inode, size and modification time as the daemon left it."""
    index: dict[str, int]
    """Task id -> position in the task list (first of each id)."""
    list_key: str
    base: dict[str, Any]
    style: jsonedit.Style | None = None
    """The file's formatting: the daemon's writes keep it, so it is detected once."""
    layout: filelayout.Layout | None = None
    """Where the tasks lie in the file (made at the first quick sync that needs it; a file
    that has none is outlined again at each quick sync, and written in full)."""


class _Read(NamedTuple):
    """A file as read: its id before the read (and after it, when that differs from the id
    the daemon knows), its bytes and their digest."""

    before: FileId | None
    data: bytes
    digest: str
    after: FileId | None


class Writeback:
    """Coalesced, merged, atomic write-back of every track's queue file.

    When a file is byte for byte what the daemon last wrote, only the tasks whose state changed
    since are merged, each read from its own bytes and re-rendered alone (``filelayout``: a
    write costs what changed, not the file's size); otherwise the whole file is read, checked
    and merged.
    """

    def __init__(self, engine: Engine, delay: float, quiet: float = 0.5) -> None:
        self.engine = engine
        self.delay = delay
        self.settle = Settle(quiet, engine.clock.monotonic)
        self._dirty: dict[str, set[TaskKey] | None] = {}
        """Track -> tasks changed since its last sync (None: look at every task)."""
        self._known: dict[str, _Known] = {}
        self._persisted: set[str] = set()
        self._fresh: set[str] = set()
        """Tracks whose file came (back) while the daemon ran: the store's state wins."""
        self._memos: dict[Path, TaskMemo] = {}
        """Per file: its tasks as last read (a save re-validates only what changed)."""
        self._later = Later[str](engine.clock.monotonic)
        """Track -> when to sync it again (a failed read waiting to settle, a failed write)."""
        self._settling: set[str] = set()
        """Tracks whose file failed to read, waiting to settle."""
        self._lock = anyio.Lock()
        self._unwritten: set[str] = set()
        """Tracks whose file could not be written at the last try (reported once)."""
        self._writing: dict[str, FileId] = {}
        """Track -> the id its file has once the write in progress (in a worker thread) is
        renamed into place: the watcher can see the rename before the write returns."""

    def mark(self, track: str, key: TaskKey | None = None) -> None:
        keys = self._dirty.get(track, set())
        if key is None or keys is None:
            self._dirty[track] = None
        else:
            keys.add(key)
            self._dirty[track] = keys
        self._later.wake()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            for name in await self._later.due():
                self._settling.discard(name)
                self.mark(name)
            if not self._dirty:
                continue
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
        """Read, merge and write one track's file in full; return the problems reported."""
        async with self._lock:
            self._dirty.pop(name, None)
            return await self._sync(name, None)

    def is_own(self, name: str, path: Path) -> bool:
        """Whether ``path`` is, by its inode, size and modification time, what the daemon last
        wrote for ``name``, or is writing now (a ``stat``, no read)."""
        fid = queuefile.file_id(path)
        if fid is None:
            return False
        known = self._known.get(name)
        return fid == self._writing.get(name) or (known is not None and fid == known.fid)

    def waiting(self) -> dict[str, float]:
        """Tracks whose file failed to read, -> when it is read again to settle."""
        return {n: at for n, at in self._later.pending.items() if n in self._settling}

    def start_fresh(self, name: str) -> None:
        """A file appeared for ``name``: merge it as a resumed track, not as orders.

        The daemon's record of each task wins over the statuses in a file that is put back
        (or renamed into place); the next edits made to it are orders as usual.
        """
        self._known.pop(name, None)
        self._persisted.discard(name)
        self._fresh.add(name)

    def forget(self, name: str, path: Path) -> None:
        """The track was removed: nothing more to write for it."""
        self._dirty.pop(name, None)
        self._later.cancel(name)
        self._settling.discard(name)
        self._memos.pop(path, None)
        self.settle.clear(path)
        self.start_fresh(name)

    async def _sync(self, name: str, keys: set[TaskKey] | None) -> list[Problem]:
        track = self.engine.tracks.get(name)
        if track is None:
            return []
        known = self._known.get(name)
        read = await anyio.to_thread.run_sync(_read, track.path, known.fid if known else None)
        if read is None:
            return []  # gone (perhaps for a moment, mid-save): the reloader decides
        if self.engine.tracks.get(name) is not track:
            return []  # removed (its file deleted) while the file was read: nothing to write
        if known is not None and read.digest == known.digest and not track.problems:
            if known.fid != read.before and read.before == read.after:
                known.fid = read.before  # touched, or saved unchanged: the same content
            return await self._quick(track, known, read, keys)
        # Someone else's bytes; or the daemon's own put back over a save that did not apply
        # (an editor's undo): read in full, which finds the file valid again.
        return await self._full(track, read)

    async def _quick(
        self, track: Track, known: _Known, read: _Read, keys: set[TaskKey] | None
    ) -> list[Problem]:
        """The file is as the daemon left it: merge only what changed since, and re-render
        only the task objects that change (and ``summary``)."""
        if known.layout is None:
            known.layout = filelayout.Layout.of(read.data, known.list_key)
        layout = known.layout
        paused = self.engine.graph.track_paused(track.name)
        if layout is None or layout.summary is None or paused != layout.paused:
            return await self._quick_in_full(track, known, read, keys)
        tasks: dict[int, filelayout.TaskEdits] = {}
        bases: dict[str, Any] = {}
        task_at = functools.partial(layout.task, read.data)
        for ident, index, raw, merged in self._merged(track, known, keys, task_at):
            if merged.edits:
                tasks[index] = (raw, merged.edits)
            bases[ident] = merged.base
        summary = merge.summary(self.engine.counts(track.name), layout.summary_value)
        new: bytes | None = None
        if tasks or summary != layout.summary_value:
            style = known.style or jsonedit.detect_style(read.data.decode("utf-8"))
            rendered = layout.render(read.data, tasks, summary, style)
            if rendered is None:
                return await self._quick_in_full(track, known, read, keys)
            new, layout = rendered
            known.style = style
        return await self._put(
            track,
            new,
            read,
            known.base,
            known.list_key,
            known.index,
            known.style,
            updates=bases,
            layout=layout,
        )

    async def _quick_in_full(
        self, track: Track, known: _Known, read: _Read, keys: set[TaskKey] | None
    ) -> list[Problem]:
        """As :meth:`_quick`, on the whole document (a file without a layout, a write that
        adds ``summary`` or changes ``track.paused``, a splice that needs a full rewrite)."""
        text = read.data.decode("utf-8")
        doc = orjson.loads(text.removeprefix(queuefile.BOM))
        items = doc[known.list_key]
        edits: list[Edit] = []
        base = dict(known.base)
        for ident, index, _, merged in self._merged(track, known, keys, items.__getitem__):
            edits.extend(((known.list_key, index, f), v) for f, v in merged.edits.items())
            base[ident] = merged.base
        edits.extend(self._top_edits(track, doc, bool(edits)))
        return await self._write(
            track, text, read, doc, edits, base, known.list_key, known.index, known.style
        )

    def _merged(
        self,
        track: Track,
        known: _Known,
        keys: set[TaskKey] | None,
        task_at: Callable[[int], Any],
    ) -> Iterator[tuple[str, int, Any, merge.Merged]]:
        """The tasks to merge in a file the daemon left (those marked, or all), each as its id,
        its index, its object (``task_at(index)``) and its merge with the store (the file holds
        no orders: nobody changed it)."""
        index = known.index
        wanted = index if keys is None else {k.id: index[k.id] for k in keys if k.id in index}
        states = self.engine.states
        for ident, at in wanted.items():
            state = states.get(TaskKey(track.name, ident))
            if state is None:
                continue
            raw = task_at(at)
            task_base = known.base.get(ident) or merge.file_fields(raw)
            merged = merge.merge_task(raw, task_base, merge.store_fields(state), merge.NO_CHANGES)
            yield ident, at, raw, merged

    async def _full(self, track: Track, read: _Read) -> list[Problem]:
        """Someone else wrote the file (or this is the first sync): check, apply, merge all."""
        name, before = track.name, read.before
        if before is None:
            return []
        display = queuefile.display_path(track.path)
        qf = await anyio.to_thread.run_sync(
            self._parse, display, track.path.stem, read.data, track.path, read.digest
        )
        if self.engine.tracks.get(name) is not track:
            return []  # removed while the file was parsed: what was read must not bring it back
        if not qf.ok or qf.track is None or qf.doc is None or qf.text is None:
            return self._invalid(track, list(qf.problems), before)
        if qf.track.name != name:
            problem = Problem(
                qf.display,
                "track.name",
                f"the track is {name!r} and cannot be renamed while the daemon runs; put the "
                f"name back, or move the tasks to a new file for track {qf.track.name!r}",
            )
            return self._invalid(track, [problem], before)
        base = self._base(name)
        changes = merge.track_changes(qf.track, qf.doc, base)
        changed = not plans.same_definition(qf.track, track.definition)
        spec = None
        if changed:
            problems, spec = self.engine.check_track(qf.track)
            if spec is None:
                return self._invalid(track, problems, before)
        self.settle.clear(track.path)
        if track.problems:
            log.info("queue file valid again: applying it", track=name, file=qf.display)
            track.problems = []
            # The journal's last word on the file must not stay that it is broken.
            self.engine.journal("queue_file_valid", name, file=track.definition.path)
        decisions = self._decide(track, changes)
        self.report_plan(self._plan(track, qf.track, changes, decisions))
        running = sum(self.engine.running.values())
        if changed:
            self.engine.reload_track(qf.track, track.path, spec)
        self._orders(track, changes, decisions)
        seen = _consumed(qf.track, qf.doc, base, changes)
        if sum(self.engine.running.values()) > running:
            # Something starts: its process first. The file is merged on the next round
            # (what this read consumed is kept: its orders are not taken twice).
            self._seen(track, seen, qf.track.list_key, {})
            self.mark(name)
            return []
        edits, base, index = self._merge(track, qf.track, qf.doc, base, changes)
        return await self._write(
            track, qf.text, read, qf.doc, edits, base, qf.track.list_key, index, seen=seen
        )

    def memo(self, path: Path) -> TaskMemo:
        """The tasks of ``path`` as last read: a start-up read that fills it shares its tasks
        with every later read (one copy of each task in memory, not two)."""
        return self._memos.setdefault(path.resolve(), TaskMemo())

    def _parse(
        self, display: str, stem: str, data: bytes, path: Path, sha: str
    ) -> queuefile.QueueFile:
        memo = self._memos.setdefault(path, TaskMemo())
        return queuefile.parse(display, stem, data, path, sha=sha, memo=memo)

    def _base(self, name: str) -> dict[str, Any]:
        known = self._known.get(name)
        if known is not None:
            return dict(known.base)
        if name in self._fresh:
            return {}
        written = self.engine.store.written(name)
        return dict(written.base) if written else {}

    def _decide(
        self, track: Track, changes: dict[str, merge.UserChanges]
    ) -> dict[str, tuple[Status, orders.Decision]]:
        """Task id -> its status now and the decision on the order its file gives, the same
        as for that order given with the command (``control.orders``)."""
        engine = self.engine
        out: dict[str, tuple[Status, orders.Decision]] = {}
        running: set[TaskKey] | None = None
        for ident, change in changes.items():
            key = TaskKey(track.name, ident)
            if change.ordered_status is None or key not in engine.states:
                continue
            if running is None:
                running = set(engine.running_keys())
            status = engine.status(key)
            order = orders.WRITTEN[change.ordered_status]
            out[ident] = status, orders.decide(order, str(key), status, key in running)
        return out

    def _plan(
        self,
        track: Track,
        definition: TrackDef,
        changes: dict[str, merge.UserChanges],
        decisions: dict[str, tuple[Status, orders.Decision]],
    ) -> plans.Plan:
        engine = self.engine
        ordered: list[plans.Order] = []
        refused: list[plans.Refused] = []
        ignored: list[plans.Ignored] = []
        for ident, change in changes.items():
            if change.ordered_status is not None and ident in decisions:
                current, decision = decisions[ident]
                if decision.refused:
                    refused.append(
                        plans.Refused(ident, change.ordered_status, current, decision.message)
                    )
                else:
                    unchanged = decision.message if decision.event is None else None
                    ordered.append(plans.Order(ident, change.ordered_status, current, unchanged))
            if change.not_an_order is not None:
                ignored.append(plans.Ignored(ident, change.not_an_order))
        rewound = [ident for ident, change in changes.items() if change.rewound]
        running = {
            k.id
            for k in engine.graph.keys(track.name)
            if engine.states.get(k, _PENDING).status is Status.IN_PROGRESS
        }
        return plans.diff(
            track.definition,
            definition,
            orders=ordered,
            refused=refused,
            ignored=ignored,
            rewound=rewound,
            running=running,
            paused_now=engine.graph.track_paused(track.name),
        )

    def report_plan(self, plan: plans.Plan) -> None:
        """Log and journal what a reload will do, before it is done."""
        if plan.empty:
            return
        data = plan.data()
        self.engine.journal("reload_plan", plan.track, **data)
        log.info("reload plan", track=plan.track, file=plan.file, summary=plan.headline())
        for line in plan.lines():
            log.info(line, track=plan.track)

    async def _write(
        self,
        track: Track,
        text: str,
        read: _Read,
        doc: dict[str, Any],
        edits: list[Edit],
        base: dict[str, Any],
        list_key: str,
        index: dict[str, int],
        style: jsonedit.Style | None = None,
        seen: dict[str, Any] | None = None,
    ) -> list[Problem]:
        """Apply the edits to the whole text (``read``'s) and write it (see :meth:`_put`)."""
        new: bytes | None = None
        if edits:
            style = style or jsonedit.detect_style(text)
            new_text = jsonedit.apply_edits(
                text, edits, insert_before={(): list_key}, style=style, parsed=doc
            )
            new = new_text.encode("utf-8")
        return await self._put(track, new, read, base, list_key, index, style, seen=seen)

    async def _put(
        self,
        track: Track,
        new: bytes | None,
        read: _Read,
        base: dict[str, Any],
        list_key: str,
        index: dict[str, int],
        style: jsonedit.Style | None,
        *,
        seen: dict[str, Any] | None = None,
        updates: dict[str, Any] | None = None,
        layout: filelayout.Layout | None = None,
    ) -> list[Problem]:
        """Write ``new`` unless the file changed since it was ``read`` (None: nothing to write),
        then remember the file as the daemon leaves it: ``base`` with ``updates``, and
        ``layout``, the layout of ``new`` (or of the file read), when there is one.

        ``seen`` is the base as this read consumed it (orders applied, new tasks imported):
        kept when the write is refused, so that the next read does not take them again.
        """
        before, digest = read.before, read.digest
        if new is not None:
            announce = functools.partial(self._writing.__setitem__, track.name)
            try:
                wrote = await anyio.to_thread.run_sync(_write, track.path, new, before, announce)
            except OSError as exc:
                # A full disk, a read-only directory: the state is safe in the store; the file
                # is written once it can be. Said once, not at every try (all night long).
                report = log.debug if track.name in self._unwritten else log.warning
                self._unwritten.add(track.name)
                report(
                    "cannot write the queue file; trying again until it can be written",
                    file=queuefile.display_path(track.path),
                    error=exc.strerror or str(exc),
                    retry_in=WRITE_RETRY_SECONDS,
                )
                if seen is not None:
                    self._seen(track, seen, list_key, index)
                self._later.after(track.name, WRITE_RETRY_SECONDS)
                return []
            finally:
                # No await between this and setting ``_known`` below: to the watcher, the
                # new id is always one or the other.
                self._writing.pop(track.name, None)
            if wrote is None:
                log.info("file changed while writing; merging again", track=track.name)
                if seen is not None:
                    self._seen(track, seen, list_key, index)
                self.mark(track.name)
                return []
            self.engine.stats["file_writes"] += 1
            before, digest = wrote
            if track.name in self._unwritten:
                self._unwritten.discard(track.name)
                log.info("queue file written again", file=queuefile.display_path(track.path))
        if updates:
            base.update(updates)
        self._fresh.discard(track.name)
        self._known[track.name] = _Known(digest, before, index, list_key, base, style, layout)
        if new is not None or track.name not in self._persisted:
            self.engine.store.set_written(track.name, Written(str(track.path), digest, base))
            self._persisted.add(track.name)
        return []

    def _seen(
        self, track: Track, base: dict[str, Any], list_key: str, index: dict[str, int]
    ) -> None:
        """Remember what a read consumed though nothing was written (store included).

        The base no longer describes the daemon's last write: the file is not trusted as the
        daemon's own any more (even with the same bytes, which a person may save again), so
        the next sync reads it in full.
        """
        known = self._known[track.name] = _Known("", None, index, list_key, base)
        self.engine.store.set_written(track.name, Written(str(track.path), known.digest, base))

    def _invalid(self, track: Track, problems: list[Problem], version: FileId) -> list[Problem]:
        """Report a file that does not read or validate, once it has settled."""
        wait = self.settle.wait(track.path, version)
        if wait > 0:
            # Perhaps caught half-written: read it again once it has been quiet.
            self._later.after(track.name, wait)
            self._settling.add(track.name)
            return []
        message = "queue file not applied; the last good version stays"
        self.engine.report_invalid(
            track.name, track.definition.path, problems, track.problems, message
        )
        track.problems = problems
        return problems

    def _orders(
        self,
        track: Track,
        changes: dict[str, merge.UserChanges],
        decisions: dict[str, tuple[Status, orders.Decision]],
    ) -> None:
        """Apply the status orders a person wrote, as decided (the plan told which are
        refused: they are not applied, and the store's status is written back over them)."""
        for ident, (status, decision) in decisions.items():
            key = TaskKey(track.name, ident)
            written = changes[ident].ordered_status
            if decision.refused:
                log.warning(
                    "order in the queue file refused",
                    file=queuefile.display_path(track.path),
                    task=str(key),
                    written=str(written),
                    reason=decision.message,
                    next=f"not applied; the file shows {status.value} again",
                )
            elif decision.event is not None and key in self.engine.states:
                reason = f"status set to {written} in the file"
                self.engine.order(key, decision.event, reason)

    def _merge(
        self,
        track: Track,
        definition: TrackDef,
        doc: dict[str, Any],
        base: dict[str, Any],
        changes: dict[str, merge.UserChanges],
    ) -> tuple[list[Edit], dict[str, Any], dict[str, int]]:
        """Every task: merge the owned fields (the orders are applied already)."""
        engine = self.engine
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
            change = changes.get(key.id, merge.NO_CHANGES)
            state = engine.states.get(key)
            if state is None:
                continue
            merged = merge.merge_task(raw, task_base, merge.store_fields(state), change)
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


_PENDING = TaskState()


def _consumed(
    definition: TrackDef,
    doc: dict[str, Any],
    base: dict[str, Any],
    changes: dict[str, merge.UserChanges],
) -> dict[str, Any]:
    """The base once a read is acted on: statuses written by the user are spent (orders
    applied, or reported), and so are older versions put back (reported), tasks seen for the
    first time are imported as the file has them.
    Other fields the user changed stay changed (their values are kept until the daemon's
    next change of them)."""
    items = doc[definition.list_key]
    out = dict(base)
    for task in definition.tasks:
        ident = task.key.id
        raw = items[task.index]
        if ident not in base:
            out.setdefault(ident, merge.file_fields(raw))
            continue
        change = changes.get(ident)
        if change is not None and change.rewound:
            out[ident] = merge.file_fields(raw)  # reported once; the store's values go back
        elif change is not None and (change.ordered_status is not None or change.not_an_order):
            spent = dict(base[ident])
            spent["status"] = raw["status"]
            out[ident] = spent
    return out


def _read(path: Path, fid: FileId | None) -> _Read | None:
    """Read a file (in a worker thread: hashing lets other threads run). ``fid`` is the id the
    daemon knows: when the file has another, its id after the read is taken too."""
    before = queuefile.file_id(path)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    after = before if before == fid else queuefile.file_id(path)
    return _Read(before, data, queuefile.digest(data), after)


def _write(
    path: Path, data: bytes, before: FileId | None, announce: Callable[[FileId], None]
) -> tuple[FileId, str] | None:
    """Write unless the file changed since ``before``; the new id and digest (in a worker
    thread, as :func:`_read`). ``announce`` gets the new id right before the rename."""
    wrote = queuefile.write_if_unchanged(path, data, before, announce=announce)
    return None if wrote is None else (wrote, queuefile.digest(data))


def _paused_edit(doc: dict[str, Any], paused: bool) -> tuple[tuple[str | int, ...], Any]:
    if isinstance(doc.get("track"), dict):
        return (("track", "paused"), paused)
    return (("track",), {"paused": paused})
