"""A reload as a plan: what a new version of a queue file will change, before it is applied.

:func:`diff` compares a track's definition in force with the one just read (either may be
missing: a new file, a removed file), together with the status orders found in the file, and
returns a :class:`Plan`: tasks added, removed and changed (which fields), dependency and trigger
changes, track settings changed, orders and what each will do, and the orders refused (with
the reason: the caller decides, with ``control.orders``, which are). The daemon logs
:meth:`Plan.lines` and journals :meth:`Plan.data` (event ``reload_plan``) before it acts.

Pure: definitions in, a value out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Literal

from .model import Status, TaskDef, TrackDef, TrackSettings

SHOWN = 20
"""Items listed per section in the log lines; the journal keeps up to :data:`KEPT`."""
KEPT = 200

# TaskDef attribute -> the key a person edits in the file. ``deps`` is reported on its own.
_TASK_FIELDS: tuple[tuple[str, str], ...] = (
    ("description", "description"),
    ("title", "title"),
    ("file", "file"),
    ("tests", "tests"),
    ("priority", "priority"),
    ("max_iterations", "max_iterations"),
    ("completion_promise", "completion_promise"),
    ("agent", "agent"),
    ("type", "type"),
    ("command", "command"),
    ("verify", "verify"),
    ("timeout", "timeout"),
    ("verify_timeout", "verify_timeout"),
    ("acceptance_criteria", "acceptance_criteria"),
    ("allow_no_changes", "allow_no_changes"),
    ("paused", "paused"),
)
_SETTINGS = tuple(f.name for f in fields(TrackSettings) if f.name != "start_after")

Kind = Literal["add", "change", "remove"]


@dataclass(frozen=True, slots=True)
class TaskChange:
    id: str
    fields: tuple[str, ...]
    running: bool = False


@dataclass(frozen=True, slots=True)
class DepChange:
    id: str
    field: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Order:
    """A status a person wrote in the file, read as an order."""

    id: str
    status: Status
    """What the file asks for: pending, skipped, complete or blocked."""
    current: Status | None
    """What the daemon has now (None: a task it has not seen yet)."""
    unchanged: str | None = None
    """Why the order changes nothing (the task is so already), when it does not."""

    @property
    def effect(self) -> str:
        if self.unchanged is not None:
            return f"nothing to do: {self.unchanged}"
        running = self.current is Status.IN_PROGRESS
        if self.status is Status.PENDING:
            if running:
                return (
                    "a fresh iteration budget, its running attempt the first of it"
                    " (it keeps running)"
                )
            return "run it again with a fresh iteration budget (history kept)"
        cancel = "cancel its running attempt; " if running else ""
        if self.status is Status.SKIPPED:
            return f"{cancel}do not run it; its dependents may proceed"
        if self.status is Status.COMPLETE:
            return f"{cancel}accept it as complete without running it; its dependents proceed"
        return f"{cancel}stop it; its dependents keep waiting"


@dataclass(frozen=True, slots=True)
class Refused:
    """A status written in the file whose order is refused (it would undo finished work): not
    applied, and the daemon's status is written back over it."""

    id: str
    status: Status
    """What the file asks for."""
    current: Status
    """What the daemon has, and writes back."""
    reason: str

    @property
    def line(self) -> str:
        return (
            f"x refused {self.id}: {self.current.value} -> {self.status.value}: {self.reason}; "
            f"not applied, the file shows {self.current.value} again"
        )


@dataclass(frozen=True, slots=True)
class Ignored:
    """A status written in the file that is not an order (overwritten by the daemon)."""

    id: str
    written: str


