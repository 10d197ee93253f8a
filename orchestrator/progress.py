"""Live progress of a running daemon in the terminal that started it.

On a terminal: a rich table refreshed a few times a second (a row per track: done out of total,
what runs with its attempt and elapsed time, what it waits for) above the latest events, and a
summary table at the end. Elsewhere: one plain line per event, nothing redrawn.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import eventtext
from .daemon import Engine
from .model import Status, TaskKey

SHOWN_EVENTS = 10

_QUIET = {"task_started", "task_complete"}
"""Said otherwise: a task's start is in the table, its completion is its attempt's PASS.
Not so for an order's (``by``): a person accepted it, with no attempt's PASS to say so."""

_STYLES = {
    "track_started": "bold cyan",
    "track_complete": "bold green",
    "task_failed": "bold red",
    "task_blocked": "bold magenta",
    "task_complete": "bold",
    "daemon_stopping": "bold yellow",
    "daemon_paused": "bold magenta",
    "daemon_resumed": "bold",
    "track_paused": "magenta",
    "track_resumed": "bold",
    "reload_plan": "cyan",
    "track_added": "cyan",
    "track_removed": "cyan",
    "queue_file_invalid": "bold red",
    "queue_file_valid": "bold",
    "config_invalid": "bold red",
    "budget_exceeded": "bold red",
    "usage_limit": "bold yellow",
    "usage_limit_reset": "bold",
    "worktree_kept": "yellow",
    "git_lock_left": "yellow",
}
"""How an event's line looks; any other kind is dim."""


def _event_line(kind: str, subject: TaskKey | str | None, data: Mapping[str, Any]) -> Text | None:
    if kind in _QUIET and not data.get("by"):
        return None
    if kind == "attempt_finished":
        verdict = data.get("verdict")
        style = {"PASS": "green", "FAIL": "red", "BLOCKED": "magenta"}.get(str(verdict), "")
        line = Text.assemble(
            (f"{subject} attempt {data.get('attempt')}: ", ""), (str(verdict), style)
        )
        if data.get("reason"):
            line.append(f"  {str(data['reason'])[:100]}", style="dim")
        return line
    return Text(eventtext.sentence(kind, subject, data), style=_STYLES.get(kind, "dim"))


class Progress:
    """Subscribes to an engine and shows what it does."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live_mode = self.console.is_terminal
        self.events: deque[Text] = deque(maxlen=SHOWN_EVENTS)
        self.engine: Engine | None = None
        self._live: Live | None = None
        self._started: dict[TaskKey, float] = {}

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        engine.listeners.append(self._on_event)
        if self.live_mode:
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=4,
                transient=True,
            )
            self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _on_event(self, kind: str, subject: TaskKey | str | None, data: Mapping[str, Any]) -> None:
        if self.engine is not None and isinstance(subject, TaskKey) and kind == "task_started":
            self._started[subject] = self.engine.clock.monotonic()
        line = _event_line(kind, subject, data)
        if line is None:
            return
        stamp = datetime.now().strftime("%H:%M:%S")
        stamped = Text.assemble((stamp + " ", "dim"), line)
        if self.live_mode:
            self.events.append(stamped)
        else:
            self.console.print(stamped, soft_wrap=True)

    def _render(self) -> RenderableType:
        return Group(self.table(live=True), *self.events)

    def table(self, live: bool = False) -> Table:
        engine = self.engine
        table = Table(title="orchestratord" if live else "summary", title_justify="left")
        for column in ("track", "done", "complete", "failed", "blocked", "skipped", "now"):
            table.add_column(column, justify="right" if column not in ("track", "now") else "left")
        if engine is None:
            return table
        now = engine.clock.monotonic()
        # The end's column: how many pending tasks of each track failed or blocked work holds
        # (one walk of the graph for the table, not one per track).
        held = Counter(key.track for key in engine.graph.held()) if not live else Counter()
        for name in engine.tracks:
            counts = engine.counts(name)
            done = counts["complete"] + counts["skipped"]
            table.add_row(
                name,
                f"{done}/{counts['total']}",
                str(counts["complete"]),
                Text(str(counts["failed"]), style="red" if counts["failed"] else ""),
                Text(str(counts["blocked"]), style="magenta" if counts["blocked"] else ""),
                str(counts["skipped"]),
                self._now_column(engine, name, now)
                if live
                else self._end_column(engine, name, held[name]),
            )
        return table

    def _now_column(self, engine: Engine, name: str, now: float) -> Text:
        running = [k for k in engine.running_keys() if k.track == name]
        if running:
            parts = []
            for key in running:
                state = engine.states[key]
                elapsed = now - self._started.get(key, now)
                parts.append(f"{key.id} attempt {state.owned.attempts + 1} ({elapsed:.0f}s)")
            return Text(", ".join(parts), style="yellow")
        if engine.graph.track_paused(name):
            return Text("paused", style="magenta")
        if not engine.graph.trigger_holds(name):
            waiting = [
                str(t) for t in engine.graph.tracks[name].trigger if not engine.graph.target_done(t)
            ]
            return Text(f"waiting for {', '.join(waiting)}", style="cyan")
        if engine.graph.remaining(name) == 0:
            return Text("done", style="green")
        counts = engine.graph.status_counts(name)
        if counts[Status.IN_PROGRESS]:
            return Text("starting", style="yellow")  # its attempt is being set up
        if not counts[Status.PENDING]:  # what is not done is failed or blocked: a person's turn
            stuck = ", ".join(
                f"{counts[s]} {s.value}" for s in (Status.FAILED, Status.BLOCKED) if counts[s]
            )
            return Text(f"nothing left to run: {stuck}", style="red")
        if engine.paused:
            return Text("daemon paused", style="magenta")
        if engine.graph.ready_count(name):
            return Text("ready: waiting for a slot", style="dim")
        return Text("waiting for dependencies", style="dim")

    def _end_column(self, engine: Engine, name: str, held: int) -> Text:
        bad = [
            f"{k.id}: {engine.states[k].owned.error or engine.states[k].status.value}"
            for k in engine.graph.keys(name)
            if engine.graph.status(k) in (Status.FAILED, Status.BLOCKED)
        ]
        if bad:
            return Text("; ".join(bad)[:120], style="red")
        if engine.graph.remaining(name) == 0:
            return Text("all done", style="green")
        if held:  # in another track, or behind a trigger: said where the failure is
            return Text(f"{held} held by failed or blocked work", style="yellow")
        return Text(f"{engine.graph.remaining(name)} not done", style="yellow")

    def summary(self) -> None:
        self.close()
        if self.engine is not None:
            self.console.print(self.table())
