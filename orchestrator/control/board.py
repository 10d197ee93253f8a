"""The kanban board in Markdown: a column per status, a swimlane per track.

Rendered from a board document (:func:`orchestrator.control.views.board_document`, the
``/v1/board`` answer), so ``orchestratord board``, the file the daemon keeps at
``board_path`` and the web board all show the same thing. Below the table: every blocked and
failed task with its reason and verdict, and every trigger still waiting.

Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from .. import statusview

CARDS_PER_CELL = 25
TITLE = "# orchestratord board"
UPDATED = "_Updated "

COLUMN_TITLES = {
    "pending": "pending",
    "in_progress": "in progress",
    "complete": "complete",
    "blocked": "blocked",
    "failed": "failed",
    "skipped": "skipped",
}


def _cell_text(text: str) -> str:
    """Safe inside a Markdown table cell."""
    flat = " ".join(str(text).split())
    return flat.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _card(card: Mapping[str, Any]) -> str:
    ident = _cell_text(card["id"])
    status = card["status"]
    attempts = card.get("attempts") or 0
    budget = card.get("max_iterations")
    if status == "in_progress":
        # After a retry order the budget starts afresh: attempt 3 may be iteration 1/2.
        iteration = card.get("iteration", attempts)
        if not budget:
            return f"{ident} (attempt {attempts + 1})"
        if iteration == attempts:
            return f"{ident} (attempt {attempts + 1}/{budget})"
        return f"{ident} (attempt {attempts + 1}, iteration {iteration + 1}/{budget})"
    if status == "failed":
        verdict = card.get("verdict") or "FAIL"
        return f"{ident} ({verdict}, {attempts} attempt{'s' if attempts != 1 else ''})"
    if status == "blocked":
        return f"{ident} ({card.get('verdict') or 'BLOCKED'})"
    if status == "complete" and card.get("verdict") and card["verdict"] != "PASS":
        return f"{ident} ({card['verdict']})"
    return ident


def _cell(cards: list[Mapping[str, Any]]) -> str:
    shown = [_card(c) for c in cards[:CARDS_PER_CELL]]
    if len(cards) > CARDS_PER_CELL:
        shown.append(f"... +{len(cards) - CARDS_PER_CELL} more")
    return "<br>".join(shown)


def _lane_title(track: Mapping[str, Any]) -> str:
    counts = track["counts"]
    done = counts["complete"] + counts["skipped"]
    parts = [f"**{_cell_text(track['name'])}**", f"{done}/{counts['total']} done"]
    if not track.get("loaded", True):
        parts.append("not loaded: its file has errors")
    if track.get("held"):
        parts.append(f"{track['held']} held by failed or blocked work")
    if track.get("paused"):
        parts.append("paused")
    trigger = track.get("trigger")
    if trigger and not trigger["holds"]:
        parts.append("waits for " + _cell_text(", ".join(trigger["waiting_on"])))
    return "<br>".join(parts)


def _daemon(daemon: Mapping[str, Any]) -> str:
    text = "daemon not running"
    if daemon.get("running"):
        text = f"daemon running (pid {daemon.get('pid')})"
    if daemon.get("paused"):  # a stopped daemon's pause holds its next start too
        text += ", PAUSED"
    if daemon.get("stopping"):
        text += ", stopping"
    return text


def _unfinished(daemon: Mapping[str, Any]) -> list[str]:
    """A stopped daemon's attempts it never ended (as ``status`` says them): their tasks show as
    pending, yet what they started may still run, and the next start takes them over."""
    refs = [str(ref) for ref in daemon.get("unfinished") or ()]
    if not refs:
        return []
    head, rest = statusview.unfinished_words(len(refs), _cell_text(", ".join(refs)))
    return ["", f"**{head}**{rest}"]


def render(doc: Mapping[str, Any]) -> str:
    """The board as Markdown."""
    columns: list[str] = list(doc["columns"])
    by_lane: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    totals = dict.fromkeys(columns, 0)
    for card in doc["cards"]:
        by_lane[(card["track"], card["status"])].append(card)
        totals[card["status"]] = totals.get(card["status"], 0) + 1
    total = sum(totals.values())
    summary = ", ".join(f"{n} {COLUMN_TITLES.get(s, s)}" for s, n in totals.items() if n)
    lines = [
        TITLE,
        "",
        f"{UPDATED}{doc['generated_at']} · {_daemon(doc['daemon'])} · "
        f"{total} task{'s' if total != 1 else ''}{': ' + summary if summary else ''}_",
        *_unfinished(doc["daemon"]),
        "",
        "| track | " + " | ".join(COLUMN_TITLES.get(c, c) for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for track in doc["tracks"]:
        cells = [_cell(by_lane.get((track["name"], c), [])) for c in columns]
        lines.append(f"| {_lane_title(track)} | " + " | ".join(cells) + " |")
    trouble = [c for c in doc["cards"] if c["status"] in ("blocked", "failed")]
    if trouble:
        lines += ["", "## Blocked and failed", ""]
        for card in trouble:
            lines.append(_trouble_line(card))
    waiting = [t for t in doc["tracks"] if t.get("trigger") and not t["trigger"]["holds"]]
    if waiting:
        lines += ["", "## Triggers waiting", ""]
        for track in waiting:
            trigger = track["trigger"]
            lines.append(
                f"- **{track['name']}** starts after {', '.join(trigger['refs'])}: "
                f"waiting on {', '.join(trigger['waiting_on'])}"
            )
    return "\n".join(lines) + "\n"


def _trouble_line(card: Mapping[str, Any]) -> str:
    reason = " ".join(str(card.get("error") or "no reason recorded").split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    attempts = card.get("attempts") or 0
    if card["status"] == "failed":
        what = f"failed after {attempts} attempt{'s' if attempts != 1 else ''}"
    else:
        what = "blocked"
    verdict = f" ({card['verdict']})" if card.get("verdict") else ""
    return f"- **{card['ref']}** {what}{verdict}: {reason}"


def body(markdown: str) -> str:
    """The board without its "updated" line: what tells a real change from the clock's."""
    return "\n".join(line for line in markdown.splitlines() if not line.startswith(UPDATED))
