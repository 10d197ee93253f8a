"""Every kind of event reads as a sentence, in the terminal, on the board, in notifications."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import eventtext
from orchestrator.control.api import EVENT_TYPES
from orchestrator.control.events import message, summary
from orchestrator.model import TaskKey
from orchestrator.progress import _event_line
from orchestrator.store import EventRow

TASK = TaskKey("backend", "PROVIDER-013")

# Each kind with data as the daemon journals it (see the ``journal`` and ``announce`` calls).
SAMPLES: dict[str, tuple[TaskKey | str | None, dict[str, Any]]] = {
    "daemon_started": (None, {"pid": 4242, "tracks": ["backend"]}),
    "daemon_stopping": (None, {"running": ["backend:PROVIDER-013"], "reason": "asked to stop"}),
    "daemon_paused": (None, {"reason": "by order"}),
    "daemon_resumed": (None, {}),
    "task_started": (TASK, {"attempt": 2, "iteration": 2, "max_iterations": 5}),
    "attempt_finished": (TASK, {"attempt": 2, "verdict": "FAIL", "reason": "tests fail"}),
    "attempt_interrupted": (
        TASK,
        {"attempt": 3, "reason": "the daemon stopped during the attempt"},
    ),
    "task_complete": (TASK, {"attempts": 2}),
    "task_failed": (TASK, {"attempts": 1, "reason": "exit 2"}),
    "task_blocked": (TASK, {"reason": "needs a key"}),
    "task_skipped": (TASK, {"reason": "not needed", "by": "order"}),
    "task_retry": (TASK, {"reason": "try again", "by": "order"}),
    "track_started": ("patient", {"trigger": ["backend:PROVIDER-013"]}),
    "track_complete": ("backend", {}),
    "track_paused": ("backend", {"reason": "by order"}),
    "track_resumed": ("backend", {}),
    "track_added": ("backend", {"file": "tracks/backend.json"}),
    "track_removed": ("backend", {"file": "tracks/backend.json", "reason": "its file is gone"}),
    "queue_file_invalid": ("backend", {"problems": ["backend.json: $: not JSON", "more"]}),
    "queue_file_valid": ("backend", {"file": "tracks/backend.json"}),
    "reload_plan": ("backend", {"summary": "1 added", "added": ["X"]}),
    "attempt_reattached": (TASK, {"attempt": 3}),
    "worktree_kept": ("backend", {"path": "/w/backend", "files": ["a.py", "b.py"]}),
    "worktree_removed": ("backend", {"path": "/w/backend", "branch": "orchestratord/backend"}),
    "worktree_remade": ("backend", {"path": "/w/backend", "reason": "half made"}),
    "git_lock_removed": ("backend", {"path": "/r/.git/index.lock", "reason": "stale"}),
    "git_lock_left": ("backend", {"path": "/r/.git/index.lock", "reason": "may be live"}),
    "budget_exceeded": (
        TASK,
        {"scope": "track", "of": "backend", "unit": "usd", "limit": 5.0, "spent": 5.25},
    ),
    "usage_limit": (
        TASK,
        {
            "agent": "claude",
            "until": "2026-11-26T09:00:00+00:00",
            "message": "limit reached",
            "tracks": ["backend", "patient"],
        },
    ),
    "usage_limit_reset": (None, {"agent": "claude", "tracks": ["backend"]}),
    "config_reloaded": (None, {"changed": ["max_parallel"], "at_restart": ["state_dir"]}),
    "config_invalid": (None, {"problems": ["orchestratord.toml:3: max_parallel: bad"]}),
    "logs_pruned": (None, {"files": 12, "bytes": 3 * 1024 * 1024}),
}


def test_every_kind_has_a_sentence_of_its_own() -> None:
    assert set(SAMPLES) == set(EVENT_TYPES)
    assert [kind for kind in EVENT_TYPES if not eventtext.worded(kind)] == []
    assert not eventtext.worded("something_new")


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_a_sentence_says_what_the_data_holds_in_words(kind: str) -> None:
    subject, data = SAMPLES[kind]
    said = eventtext.sentence(kind, subject, data)
    assert "{" not in said
    assert "'" not in said
    assert "None" not in said
    assert kind not in said
    if subject is not None and kind not in ("budget_exceeded", "usage_limit"):
        assert str(subject) in said  # those two name what crossed: a budget, an agent


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_a_sentence_of_an_event_without_data_does_not_fail(kind: str) -> None:
    assert eventtext.sentence(kind, "backend", {})


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("daemon_stopping", {"running": 2}),
        ("worktree_kept", {"path": "/w", "files": 7}),
        ("budget_exceeded", {"scope": None, "limit": 5, "spent": 6}),
        ("budget_exceeded", {"scope": "week", "limit": 5, "spent": 6}),
    ],
)
def test_data_of_another_shape_gets_the_plain_sentence_not_an_error(
    kind: str, data: dict[str, Any]
) -> None:
    """Sentences are made for every event of the journal the stream replays and events.jsonl
    is written from (an error there would stop the event service), whatever wrote it."""
    assert eventtext.sentence(kind, "backend", data) == f"backend: {kind.replace('_', ' ')}"


def test_a_kept_worktree_with_more_changes_than_listed_is_not_said_to_have_fewer() -> None:
    """The event lists at most FILES_LISTED files: a full list stands for that many or more."""
    few = {"path": "/w/backend", "files": ["a.py", "b.py"]}
    assert eventtext.sentence("worktree_kept", "backend", few).endswith("(2 files)")
    full = {"path": "/w/backend", "files": [f"f{n}.py" for n in range(eventtext.FILES_LISTED)]}
    assert eventtext.sentence("worktree_kept", "backend", full).endswith("(50 files or more)")


def test_a_usage_limit_over_that_resumes_no_track_says_so() -> None:
    said = eventtext.sentence("usage_limit_reset", None, {"agent": "claude", "tracks": []})
    assert said == (
        "usage limit of agent claude over; no track resumed (each is held for another reason,"
        " running already, or gone)"
    )


def test_some_sentences_word_for_word() -> None:
    def said(kind: str) -> str:
        return eventtext.sentence(kind, *SAMPLES[kind])

    assert said("budget_exceeded") == (
        "track budget of $5.00 crossed by backend (spent $5.25); its track is paused"
    )
    assert said("usage_limit") == (
        "usage limit of agent claude reached (limit reached): tracks backend, patient wait"
        " until 2026-11-26T09:00:00+00:00"
    )
    assert said("worktree_removed") == (
        "track backend: worktree /w/backend removed (branch orchestratord/backend stays)"
    )
    assert said("task_failed") == "backend:PROVIDER-013 FAILED after 1 attempt: exit 2"
    assert said("logs_pruned") == "log retention removed 12 old attempt files (3.0 MiB)"
    assert said("config_reloaded") == (
        "configuration reloaded: max_parallel changed; at the next start: state_dir"
    )
    assert said("queue_file_invalid") == (
        "not applied: backend.json: $: not JSON (+1 more); the last good version stays in force"
    )
    assert eventtext.sentence("config_invalid", None, {"problems": ["a", "b", "c"]}) == (
        "configuration not reloaded: a (+2 more); the settings in force stay"
    )
    assert eventtext.sentence("something_new", "backend", {}) == "backend: something new"


def test_a_file_that_is_no_track_has_no_last_good_version_to_keep() -> None:
    """Journaled with a track: its file changed for the worse, the track runs as it was. With
    none: a new file, or one that did not load at start-up; none of its tasks run."""
    data = {"file": "tracks/new.json", "problems": ["tracks/new.json: $: not JSON"]}
    assert eventtext.sentence("queue_file_invalid", "backend", data) == (
        "not applied: tracks/new.json: $: not JSON; the last good version stays in force"
    )
    assert eventtext.sentence("queue_file_invalid", None, data) == (
        "not loaded: tracks/new.json: $: not JSON; none of its tasks run until it is fixed"
    )


def test_the_terminal_says_a_task_accepted_by_order_is_complete() -> None:
    """A task's own completion is its attempt's PASS line; an accept order has no such line."""
    assert _event_line("task_complete", TASK, {"attempts": 2}) is None
    ordered = _event_line("task_complete", TASK, {"reason": "accept ordered", "by": "order"})
    assert ordered is not None
    assert ordered.plain == "backend:PROVIDER-013 is complete: accept ordered"


def test_the_terminal_shows_what_matters_in_bold_and_colour() -> None:
    failed = _event_line("task_failed", *SAMPLES["task_failed"])
    assert failed is not None
    assert failed.style == "bold red"
    other = _event_line("worktree_removed", *SAMPLES["worktree_removed"])
    assert other is not None
    assert other.style == "dim"
    finished = _event_line("attempt_finished", *SAMPLES["attempt_finished"])
    assert finished is not None
    assert finished.plain == "backend:PROVIDER-013 attempt 2: FAIL  tests fail"
    assert [(finished.plain[s.start : s.end], s.style) for s in finished.spans] == [
        ("FAIL", "red"),
        ("  tests fail", "dim"),
    ]


def test_the_terminal_the_stream_and_notifications_say_the_same() -> None:
    subject, data = SAMPLES["worktree_removed"]
    row = EventRow(7, "2026-11-26T04:40:00+00:00", 1.0, "worktree_removed", None, data, "backend")
    sent = message(row)
    assert sent["text"] == eventtext.sentence("worktree_removed", subject, data)
    assert summary(sent) == sent["text"]
    line = _event_line("worktree_removed", subject, data)
    assert line is not None
    assert line.plain == sent["text"]
    task_row = EventRow(8, "2026-11-26T04:40:01+00:00", 2.0, "task_blocked", TASK, {}, "backend")
    assert message(task_row)["text"] == "backend:PROVIDER-013 is BLOCKED"


def test_a_reload_that_changes_nothing_now_says_so() -> None:
    said = eventtext.sentence("config_reloaded", None, {"changed": [], "at_restart": ["state_dir"]})
    assert said == "configuration reloaded: nothing changes now; at the next start: state_dir"


def test_notifications_say_the_sentence_the_event_carries() -> None:
    from orchestrator.control.notify import environment, payload

    row = EventRow(9, "2026-11-26T06:20:00+00:00", 3.0, "task_blocked", TASK, {}, "backend")
    sent = message(row)
    assert payload(sent)["text"] == sent["text"] == "backend:PROVIDER-013 is BLOCKED"
    assert environment(sent)["ORCHESTRATORD_EVENT_SUMMARY"] == sent["text"]
    older = {k: v for k, v in sent.items() if k != "text"}  # queued by an older daemon
    assert payload(older)["text"] == sent["text"]
    # The sentence it carries, not one made again now (another version's wording, say).
    then = {**sent, "text": "backend:PROVIDER-013 is BLOCKED, as said when it happened"}
    assert payload(then)["text"] == then["text"]
    assert environment(then)["ORCHESTRATORD_EVENT_SUMMARY"] == then["text"]


def test_an_interrupted_attempt_is_named_by_its_number_when_the_event_has_it() -> None:
    data = {"attempt": 3, "reason": "the daemon stopped"}
    said = eventtext.sentence("attempt_interrupted", TASK, data)
    assert said == "backend:PROVIDER-013 attempt 3 interrupted: the daemon stopped"
    older = eventtext.sentence("attempt_interrupted", TASK, {"reason": "the daemon stopped"})
    assert older == "backend:PROVIDER-013 attempt interrupted: the daemon stopped"
