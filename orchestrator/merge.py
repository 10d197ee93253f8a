"""The three-way merge of daemon-owned fields: base, file and store.

For one task and one daemon-owned field:

* *base* is what the daemon last wrote (or what the file held when the task was imported),
* *file* is what is on disk now,
* *store* is what the daemon knows.

A field the user did not touch (file == base) takes the store's value. A task whose file shows
an older attempt than the base is an older version put back (a checkout, a stash): every field
takes the store's value, and nothing in it is an order. A ``status`` the user changed is an
order (``pending`` run again, ``skipped`` skip, ``complete`` accept, ``blocked`` stop; whether
it is applied is decided as for the command, by ``control.orders``); a status that is not an
order (``in_progress``, ``failed``) is reported and overwritten.
Any other daemon-owned field the user changed keeps the user's value until the daemon itself
changes that field again (the later change wins). Fields a file did not have are added only
once the daemon has something to say in them.

Pure: JSON values in, edits and the new base out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .model import OWNED_FIELDS, Status, TrackDef
from .schema import STATUS_ALIASES
from .states import ORDER_STATUSES, TaskState

JSON = Any
Base = Mapping[str, JSON]
"""Daemon-owned fields of one task as last written; a missing key means the file had none."""


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def store_fields(state: TaskState) -> dict[str, JSON]:
    """The store's daemon-owned fields of a task, as JSON values."""
    o = state.owned
    files = o.files_actually_changed
    return {
        "status": o.status.value,
        "attempts": o.attempts,
        "last_attempt": o.last_attempt,
        "completed_at": o.completed_at,
        "passes": o.passes,
        "error": o.error,
        "verification_verdict": o.verification_verdict,
        "files_actually_changed": None if files is None else list(files),
    }


def file_fields(task: Mapping[str, JSON]) -> dict[str, JSON]:
    """The daemon-owned fields present in a task object of a file."""
    return {f: task[f] for f in OWNED_FIELDS if f in task}


def says_something(name: str, value: JSON) -> bool:
    """Whether a value is worth adding to a task that does not have the field."""
    if value is None or value is ABSENT:
        return False
    if name == "status":
        return bool(value != Status.PENDING.value)
    if name == "attempts":
        return bool(value)
    if name == "files_actually_changed":
        return bool(value)
    return True


def same(name: str, a: JSON, b: JSON) -> bool:
    """JSON equality, strict about types (``1`` is not ``true``); statuses by meaning."""
    if name == "status" and isinstance(a, str) and isinstance(b, str):
        return STATUS_ALIASES.get(a.strip().lower(), a) == STATUS_ALIASES.get(b.strip().lower(), b)
    return _strict_equal(a, b)


def _strict_equal(a: JSON, b: JSON) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if not a or not b:
            return not a and not b
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _equivalent(name: str, base_value: JSON, store_value: JSON) -> bool:
    """Store and base agree, counting an absent base as the store's empty value."""
    if base_value is ABSENT:
        return not says_something(name, store_value)
    return same(name, base_value, store_value)


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What a user changed in one task's daemon-owned fields since the daemon last wrote."""

    ordered_status: Status | None = None
    """A changed status that is an order (see ``states.ORDER_STATUSES``)."""
    not_an_order: str | None = None
    """A changed status that is not an order (reported, then overwritten)."""
    fields: frozenset[str] = field(default_factory=frozenset)
    """Other daemon-owned fields the user changed."""
    rewound: bool = False
    """The task holds an older version of the daemon's fields than it last wrote (see
    :func:`rewound`): nothing in it is an order, and the store's values are written back."""


def user_changes(task: Mapping[str, JSON], base: Base) -> UserChanges:
    """Compare a file's task with the base; say what the user changed."""
    changed = {
        name
        for name in OWNED_FIELDS
        if not same(name, task.get(name, ABSENT), base.get(name, ABSENT))
    }
    if not changed:
        return NO_CHANGES
    ordered: Status | None = None
    not_order: str | None = None
    if "status" in changed:
        changed.discard("status")
        raw = task.get("status", ABSENT)
        status = _status(raw)
        if raw is ABSENT:
            pass  # the user deleted the field: the daemon writes it again
        elif status is not None and status in ORDER_STATUSES:
            ordered = status
        else:
            not_order = str(raw)
    if rewound(task, base, ordered is not None):
        return REWOUND
    return UserChanges(ordered, not_order, frozenset(changed))


def _status(raw: JSON) -> Status | None:
    """A status as a file spells it (any case, an old alias), or None."""
    return STATUS_ALIASES.get(raw.strip().lower()) if isinstance(raw, str) else None


NO_CHANGES = UserChanges()
REWOUND = UserChanges(rewound=True)


