"""What each journaled event says to a person: one sentence per kind of event.

The same sentence is shown wherever a person reads events: the terminal that runs the daemon,
the web board's feed, notifications (``text``, ``ORCHESTRATORD_EVENT_SUMMARY``), and the
``text`` of every event in ``events.jsonl`` and on the event stream, so that
``jq -r '"\\(.at) \\(.text)"' STATE/events.jsonl`` tells the night's story.

Pure: an event's kind, subject and data in, a sentence out. Events journaled by an older
version of the daemon may lack a field: a sentence never fails, it says less.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any

from .budgets import Crossing
from .model import TaskKey

Data = Mapping[str, Any]
_DAEMON = "orchestratord"
"""Who an event without a task or track is about."""


def sentence(kind: str, subject: TaskKey | str | None, data: Data) -> str:
    """The event in words; ``subject``: its task, its track, or None (the daemon)."""
    who = str(subject) if subject is not None else _DAEMON
    words = _SENTENCES.get(kind)
    if words is not None:
        try:
            return words(who, data)
        except (TypeError, ValueError, KeyError, AttributeError):
            pass  # data of another shape (another version's journal): said as any other kind
    return f"{who}: {kind.replace('_', ' ')}"


def worded(kind: str) -> bool:
    """Whether ``kind`` has a sentence of its own (not the generic one)."""
    return kind in _SENTENCES


def _reason(data: Data) -> str:
    return f": {data['reason']}" if data.get("reason") else ""


def _number(number: Any) -> str:
    """`` 3`` after "attempt", when the event says which (older events do not)."""
    return f" {number}" if isinstance(number, int) else ""


def _first(problems: Any) -> str:
    """The first of a list of problems, and how many more."""
    items = [str(p) for p in problems] if isinstance(problems, Sequence) else []
    if not items:
        return "(no details)"
    return items[0] + (f" (+{len(items) - 1} more)" if len(items) > 1 else "")


def _count(number: Any, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


FILES_LISTED = 50
"""How many of its changed files a ``worktree_kept`` event lists, at most."""


def _files(files: Sized) -> str:
    """How many files a list cut to :data:`FILES_LISTED` stands for."""
    if len(files) >= FILES_LISTED:
        return f"{FILES_LISTED} files or more"
    return _count(len(files), "file")


def _names(items: Any) -> str:
    return ", ".join(map(str, items)) if isinstance(items, Sequence) and items else "none"


def _bytes(size: Any) -> str:
    value = float(size) if isinstance(size, int | float) else 0.0
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # not reached


def _budget(who: str, data: Data) -> str:
    limit, spent = data.get("limit"), data.get("spent")
    if not isinstance(limit, int | float) or not isinstance(spent, int | float):
        return f"{who}: a budget was crossed"
    scope, unit = data.get("scope", "task"), data.get("unit", "usd")
    crossing = Crossing(scope, str(data.get("of", who)), unit, limit, spent)
    paused = "every track is paused" if scope == "day" else "its track is paused"
    return f"{crossing.describe()}; {paused}"


def _config_reloaded(who: str, data: Data) -> str:
    changed = data.get("changed") or []
    later = data.get("at_restart") or []
    now = f"{_names(changed)} changed" if changed else "nothing changes now"
    return f"configuration reloaded: {now}" + (
        f"; at the next start: {_names(later)}" if later else ""
    )


def _invalid_file(who: str, data: Data) -> str:
    """A track's file keeps its last good version in force; a file that is no track yet (a new
    one, or one that did not load at start-up) has none: nothing of it runs."""
    first = _first(data.get("problems"))
    if who == _DAEMON:
        return f"not loaded: {first}; none of its tasks run until it is fixed"
    return f"not applied: {first}; the last good version stays in force"


def _usage_limit(who: str, data: Data) -> str:
    message = f" ({data['message']})" if data.get("message") else ""
    return (
        f"usage limit of agent {data.get('agent')} reached{message}: tracks"
        f" {_names(data.get('tracks'))} wait until {data.get('until')}"
    )


def _usage_limit_reset(who: str, data: Data) -> str:
    """The tracks resumed: those the wait held that are still paused, still in the tracks
    directory, and held by nothing else (a budget, another agent's wait)."""
    over = f"usage limit of agent {data.get('agent')} over"
    if not data.get("tracks"):
        return (
            f"{over}; no track resumed (each is held for another reason, running already, or gone)"
        )
    return f"{over}: tracks {_names(data.get('tracks'))} resumed"


_SENTENCES: dict[str, Callable[[str, Data], str]] = {
    "daemon_started": lambda who, d: f"orchestratord started (pid {d.get('pid')})",
    "daemon_stopping": lambda who, d: (
        f"orchestratord is stopping ({len(d.get('running') or [])} running){_reason(d)}"
    ),
    "daemon_paused": lambda who, d: f"orchestratord paused{_reason(d)}",
    "daemon_resumed": lambda who, d: "orchestratord resumed",
    "task_started": lambda who, d: f"{who} attempt {d.get('attempt')} started",
    "attempt_finished": lambda who, d: (
        f"{who} attempt {d.get('attempt')}: {d.get('verdict')}{_reason(d)}"
    ),
    "attempt_interrupted": lambda who, d: (
        f"{who} attempt{_number(d.get('attempt'))} interrupted{_reason(d)}"
    ),
    "task_complete": lambda who, d: f"{who} is complete{_reason(d)}",
    "task_failed": lambda who, d: (
        f"{who} FAILED after {_count(d.get('attempts'), 'attempt')}{_reason(d)}"
    ),
    "task_blocked": lambda who, d: f"{who} is BLOCKED{_reason(d)}",
    "task_skipped": lambda who, d: f"{who} was skipped{_reason(d)}",
    "task_retry": lambda who, d: f"{who} will run again{_reason(d)}",
    "track_started": lambda who, d: (
        f"trigger fired: track {who} starts (start_after {_names(d.get('trigger'))})"
    ),
    "track_complete": lambda who, d: f"track {who} is complete",
    "track_paused": lambda who, d: f"track {who} paused{_reason(d)}",
    "track_resumed": lambda who, d: f"track {who} resumed",
    "track_added": lambda who, d: f"track {who} added ({d.get('file')})",
    "track_removed": lambda who, d: f"track {who} removed ({d.get('file')}){_reason(d)}",
    "queue_file_invalid": _invalid_file,
    "queue_file_valid": lambda who, d: f"track {who}: {d.get('file')} is valid again and applied",
    "reload_plan": lambda who, d: f"reload {who}: {d.get('summary')}",
    "attempt_reattached": lambda who, d: (
        f"{who} attempt {d.get('attempt')} found running on the cluster again"
    ),
    "worktree_kept": lambda who, d: (
        f"track {who}: worktree {d.get('path')} kept, it has uncommitted changes"
        f" ({_files(d.get('files') or [])})"
    ),
    "worktree_removed": lambda who, d: (
        f"track {who}: worktree {d.get('path')} removed (branch {d.get('branch')} stays)"
    ),
    "worktree_remade": lambda who, d: (
        f"track {who}: worktree {d.get('path')} made again{_reason(d)}"
    ),
    "git_lock_removed": lambda who, d: (
        f"track {who}: stale git lock {d.get('path')} removed{_reason(d)}"
    ),
    "git_lock_left": lambda who, d: (
        f"track {who}: git lock {d.get('path')} left in place{_reason(d)}"
    ),
    "budget_exceeded": _budget,
    "usage_limit": _usage_limit,
    "usage_limit_reset": _usage_limit_reset,
    "config_reloaded": _config_reloaded,
    "config_invalid": lambda who, d: (
        f"configuration not reloaded: {_first(d.get('problems'))}; the settings in force stay"
    ),
    "logs_pruned": lambda who, d: (
        f"log retention removed {_count(d.get('files'), 'old attempt file')}"
        f" ({_bytes(d.get('bytes'))})"
    ),
}
