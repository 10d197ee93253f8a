"""Why a task is or is not ready, in plain sentences.

Turns a graph :class:`~orchestrator.graph.Explanation` into lines a person reads at a glance:
the task's state, what it waits for (with each dependency's track and status), the trigger,
pauses, and the tasks at the root of the wait with what to do about them.

Pure.
"""

from __future__ import annotations

from collections.abc import Callable

from .graph import Graph, Waiting
from .model import FOR_A_PERSON, Owned, Status, TaskKey, TrackAll

OwnedLookup = Callable[[TaskKey], Owned | None]


def _state(key: TaskKey, status: Status | None, owned: OwnedLookup) -> str:
    info = owned(key)
    if status is None:
        return "missing"
    if status is Status.FAILED and info and info.attempts:
        reason = f": {_short(info.error)}" if info.error else ""
        return f"failed after {info.attempts} attempt{'s' if info.attempts != 1 else ''}{reason}"
    if status is Status.BLOCKED and info and info.error:
        return f"blocked: {_short(info.error)}"
    if status is Status.IN_PROGRESS:
        return "in progress"
    return status.value


def _error(key: TaskKey, owned: OwnedLookup) -> str | None:
    info = owned(key)
    return info.error if info else None


def _short(text: str | None, limit: int = 160) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _waiting(item: Waiting, owned: OwnedLookup) -> str:
    target = item.target
    if isinstance(target, TrackAll):
        if not item.exists:
            return f"{target} (no such track: its queue file is missing)"
        return f"{target} ({item.remaining} task{'s' if item.remaining != 1 else ''} not done)"
    if not item.exists and not item.track_exists:
        return f"{target} (missing: the queue file of track {target.track!r} is gone)"
    if not item.exists:
        return f"{target} (missing: no such task any more)"
    return f"{target} ({_state(target, item.status, owned)})"


def _advice(key: TaskKey, status: Status, ready: bool, error: str | None = None) -> str:
    if status is Status.FAILED:
        return f"retry it with `orchestratord retry {key}` or mark it pending in its file"
    if status is Status.BLOCKED and FOR_A_PERSON in (error or ""):
        return (
            'once it is done, set its "status" to "complete" in its queue file (a retry only '
            f"blocks it again; `orchestratord skip {key}` goes on without it)"
        )
    if status is Status.BLOCKED:
        return f"fix the cause, then `orchestratord retry {key}` (or `skip {key}`)"
    if status is Status.IN_PROGRESS:
        return "it is running now"
    if ready:
        return "it is ready and starts when a slot is free"
    return "it is pending but held back (see `orchestratord explain` on it)"


def _held_back(graph: Graph, key: TaskKey) -> str:
    """What holds back a pending task that waits for nothing: a pause."""
    expl = graph.explain(key)
    if expl.track_paused:
        return f"its track {key.track!r} is paused (`orchestratord resume {key.track}` continues)"
    if expl.task_paused:
        return "the task itself is paused (its `paused` field is true)"
    return f"it is pending but held back (see `orchestratord explain {key}`)"


def describe(
    graph: Graph, key: TaskKey, owned: OwnedLookup, daemon_paused: bool = False
) -> list[str]:
    """Sentences explaining why ``key`` is or is not ready; ``owned`` looks up attempt info."""
    expl = graph.explain(key)
    if not expl.exists or expl.status is None:
        return [f"{key}: no such task."]
    status = expl.status
    lines: list[str] = []
    if status is not Status.PENDING:
        lines.append(f"{key} is {_state(key, status, owned)}, so it is not waiting to run.")
        if status.done:
            lines.append("Its dependents may proceed.")
        elif status in (Status.FAILED, Status.BLOCKED):
            advice = _advice(key, status, False, _error(key, owned))
            lines.append(f"Its dependents wait for it; {advice}.")
        elif status is Status.IN_PROGRESS:
            lines.append("It is being worked on (or was, when the daemon last stopped).")
        return lines
    if expl.ready and not daemon_paused:
        return [f"{key} is ready: every dependency is done and nothing holds it back."]
    lines.append(f"{key} is pending and not ready:")
    if daemon_paused:
        lines.append("- the daemon is paused (`orchestratord resume` continues).")
    if expl.track_paused:
        lines.append(
            f"- its track {key.track!r} is paused (`orchestratord resume {key.track}` continues)."
        )
    if expl.task_paused:
        lines.append("- the task itself is paused (its `paused` field is true).")
    if expl.trigger:
        shown = ", ".join(_waiting(w, owned) for w in expl.trigger)
        lines.append(f"- its track {key.track!r} starts only after: {shown}.")
    if expl.deps:
        count = len(expl.deps)
        lines.append(f"- it waits for {count} dependenc{'ies' if count != 1 else 'y'}:")
        lines.extend(f"    {_waiting(w, owned)}" for w in expl.deps)
    roots = [b for b in expl.blockers if b != key]
    if roots:
        lines.append("At the root of the wait:")
        for root in roots[:10]:
            root_status = graph.status(root)
            if root_status is Status.PENDING and not graph.is_ready(root):
                advice = _held_back(graph, root)
            elif root_status is Status.PENDING and daemon_paused:
                advice = "it is ready and starts once the daemon is resumed"
            else:
                advice = _advice(root, root_status, graph.is_ready(root), _error(root, owned))
            lines.append(f"    {root} is {_state(root, root_status, owned)}: {advice}.")
        if len(roots) > 10:
            lines.append(f"    ... and {len(roots) - 10} more.")
    return lines
