"""The task state machine, as a transition table.

A task's runtime status changes only through :func:`transition` (the scheduler, the Ralph loop
and orders all ask it). Events come from the Ralph loop (an attempt starts, passes, fails,
blocks, or is interrupted) and from users' orders
(given on the command line, through the API, or by editing the queue file). Orders apply from
any status: they are how a person takes over.

Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .errors import InvalidTransitionError
from .model import Owned, Status


class Event(StrEnum):
    START = "start"
    """An attempt begins (the first of a run of attempts)."""
    PASS = "pass"
    """An attempt passed verification."""
    RETRY = "retry"
    """An attempt failed and the iteration budget allows another."""
    FAIL = "fail"
    """An attempt failed and the budget is spent."""
    BLOCK = "block"
    """The run reported it is blocked, or a guardrail was hit."""
    INTERRUPT = "interrupt"
    """The daemon stopped (or died) during an attempt: run it again, same iteration."""
    ORDER_RETRY = "order_retry"
    """Run again with a fresh iteration budget (status ``pending`` written by a user)."""
    ORDER_SKIP = "order_skip"
    ORDER_ACCEPT = "order_accept"
    ORDER_BLOCK = "order_block"
    """Stop: cancel if running, keep dependents waiting (``cancel``, or ``blocked`` in a file)."""


_P, _R, _C, _B, _F, _S = (
    Status.PENDING,
    Status.IN_PROGRESS,
    Status.COMPLETE,
    Status.BLOCKED,
    Status.FAILED,
    Status.SKIPPED,
)

TRANSITIONS: dict[tuple[Status, Event], Status] = {
    (_P, Event.START): _R,
    (_R, Event.PASS): _C,
    (_R, Event.RETRY): _R,
    (_R, Event.FAIL): _F,
    (_R, Event.BLOCK): _B,
    (_R, Event.INTERRUPT): _P,
    **{(s, Event.ORDER_RETRY): _P for s in Status},
    **{(s, Event.ORDER_SKIP): _S for s in Status},
    **{(s, Event.ORDER_ACCEPT): _C for s in Status},
    **{(s, Event.ORDER_BLOCK): _B for s in Status},
}

ORDER_STATUSES = frozenset({_P, _S, _C, _B})
"""The statuses a person writes in a queue file as an order (``control.orders`` decides what
each means for the task's state: the same decision as for the command)."""


def transition(status: Status, event: Event) -> Status:
    """The status after ``event``; raise :class:`InvalidTransitionError` if not allowed."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise InvalidTransitionError(
            f"cannot apply {event.value!r} to a task that is {status.value}"
        ) from None


def allowed(status: Status, event: Event) -> bool:
    return (status, event) in TRANSITIONS


@dataclass(frozen=True, slots=True)
class TaskState:
    """What the daemon knows of a task at run time (the store's row).

    ``owned`` holds the fields written back to the queue file. ``budget_base`` is the number of
    finished attempts when the current iteration budget began: a retry order starts a fresh
    budget without forgetting history.
    """

    owned: Owned = field(default_factory=Owned)
    budget_base: int = 0

    @property
    def status(self) -> Status:
        return self.owned.status

    @property
    def iteration(self) -> int:
        """Finished attempts in the current budget."""
        return self.owned.attempts - self.budget_base

    def with_owned(self, **changes: Any) -> TaskState:
        return replace(self, owned=replace(self.owned, **changes))

    @classmethod
    def imported(cls, owned: Owned) -> TaskState:
        """A task first seen in a file: its history is kept and its budget starts afresh.

        ``in_progress`` in a file the daemon did not write is a leftover of an interrupted run:
        it is pending again.
        """
        if owned.status is Status.IN_PROGRESS:
            owned = replace(owned, status=Status.PENDING)
        return cls(owned=owned, budget_base=owned.attempts)
