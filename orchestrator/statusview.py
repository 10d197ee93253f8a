"""The status of every track: one JSON-able snapshot, and its rendering as rich tables.

``status --json`` prints :func:`snapshot` as is; its schema is documented in
``docs/commands.md`` and versioned by ``schema_version``. The terminal view renders the same
data, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .graph import Graph
from .model import STATUS_ORDER, Owned, Status, TaskDef, TaskKey
from .problems import Problem
from .store import HoldRow, Spend

SCHEMA_VERSION = 1
NEXT_SHOWN = 5

OwnedLookup = Callable[[TaskKey], Owned | None]


def _counts(graph: Graph, keys: list[TaskKey]) -> dict[str, int]:
    counts = {"total": len(keys)} | {s.value: 0 for s in STATUS_ORDER}
    for key in keys:
        counts[graph.status(key).value] += 1
    return counts


def _task_brief(task: TaskDef | None, key: TaskKey) -> dict[str, Any]:
    brief: dict[str, Any] = {"ref": str(key), "id": key.id}
    if task is not None:
        brief["priority"] = task.priority
        brief["summary"] = task.summary_line[:120]
    return brief


def snapshot(
    graph: Graph,
    tasks: Mapping[TaskKey, TaskDef],
    files: Mapping[str, str],
    problems: tuple[Problem, ...] = (),
    owned: OwnedLookup | None = None,
    daemon: Mapping[str, Any] | None = None,
    spend: Mapping[str, Spend] | None = None,
    waits: Sequence[HoldRow] = (),
) -> dict[str, Any]:
    """The status of every track as plain data (the ``status --json`` document).

    ``spend`` (per track: what its agents reported using) and ``waits`` (agents waiting for
    their usage limit to reset) come from the store when there is one.
    """
    lookup: OwnedLookup = owned or (lambda k: tasks[k].owned if k in tasks else None)
    all_keys: list[TaskKey] = []
    tracks_out: list[dict[str, Any]] = []
    for name, spec in graph.tracks.items():
        keys = list(graph.keys(name))
        all_keys.extend(keys)
        trigger = None
        if spec.trigger:
            trigger = {
                "refs": [str(t) for t in spec.trigger],
                "holds": graph.trigger_holds(name),
                "waiting_on": [str(t) for t in spec.trigger if not graph.target_done(t)],
            }
        running, blocked, failed = [], [], []
        for key in keys:
            status = graph.status(key)
            info = lookup(key)
            if status is Status.IN_PROGRESS:
                running.append(
                    _task_brief(tasks.get(key), key)
                    | {"attempts": info.attempts if info else 0, "started_at": None}
                )
            elif status is Status.BLOCKED:
                blocked.append(_task_brief(tasks.get(key), key) | {"reason": info and info.error})
            elif status is Status.FAILED:
                failed.append(
                    _task_brief(tasks.get(key), key)
                    | {"attempts": info.attempts if info else 0, "reason": info and info.error}
                )
        tracks_out.append(
            {
                "name": name,
                "file": files.get(name),
                "paused": graph.track_paused(name),
                "counts": _counts(graph, keys),
                "trigger": trigger,
                "ready_count": graph.ready_count(name),
                "next": [
                    _task_brief(tasks.get(k), k) for k in graph.ready_in_order(name, NEXT_SHOWN)
                ],
                "running": running,
                "blocked": blocked,
                "failed": failed,
                "spend": _spend(spend.get(name) if spend else None),
                "waiting": [
                    {"agent": w.agent, "until": w.until, "reason": w.reason}
                    for w in waits
                    if name in w.tracks
                ],
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "daemon": dict(daemon or {"running": False}),
        "totals": _counts(graph, all_keys),
        "spend": _spend(_total(spend.values())) if spend else _spend(None),
        "usage_limits": [
            {
                "agent": w.agent,
                "since": w.since,
                "until": w.until,
                "reason": w.reason,
                "tracks": list(w.tracks),
            }
            for w in waits
        ],
        "tracks": tracks_out,
        "problems": [
            {"file": p.file, "path": p.path, "message": p.message, "severity": p.severity}
            for p in problems
        ],
    }


def _spend(used: Spend | None) -> dict[str, Any]:
    used = used or Spend()
    return {"tokens": used.tokens, "cost_usd": round(used.cost_usd, 6), "attempts": used.attempts}


def _total(items: Iterable[Spend]) -> Spend:
    tokens, cost, attempts = 0, 0.0, 0
    for item in items:
        tokens, cost, attempts = (
            tokens + item.tokens,
            cost + item.cost_usd,
            attempts + item.attempts,
        )
    return Spend(tokens, cost, attempts)


_STYLE = {
    "pending": "white",
    "in_progress": "yellow",
    "complete": "green",
    "blocked": "red",
    "failed": "bold red",
    "skipped": "dim",
}


def render(data: Mapping[str, Any]) -> RenderableType:
    """Rich tables for a :func:`snapshot`."""
    parts: list[RenderableType] = []
    daemon = data["daemon"]
    if not daemon.get("running"):
        parts.append(Text("daemon not running: showing the queue files", style="dim"))
    totals = data["totals"]
    parts.append(
        Text.assemble(
            ("all tracks: ", "bold"),
            *[(f"{k} {totals[k]}  ", _STYLE.get(k, "")) for k in totals],
        )
    )
    for track in data["tracks"]:
        parts.append(_track_table(track))
    for problem in data["problems"]:
        style = "red" if problem["severity"] == "error" else "yellow"
        parts.append(
            Text(f"{problem['file']}: {problem['path']}: {problem['message']}", style=style)
        )
    return Group(*parts)


def _track_table(track: Mapping[str, Any]) -> Table:
    title = f"{track['name']}  ({track['file']})"
    if track["paused"]:
        title += "  [paused]"
    table = Table(title=title, title_justify="left", show_header=True, expand=False)
    counts = track["counts"]
    for key in counts:
        table.add_column(key, justify="right", style=_STYLE.get(key, "bold"))
    table.add_row(*[str(v) for v in counts.values()])
    notes: list[str] = []
    trigger = track["trigger"]
    if trigger:
        if trigger["holds"]:
            notes.append(f"trigger holds: start_after {', '.join(trigger['refs'])}")
        else:
            notes.append(f"waiting for trigger: {', '.join(trigger['waiting_on'])}")
    for item in track["running"]:
        notes.append(f"running: {item['id']} (attempt {item['attempts']})")
    if track["next"]:
        more = track["ready_count"] - len(track["next"])
        shown = ", ".join(t["id"] for t in track["next"])
        notes.append(f"next: {shown}" + (f" (+{more} more)" if more > 0 else ""))
    for wait in track.get("waiting", ()):
        notes.append(f"waiting until {wait['until']}: usage limit of agent {wait['agent']!r}")
    spent = track.get("spend") or {}
    if spent.get("attempts"):
        notes.append(f"spent: ${spent['cost_usd']:.2f}, {spent['tokens']:,} tokens")
    for item in track["blocked"]:
        notes.append(f"blocked: {item['id']}: {item['reason'] or 'no reason recorded'}")
    for item in track["failed"]:
        notes.append(f"failed: {item['id']}: {item['reason'] or 'no reason recorded'}")
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def print_status(data: Mapping[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(render(data))
