"""The status of every track: one JSON-able snapshot, and its rendering as rich tables.

``status --json`` prints :func:`snapshot` as is; its schema is documented in
``docs/commands.md`` and versioned by ``schema_version``. The terminal view renders the same
data, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .clock import iso
from .graph import Graph
from .model import STATUS_ORDER, Owned, Status, TaskDef, TaskKey
from .problems import Problem
from .states import TaskState
from .store import HoldRow, Spend

SCHEMA_VERSION = 1
NEXT_SHOWN = 5
LISTED = 10
"""Blocked and failed tasks listed per track in the terminal view (``--json`` has them all)."""

OwnedLookup = Callable[[TaskKey], Owned | None]
StateLookup = Callable[[TaskKey], TaskState | None]
BudgetLookup = Callable[[TaskKey], int | None]


def counts(graph: Graph, track: str) -> dict[str, int]:
    """The tasks of ``track`` by status, and in all (the queue file's ``summary``)."""
    return _as_counts(graph.status_counts(track))


def _task_brief(task: TaskDef | None, key: TaskKey) -> dict[str, Any]:
    brief: dict[str, Any] = {"ref": str(key), "id": key.id}
    if task is not None:
        brief["priority"] = task.priority
        brief["summary"] = task.summary_line[:120]
    return brief


def _running(
    brief: dict[str, Any],
    state: TaskState | None,
    info: Owned | None,
    budget: int | None,
    now: datetime | None,
) -> dict[str, Any]:
    attempts = info.attempts if info else 0
    started = info.last_attempt if info else None
    elapsed = None
    if started and now is not None:
        try:
            elapsed = max(0.0, round((now - datetime.fromisoformat(started)).total_seconds(), 1))
        except ValueError:
            elapsed = None
    return brief | {
        "attempts": attempts,
        "attempt": attempts + 1,
        "iteration": state.iteration + 1 if state else None,
        "max_iterations": budget,
        "started_at": started,
        "elapsed_seconds": elapsed,
    }


def snapshot(
    graph: Graph,
    tasks: Mapping[TaskKey, TaskDef],
    files: Mapping[str, str],
    problems: tuple[Problem, ...] = (),
    owned: OwnedLookup | None = None,
    daemon: Mapping[str, Any] | None = None,
    *,
    state: StateLookup | None = None,
    budget: BudgetLookup | None = None,
    now: datetime | None = None,
    only: str | None = None,
    spend: Mapping[str, Spend] | None = None,
    waits: Sequence[HoldRow] = (),
    unloaded: Collection[str] = (),
) -> dict[str, Any]:
    """The status of every track (or of track ``only``) as plain data: ``status --json``.

    ``state`` and ``budget`` add the running attempt's iteration and budget; ``now`` its
    elapsed time and the document's ``generated_at``. ``spend`` (per track: what its agents
    reported using) and ``waits`` (agents waiting for their usage limit to reset) come from
    the store when there is one. ``unloaded``: tracks whose file has errors, which the daemon
    does not load (none of their tasks is next).
    """
    lookup: OwnedLookup = owned or (lambda k: tasks[k].owned if k in tasks else None)
    totals = dict.fromkeys(STATUS_ORDER, 0)
    tracks_out: list[dict[str, Any]] = []
    status_of = graph.status
    held = _held_by_track(graph)
    for name, spec in graph.tracks.items():
        tally = graph.status_counts(name)
        for status, count in tally.items():
            totals[status] += count
        if only is not None and name != only:
            continue
        running, blocked, failed = [], [], []
        # One pass over the track: a status lookup per task, the rest only for the few listed.
        for key in graph.keys(name):
            status = status_of(key)
            if status in _NOT_LISTED:
                continue
            info = lookup(key)
            brief = _task_brief(tasks.get(key), key)
            if status is Status.IN_PROGRESS:
                running.append(
                    _running(
                        brief,
                        state(key) if state else None,
                        info,
                        budget(key) if budget else None,
                        now,
                    )
                )
            elif status is Status.BLOCKED:
                blocked.append(
                    brief
                    | {
                        "reason": info.error if info else None,
                        "verdict": info.verification_verdict if info else None,
                    }
                )
            else:
                failed.append(
                    brief
                    | {
                        "attempts": info.attempts if info else 0,
                        "reason": info.error if info else None,
                        "verdict": info.verification_verdict if info else None,
                    }
                )
        trigger = None
        if spec.trigger:
            trigger = {
                "refs": [str(t) for t in spec.trigger],
                "holds": graph.trigger_holds(name),
                "waiting_on": [str(t) for t in spec.trigger if not graph.target_done(t)],
            }
        loaded = name not in unloaded
        tracks_out.append(
            {
                "name": name,
                "file": files.get(name),
                "loaded": loaded,
                "paused": graph.track_paused(name),
                "counts": _as_counts(tally),
                "trigger": trigger,
                "ready_count": graph.ready_count(name) if loaded else 0,
                "next": [
                    _task_brief(tasks.get(k), k) for k in graph.ready_in_order(name, NEXT_SHOWN)
                ]
                if loaded
                else [],
                "running": running,
                "blocked": blocked,
                "failed": failed,
                "held": [
                    _task_brief(tasks.get(k), k)
                    | {"waits_for": str(root), "waits_for_status": status_of(root).value}
                    for k, root in held.get(name, ())
                ],
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
        "generated_at": iso(now) if now else None,
        "daemon": dict(daemon or {"running": False, "source": "files"}),
        "totals": _as_counts(totals),
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


_NOT_LISTED = frozenset({Status.PENDING, Status.COMPLETE, Status.SKIPPED})


def _held_by_track(graph: Graph) -> dict[str, list[tuple[TaskKey, TaskKey]]]:
    """The pending tasks a failed or blocked task holds (:meth:`Graph.held`), per track in
    file order, each with that task."""
    out: dict[str, list[tuple[TaskKey, TaskKey]]] = {}
    for key, root in graph.held().items():
        out.setdefault(key.track, []).append((key, root))
    for items in out.values():
        items.sort(key=lambda item: graph.node(item[0]).order[1])
    return out


def _as_counts(tally: Mapping[Status, int]) -> dict[str, int]:
    return {"total": sum(tally.values())} | {s.value: tally[s] for s in STATUS_ORDER}


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
    parts: list[RenderableType] = [_daemon_line(data["daemon"])]
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


def unfinished_words(count: int, listed: str) -> tuple[str, str]:
    """A stopped daemon's attempts it never ended (``listed``: their refs), in words: the
    headline, and the rest of the sentence (the Markdown board makes the first bold)."""
    them = "it" if count == 1 else "them"
    return (
        f"{count} attempt{'' if count == 1 else 's'} the daemon started never finished",
        f" (it was killed, or left {them} running on a cluster): {listed};"
        f" the next start takes {them} over",
    )


def _daemon_line(daemon: Mapping[str, Any]) -> Text:
    if not daemon.get("running"):
        what = (
            "the queue files and the state database"
            if daemon.get("source") == "state"
            else "the queue files"
        )
        line = Text(f"daemon not running: showing {what}", style="dim")
        if daemon.get("paused"):  # kept in the state database: the next start starts nothing
            line.append(
                "  PAUSED: `orchestratord resume` lets the next start start tasks",
                style="bold magenta",
            )
        unfinished = daemon.get("unfinished") or []
        if unfinished:
            more = len(unfinished) - NEXT_SHOWN
            listed = ", ".join(unfinished[:NEXT_SHOWN]) + (f" (+{more} more)" if more > 0 else "")
            line.append("\n" + "".join(unfinished_words(len(unfinished), listed)), "bold yellow")
        return line
    line = Text.assemble(
        ("daemon running", "bold green"),
        f" (pid {daemon.get('pid')}, since {daemon.get('started_at')}",
        f", {daemon.get('running_attempts', 0)} of {daemon.get('max_parallel')} slots busy)",
    )
    if daemon.get("paused"):
        line.append("  PAUSED: `orchestratord resume` starts tasks again", style="bold magenta")
    if daemon.get("stopping"):
        line.append("  stopping", style="bold yellow")
    return line


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _shown_file(path: str | None) -> str:
    if not path:
        return "?"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _track_table(track: Mapping[str, Any]) -> Table:
    title = f"{track['name']}  ({_shown_file(track['file'])})"
    if track["paused"]:
        title += "  [paused]"
    table = Table(title=Text(title), title_justify="left", show_header=True, expand=False)
    counts = track["counts"]
    for key in counts:
        table.add_column(key, justify="right", style=_STYLE.get(key, "bold"))
    table.add_row(*[str(v) for v in counts.values()])
    notes: list[str] = []
    if not track.get("loaded", True):
        notes.append("not loaded: its queue file has errors (listed below); none of its tasks runs")
    trigger = track["trigger"]
    if trigger:
        if trigger["holds"]:
            notes.append(f"trigger fired: start_after {', '.join(trigger['refs'])}")
        else:
            notes.append(f"waiting for trigger: {', '.join(trigger['waiting_on'])}")
    for item in track["running"]:
        budget = item.get("max_iterations")
        attempt = f"attempt {item.get('attempt', item['attempts'] + 1)}"
        if budget and item.get("iteration") is not None:
            attempt += f", iteration {item['iteration']}/{budget}"
        elapsed = _elapsed(item.get("elapsed_seconds"))
        notes.append(f"running: {item['id']} ({attempt}{', ' + elapsed if elapsed else ''})")
    if track["next"]:
        more = track["ready_count"] - len(track["next"])
        shown = ", ".join(t["id"] for t in track["next"])
        notes.append(f"next: {shown}" + (f" (+{more} more)" if more > 0 else ""))
    for wait in track.get("waiting", ()):
        notes.append(f"waiting until {wait['until']}: usage limit of agent {wait['agent']!r}")
    spent = track.get("spend") or {}
    if spent.get("attempts"):
        notes.append(f"spent: ${spent['cost_usd']:.2f}, {spent['tokens']:,} tokens")
    for kind in ("blocked", "failed"):
        items = track[kind]
        for item in items[:LISTED]:
            notes.append(f"{kind}: {item['id']}: {item['reason'] or 'no reason recorded'}")
        if len(items) > LISTED:
            notes.append(f"{kind}: ... and {len(items) - LISTED} more (status --json lists all)")
    notes.extend(_held_lines(track.get("held", ())))
    if notes:
        table.caption = Text("\n".join(notes))
        table.caption_justify = "left"
    return table


def _held_lines(held: Iterable[Mapping[str, Any]]) -> list[str]:
    """``held by failed alpha:A2: G1, G2``: one line per task they wait for."""
    by_root: dict[tuple[str, str], list[str]] = {}
    for item in held:
        by_root.setdefault((item["waits_for_status"], item["waits_for"]), []).append(item["id"])
    lines = []
    for (status, root), ids in list(by_root.items())[:LISTED]:
        shown = ", ".join(ids[:NEXT_SHOWN])
        more = f" (+{len(ids) - NEXT_SHOWN} more)" if len(ids) > NEXT_SHOWN else ""
        lines.append(f"held by {status} {root}: {shown}{more}")
    if len(by_root) > LISTED:
        lines.append(f"held: ... by {len(by_root) - LISTED} more (status --json lists all)")
    return lines


def print_status(data: Mapping[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(render(data))
