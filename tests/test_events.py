"""The event log (events.jsonl): rotation, resumption across restarts; sentences; orders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.control import api
from orchestrator.control.events import EventLog, summary
from orchestrator.control.orders import decide
from orchestrator.model import Status
from orchestrator.states import Event

from .conftest import WriteTrack
from .control_harness import running_daemon


def line(seq: int, size: int = 0) -> bytes:
    return json.dumps({"seq": seq, "pad": "x" * size}).encode() + b"\n"


def test_the_event_log_rotates_and_knows_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=400)
    assert log.last_seq() is None
    log.write([line(seq, 80) for seq in range(1, 4)])
    log.write([line(4, 80)])
    log.close()
    backup = tmp_path / "events.jsonl.1"
    assert [json.loads(x)["seq"] for x in backup.read_text().splitlines()] == [1, 2, 3]
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == [4]
    assert EventLog(path, 300).last_seq() == 4
    path.write_text("")
    assert EventLog(path, 300).last_seq() == 3
    path.write_text(line(5).decode() + '{"seq": 6, "cut sho')
    assert EventLog(path, 300).last_seq() == 5


@pytest.mark.anyio
async def test_a_restarted_daemon_appends_without_gaps_or_repeats(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}, {"id": "B", "command": "true"}])
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:B", Status.COMPLETE)
    async with running_daemon(tracks_dir) as live:
        await live.ask("pause")
    lines = (live.state / api.EVENTS_LOG_NAME).read_text().splitlines()
    events = [json.loads(x) for x in lines]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    kinds = [e["type"] for e in events]
    assert kinds.count("daemon_started") == 2
    assert kinds.count("daemon_stopping") == 2
    assert "daemon_paused" in kinds
    for event in events:
        api.Event.model_validate(event)


def test_events_read_as_sentences() -> None:
    def said(kind: str, **data: object) -> str:
        return summary({"type": kind, "ref": "t:A", "track": "t", "data": data})

    assert said("attempt_finished", attempt=2, verdict="FAIL", reason="tests fail") == (
        "t:A attempt 2: FAIL: tests fail"
    )
    assert said("task_failed", attempts=3, reason="x") == "t:A FAILED after 3 attempts: x"
    assert summary({"type": "track_started", "track": "p", "data": {"trigger": ["b:X"]}}) == (
        "trigger fired: track p starts (start_after b:X)"
    )
    assert (
        summary({"type": "daemon_started", "data": {"pid": 7}}) == "orchestratord started (pid 7)"
    )


@pytest.mark.parametrize(
    ("order", "status", "running", "event", "refused"),
    [
        ("retry", Status.FAILED, False, Event.ORDER_RETRY, False),
        ("retry", Status.COMPLETE, False, Event.ORDER_RETRY, False),
        ("retry", Status.IN_PROGRESS, True, Event.ORDER_RETRY, False),
        ("cancel", Status.IN_PROGRESS, True, Event.ORDER_BLOCK, False),
        ("cancel", Status.PENDING, False, Event.ORDER_BLOCK, False),
        ("cancel", Status.BLOCKED, False, None, False),
        ("cancel", Status.COMPLETE, False, None, True),
        ("cancel", Status.SKIPPED, False, None, True),
        ("skip", Status.IN_PROGRESS, True, Event.ORDER_SKIP, False),
        ("skip", Status.FAILED, False, Event.ORDER_SKIP, False),
        ("skip", Status.SKIPPED, False, None, False),
        ("skip", Status.COMPLETE, False, None, True),
    ],
)
def test_what_an_order_means(
    order: api.Order, status: Status, running: bool, event: Event | None, refused: bool
) -> None:
    decision = decide(order, "t:A", status, running)
    assert (decision.event, decision.refused) == (event, refused)
    assert decision.message.startswith("t:A")


def test_a_retry_of_a_running_task_says_its_attempt_is_the_first_of_the_fresh_budget() -> None:
    """Not "its next attempts get a fresh budget": with a budget of 2, one more runs after it."""
    said = decide("retry", "t:A", Status.IN_PROGRESS, True).message
    assert said == "t:A is running; a fresh budget starts with its running attempt"


@pytest.mark.anyio
async def test_a_new_state_database_starts_a_new_event_log(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}])
    state = tmp_path / "state"
    async with running_daemon(tracks_dir, state) as live:
        await live.until_status("t:A", Status.COMPLETE)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (state / name).unlink(missing_ok=True)
    write_track("t", [{"id": "A", "command": "true"}])
    async with running_daemon(tracks_dir, state) as live:
        await live.until_status("t:A", Status.COMPLETE)
    lines = (state / api.EVENTS_LOG_NAME).read_text().splitlines()
    seqs = [json.loads(x)["seq"] for x in lines]
    assert seqs[0] == 1
    assert seqs == sorted(seqs)
    assert (state / (api.EVENTS_LOG_NAME + ".1")).exists()