def rewound(task: Mapping[str, JSON], base: Base, ordered: bool) -> bool:
    """Whether a task shows an older attempt than the daemon last wrote into it: an earlier
    ``last_attempt`` (none counts as the earliest), or fewer ``attempts`` unless its status
    is changed to an order (``ordered``) and ``last_attempt`` left as it was. An older version
    of the file was put back (``git checkout`` or ``git stash`` of the tracks directory, a
    backup, an editor's undo), which nobody means as orders: a person changes a status, not
    the record of the attempts the daemon made.

    Fewer ``attempts`` with the same ``last_attempt`` is what the daemon writes only while an
    attempt runs (``in_progress``, not an order); with a status that is an order it is a
    person's retry the old loop's way (``pending`` and ``attempts`` set back to 0)."""
    last, written = task.get("last_attempt", ABSENT), base.get("last_attempt", ABSENT)
    if _earlier(last, written):
        return True
    retried = ordered and same("last_attempt", last, written)
    return not retried and _fewer(task.get("attempts", ABSENT), base.get("attempts", ABSENT))


def _fewer(now: JSON, written: JSON) -> bool:
    now = 0 if now is ABSENT or now is None else now
    counts = (now, written)
    return all(isinstance(n, int) and not isinstance(n, bool) for n in counts) and now < written


def _earlier(now: JSON, written: JSON) -> bool:
    """ISO 8601 times as the daemon writes them (UTC, one format) compare as text."""
    if not isinstance(written, str):
        return False
    return now is ABSENT or now is None or (isinstance(now, str) and now < written)


def track_changes(
    definition: TrackDef, doc: Mapping[str, JSON], base: Mapping[str, Base]
) -> dict[str, UserChanges]:
    """Task id -> what the user changed in its daemon-owned fields, for the tasks of a parsed
    file (``doc``, which ``definition`` was read from) against the base of each task id (only
    tasks with changes; a task id copied in a file counts once, the first copy)."""
    items = doc[definition.list_key]
    out: dict[str, UserChanges] = {}
    for task in definition.tasks:
        ident = task.key.id
        task_base = base.get(ident)
        if ident in out or task_base is None:
            continue  # seen, or first seen: the file's values are its base, nothing changed
        raw = items[task.index]
        if orjson.dumps(file_fields(raw)) == orjson.dumps(task_base):
            continue  # exactly as the daemon left it (JSON text compares types strictly)
        change = user_changes(raw, task_base)
        if change != NO_CHANGES:
            out[ident] = change
    return out


@dataclass(frozen=True, slots=True)
class Merged:
    edits: dict[str, JSON]
    """Field -> value to write into the task object."""
    base: dict[str, JSON]
    """What the task's daemon-owned fields hold after the edits: the next base."""


def merge_task(
    task: Mapping[str, JSON], base: Base, store: Mapping[str, JSON], changes: UserChanges
) -> Merged:
    """Edits that bring a task's daemon-owned fields in line, keeping the user's changes.

    ``store`` must already include any order in ``changes`` (the daemon applies orders first).
    """
    edits: dict[str, JSON] = {}
    new_base: dict[str, JSON] = {}
    user = changes.fields
    for name in OWNED_FIELDS:
        on_disk = task.get(name, ABSENT)
        wanted = store[name]
        if user and name in user and _equivalent(name, base.get(name, ABSENT), wanted):
            # The user changed it and the daemon did not: the user's value stays.
            if on_disk is not ABSENT:
                new_base[name] = on_disk
            continue
        kind = type(on_disk)
        if kind is type(wanted) and kind is not list and on_disk == wanted:
            new_base[name] = on_disk  # the same scalar (the common case, decided quickly)
            continue
        if on_disk is ABSENT and not says_something(name, wanted):
            continue
        if on_disk is ABSENT or not same(name, on_disk, wanted):
            edits[name] = wanted
            new_base[name] = wanted
        else:
            new_base[name] = on_disk
    return Merged(edits, new_base)


SUMMARY_KEYS = ("total", *(s.value for s in Status))
SUMMARY_ALIASES = {"completed": "complete", "done": "complete", "parked": "skipped"}


def summary(counts: Mapping[str, int], existing: JSON) -> dict[str, JSON]:
    """The top-level ``summary``: our counts, the file's other keys kept, aliases updated."""
    out: dict[str, JSON] = {}
    old = existing if isinstance(existing, dict) else {}
    for key, value in old.items():
        if key in SUMMARY_KEYS:
            out[key] = counts.get(key, 0)
        elif key in SUMMARY_ALIASES:
            out[key] = counts.get(SUMMARY_ALIASES[key], 0)
        else:
            out[key] = value
    for key in SUMMARY_KEYS:
        out.setdefault(key, counts.get(key, 0))
    return out
