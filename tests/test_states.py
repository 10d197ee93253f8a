"""The task state machine's transition table."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidTransitionError
from orchestrator.model import Owned, Status
from orchestrator.states import TRANSITIONS, Event, TaskState, transition


def test_the_ralph_loop_path() -> None:
    s = transition(Status.PENDING, Event.START)
    assert s is Status.IN_PROGRESS
    assert transition(s, Event.RETRY) is Status.IN_PROGRESS
    assert transition(s, Event.PASS) is Status.COMPLETE
    assert transition(s, Event.FAIL) is Status.FAILED
    assert transition(s, Event.BLOCK) is Status.BLOCKED
    assert transition(s, Event.INTERRUPT) is Status.PENDING


@pytest.mark.parametrize("status", list(Status))
def test_orders_apply_from_any_status(status: Status) -> None:
    assert transition(status, Event.ORDER_RETRY) is Status.PENDING
    assert transition(status, Event.ORDER_SKIP) is Status.SKIPPED
    assert transition(status, Event.ORDER_ACCEPT) is Status.COMPLETE
    assert transition(status, Event.ORDER_BLOCK) is Status.BLOCKED


@pytest.mark.parametrize(
    ("status", "event"),
    [(Status.COMPLETE, Event.START), (Status.PENDING, Event.PASS), (Status.FAILED, Event.RETRY)],
)
def test_invalid_transitions_raise(status: Status, event: Event) -> None:
    assert (status, event) not in TRANSITIONS
    with pytest.raises(InvalidTransitionError, match="cannot apply"):
        transition(status, event)


def test_imported_tasks_keep_history_and_get_a_fresh_budget() -> None:
    state = TaskState.imported(Owned(status=Status.IN_PROGRESS, attempts=4))
    assert state.status is Status.PENDING  # a leftover of the old loop runs again
    assert state.owned.attempts == 4
    assert state.iteration == 0
