"""What a person's order means for a task in a given state.

``retry`` runs the task again whatever its state, with a fresh iteration budget (its history
is kept; a running task keeps running, and the attempts to come get the fresh budget).
``cancel`` ends a running attempt and leaves the task ``blocked`` with the reason
"cancelled" (a task not started yet is blocked the same way, so it does not start).
``skip`` marks the task ``skipped``, ending it if it runs, so that its dependents may proceed.
An order that would change nothing, or undo finished work, is refused with the reason.

Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Status
from ..states import Event
from .api import Order

CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Decision:
    event: Event | None
    """What to apply; None when the order is refused or changes nothing."""
    message: str
    refused: bool = False


def decide(order: Order, ref: str, status: Status, running: bool) -> Decision:
    if order == "retry":
        if running:
            return Decision(
                Event.ORDER_RETRY, f"{ref} is running; its next attempts get a fresh budget"
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