@dataclass(frozen=True, slots=True)
class SettingChange:
    name: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class Plan:
    track: str
    file: str
    kind: Kind
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    removed_running: tuple[str, ...] = ()
    changed: tuple[TaskChange, ...] = ()
    dependencies: tuple[DepChange, ...] = ()
    reordered: bool = False
    orders: tuple[Order, ...] = ()
    refused: tuple[Refused, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    rewound: tuple[str, ...] = ()
    """Tasks whose file holds an older version of the daemon's fields (put back): written
    back, not taken as orders (``merge.rewound``)."""
    trigger: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    """``start_after`` before and after, when it changed."""
    settings: tuple[SettingChange, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing the daemon does differs (a change of keys it does not read, say)."""
        return self.kind == "change" and not (
            self.added
            or self.removed
            or self.changed
            or self.dependencies
            or self.reordered
            or self.orders
            or self.refused
            or self.ignored
            or self.rewound
            or self.trigger
            or self.settings
        )

    def headline(self) -> str:
        """The plan in one line."""
        if self.kind == "add":
            return f"new track: {_n(len(self.added), 'task')}"
        if self.kind == "remove":
            return (
                f"file removed: {_n(len(self.removed), 'task')} leave the schedule; their state "
                "is kept and the track resumes if the file comes back"
            )
        parts = [
            f"{len(self.added)} added" if self.added else "",
            f"{len(self.removed)} removed" if self.removed else "",
            f"{len(self.changed)} changed" if self.changed else "",
            _n(len(self.dependencies), "dependency change") if self.dependencies else "",
            "reordered" if self.reordered else "",
            _n(len(self.orders), "order") if self.orders else "",
            f"{_n(len(self.refused), 'order')} refused" if self.refused else "",
            _n(len(self.ignored), "status ignored") if self.ignored else "",
            f"{_n(len(self.rewound), 'task')} put back" if self.rewound else "",
            "trigger changed" if self.trigger else "",
            "settings changed" if self.settings else "",
        ]
        return ", ".join(p for p in parts if p) or "no change the daemon acts on"

    def lines(self) -> list[str]:
        """The plan in words, one change per line (long sections are cut short)."""
        out: list[str] = []
        if self.kind == "add":
            out += _listed("+ add task", self.added)
        elif self.kind == "remove":
            out += [
                f"- cancel running {i} (attempt recorded as interrupted)"
                for i in _cut(self.removed_running)
            ]
        else:
            out += _listed("+ add task", self.added)
            running = set(self.removed_running)
            out += _listed(
                "- remove task",
                self.removed,
                lambda i: " (running: its attempt is cancelled)" if i in running else "",
            )
        for change in self.changed[:SHOWN]:
            note = " (running: applies from its next attempt)" if change.running else ""
            out.append(f"~ change {change.id}: {', '.join(change.fields)}{note}")
        out += _more(len(self.changed), "changed task")
        for dep in self.dependencies[:SHOWN]:
            edits = [f"+{r}" for r in dep.added] + [f"-{r}" for r in dep.removed]
            out.append(f"~ {dep.field} of {dep.id}: {' '.join(edits)}")
        out += _more(len(self.dependencies), "dependency change")
        if self.reordered:
            out.append("~ tasks reordered: file order breaks ties between equal priorities")
        if self.trigger is not None:
            before, after = self.trigger
            out.append(f"~ track.start_after: {_refs(before)} -> {_refs(after)}")
        for setting in self.settings:
            out.append(f"~ track.{setting.name}: {setting.before!r} -> {setting.after!r}")
        for order in self.orders[:SHOWN]:
            was = order.current.value if order.current else "new"
            out.append(f"! order {order.id}: {was} -> {order.status.value}: {order.effect}")
        out += _more(len(self.orders), "order")
        out += [item.line for item in self.refused[:SHOWN]]
        out += _more(len(self.refused), "refused order")
        for item in self.ignored[:SHOWN]:
            out.append(
                f"? {item.id}: status {item.written!r} is not an order (write pending, "
                "skipped, complete or blocked); the daemon's status is written back"
            )
        for ident in self.rewound[:SHOWN]:
            out.append(
                f"< {ident}: an older attempt than the daemon wrote: an older version put back, "
                "not an order; the daemon's record is written back (to give it an order, "
                "write its status again)"
            )
        out += _more(len(self.rewound), "task put back")
        return out

    def data(self) -> dict[str, Any]:
        """The plan as JSON for the event journal (long lists cut to :data:`KEPT`)."""
        return {
            "file": self.file,
            "action": self.kind,
            "summary": self.headline(),
            "added": list(self.added[:KEPT]),
            "removed": list(self.removed[:KEPT]),
            "removed_running": list(self.removed_running[:KEPT]),
            "changed": {c.id: list(c.fields) for c in self.changed[:KEPT]},
            "dependencies": {
                d.id: {"added": list(d.added), "removed": list(d.removed)}
                for d in self.dependencies[:KEPT]
            },
            "reordered": self.reordered,
            "orders": {o.id: o.status.value for o in self.orders[:KEPT]},
            "refused": {
                r.id: {"written": r.status.value, "status": r.current.value, "reason": r.reason}
                for r in self.refused[:KEPT]
            },
            "ignored": {i.id: i.written for i in self.ignored[:KEPT]},
            "rewound": list(self.rewound[:KEPT]),
            "trigger": None if self.trigger is None else [list(t) for t in self.trigger],
            "settings": {s.name: [s.before, s.after] for s in self.settings},
            "counts": {
                "added": len(self.added),
                "removed": len(self.removed),
                "changed": len(self.changed),
                "orders": len(self.orders),
                "refused": len(self.refused),
                "rewound": len(self.rewound),
            },
        }


def diff(
    old: TrackDef | None,
    new: TrackDef | None,
    *,
    orders: Sequence[Order] = (),
    refused: Sequence[Refused] = (),
    ignored: Sequence[Ignored] = (),
    rewound: Sequence[str] = (),
    running: Collection[str] = (),
    paused_now: bool | None = None,
) -> Plan:
    """The plan that takes a track from ``old`` to ``new``.

    ``running`` are the ids of tasks with an attempt under way; ``paused_now`` is whether the
    track is paused in the daemon right now (pausing is also an order the daemon writes back,
    so the file's old ``track.paused`` may be stale).
    """
    if old is None and new is None:
        raise ValueError("nothing to compare")
    if new is None:
        assert old is not None
        ids = _ids(old)
        return Plan(
            old.name,
            old.path,
            "remove",
            removed=tuple(ids),
            removed_running=tuple(i for i in ids if i in running),
        )
    if old is None:
        return Plan(
            new.name,
            new.path,
            "add",
            added=tuple(_ids(new)),
            orders=tuple(orders),
            refused=tuple(refused),
        )
    before = {t.key.id: t for t in _unique(old.tasks)}
    after = {t.key.id: t for t in _unique(new.tasks)}
    added = tuple(i for i in after if i not in before)
    removed = tuple(i for i in before if i not in after)
    changed: list[TaskChange] = []
    deps: list[DepChange] = []
    for ident, task in after.items():
        prior = before.get(ident)
        if prior is None or prior is task or _DEFINED(prior) == _DEFINED(task):
            continue
        names = _changed_fields(prior, task)
        if names:
            changed.append(TaskChange(ident, names, ident in running))
        if prior.deps != task.deps:
            was = [str(r) for r in prior.deps]
            now = [str(r) for r in task.deps]
            deps.append(
                DepChange(
                    ident,
                    task.deps_field,
                    tuple(r for r in now if r not in was),
                    tuple(r for r in was if r not in now),
                )
            )
    kept_before = [i for i in before if i in after]
    kept_after = [i for i in after if i in before]
    trigger_before = tuple(str(r) for r in old.settings.start_after)
    trigger_after = tuple(str(r) for r in new.settings.start_after)
    return Plan(
        new.name,
        new.path,
        "change",
        added=added,
        removed=removed,
        removed_running=tuple(i for i in removed if i in running),
        changed=tuple(changed),
        dependencies=tuple(deps),
        reordered=kept_before != kept_after,
        orders=tuple(orders),
        refused=tuple(refused),
        ignored=tuple(ignored),
        rewound=tuple(rewound),
        trigger=None if trigger_before == trigger_after else (trigger_before, trigger_after),
        settings=_settings(old, new, paused_now),
    )


_DEFINED = attrgetter(*(f.name for f in fields(TaskDef) if f.name != "owned"))
"""A task's definition: every field but the daemon-owned values."""


def same_definition(a: TrackDef, b: TrackDef) -> bool:
    """Whether two versions of a track define the same thing (daemon-owned values aside)."""
    if (a.name, a.path, a.list_key, a.settings, a.project) != (
        b.name,
        b.path,
        b.list_key,
        b.settings,
        b.project,
    ):
        return False
    if len(a.tasks) != len(b.tasks):
        return False
    return all(x is y or _DEFINED(x) == _DEFINED(y) for x, y in zip(a.tasks, b.tasks, strict=True))


def _unique(tasks: Sequence[TaskDef]) -> list[TaskDef]:
    seen: set[str] = set()
    out = []
    for task in tasks:
        if task.key.id not in seen:
            seen.add(task.key.id)
            out.append(task)
    return out


def _ids(track: TrackDef) -> list[str]:
    return [t.key.id for t in _unique(track.tasks)]


def _changed_fields(a: TaskDef, b: TaskDef) -> tuple[str, ...]:
    return tuple(name for attr, name in _TASK_FIELDS if getattr(a, attr) != getattr(b, attr))


def _settings(old: TrackDef, new: TrackDef, paused_now: bool | None) -> tuple[SettingChange, ...]:
    out = []
    for name in _SETTINGS:
        before = getattr(old.settings, name)
        if name == "paused" and paused_now is not None:
            before = paused_now
        after = getattr(new.settings, name)
        if before != after:
            if name == "env":  # kept as sorted pairs; shown as the object written
                before, after = dict(before), dict(after)
            out.append(SettingChange(name, _jsonable(before), _jsonable(after)))
    if old.project != new.project:
        out.append(SettingChange("project", old.project, new.project))
    if old.list_key != new.list_key:
        out.append(SettingChange("list", old.list_key, new.list_key))
    return tuple(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _refs(refs: Sequence[str]) -> str:
    return "[" + ", ".join(refs) + "]"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _cut(items: Sequence[str]) -> Sequence[str]:
    return items[:SHOWN]


def _more(count: int, word: str) -> list[str]:
    return [f"  ... and {_n(count - SHOWN, word)} more"] if count > SHOWN else []


def _listed(prefix: str, ids: Sequence[str], note: Any = None) -> list[str]:
    out = [f"{prefix} {i}{note(i) if note else ''}" for i in ids[:SHOWN]]
    if len(ids) > SHOWN:
        out.append(f"  ... and {len(ids) - SHOWN} more")
    return out
