"""What a person's order means for a task in a given state: the one decision for every way an
order is given (``orchestratord retry|cancel|skip``, the control API, and a status written in a
queue file).

``retry`` runs the task again whatever its state, with a fresh iteration budget (its history
is kept; a running task keeps running, and its running attempt is the first of the fresh
budget).
``cancel`` ends a running attempt and leaves the task ``blocked`` with the reason
"cancelled" (a task not started yet is blocked the same way, so it does not start).
``skip`` marks the task ``skipped``, ending it if it runs, so that its dependents may proceed.
``accept`` (only from a file: ``complete`` written over another status) marks the task
``complete`` without its verdict, ending it if it runs, so that its dependents proceed.
An order that would change nothing is not applied (not an error); one that would undo
finished work (skip or cancel a complete task, cancel a skipped one) is refused with the
reason.

A status written in a queue file is the order :data:`WRITTEN` names (``pending`` retry,
``skipped`` skip, ``complete`` accept, ``blocked`` cancel): the same decision, so a file edit
never does what the command would refuse.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ..model import Status
from ..states import Event
from .api import Order

CANCELLED = "cancelled"

Kind = Order | Literal["accept"]
"""An order: those of the API, and ``accept``, which only a queue file can give."""

WRITTEN: Mapping[Status, Kind] = {
    Status.PENDING: "retry",
    Status.SKIPPED: "skip",
    Status.COMPLETE: "accept",
    Status.BLOCKED: "cancel",
}
"""The order a status written in a queue file gives (``in_progress`` and ``failed`` give none)."""


@dataclass(frozen=True, slots=True)
class Decision:
    event: Event | None
    """What to apply; None when the order is refused or changes nothing."""
    message: str
    refused: bool = False


def decide(order: Kind, ref: str, status: Status, running: bool) -> Decision:
    """The decision on ``order`` for the task ``ref``, which is ``status`` now; ``running``:
    an attempt of it is under way (or ending)."""
    if order == "retry":
        if running:
            return Decision(
                Event.ORDER_RETRY,
                f"{ref} is running; a fresh budget starts with its running attempt",
            )
        return Decision(Event.ORDER_RETRY, f"{ref} will run again with a fresh iteration budget")
    if order == "cancel":
        if status.done:
            return Decision(None, f"{ref} is {status.value}: there is nothing to cancel", True)
        if status is Status.BLOCKED and not running:
            return Decision(None, f"{ref} is blocked already; nothing runs")
        if running:
            return Decision(Event.ORDER_BLOCK, f"{ref}: its attempt was ended; it is blocked")
        return Decision(Event.ORDER_BLOCK, f"{ref} is blocked (cancelled) and will not start")
    if order == "accept":
        if status is Status.COMPLETE:
            return Decision(None, f"{ref} is complete already")
        if running:
            return Decision(
                Event.ORDER_ACCEPT, f"{ref}: its attempt was ended; it is accepted as complete"
            )
        return Decision(
            Event.ORDER_ACCEPT, f"{ref} is accepted as complete; its dependents may proceed"
        )
    if status is Status.SKIPPED:
        return Decision(None, f"{ref} is skipped already")
    if status is Status.COMPLETE:
        return Decision(None, f"{ref} is complete: skipping it would change nothing", True)
    if running:
        return Decision(Event.ORDER_SKIP, f"{ref}: its attempt was ended; it is skipped")
    return Decision(Event.ORDER_SKIP, f"{ref} is skipped; its dependents may proceed")


def reason(order: Order) -> str:
    """The reason recorded with the order (the task's ``error`` for a cancel)."""
    return CANCELLED if order == "cancel" else f"{order} ordered"
