"""A status written in a queue file is decided as the command's order (``control.orders``).

The decision for every status a person can write (aliases too) over every state a task can be
in, then the same through real file edits on a running daemon: a refused order is not applied,
the plan says why, the file shows the daemon's status again, and the daemon goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import merge
from orchestrator.control import orders
from orchestrator.model import Status, TaskKey
from orchestrator.states import ORDER_STATUSES, Event

from . import live_harness as lh
from .conftest import WriteTrack

_P, _R, _C, _B, _F, _S = (
    Status.PENDING,
    Status.IN_PROGRESS,
    Status.COMPLETE,
    Status.BLOCKED,
    Status.FAILED,
    Status.SKIPPED,
)

STATES: dict[str, tuple[Status, bool]] = {
    "pending": (_P, False),
    "running": (_R, True),
    "queued behind its ending loop": (_R, True),
    "launched, its loop not begun": (_R, False),
    "complete": (_C, False),
    "skipped": (_S, False),
    "blocked": (_B, False),
    "blocked, its attempt ending": (_B, True),
    "failed": (_F, False),
}
"""Every state a task can be in when an order comes: its status and whether an attempt of it
runs (or is ending: the daemon's ``running_keys``)."""

RETRY, SKIP, ACCEPT, BLOCK = (
    Event.ORDER_RETRY,
    Event.ORDER_SKIP,
    Event.ORDER_ACCEPT,
    Event.ORDER_BLOCK,
)
SAME = "unchanged"
REFUSED = "refused"

EXPECTED: dict[str, dict[str, Event | str]] = {
    "pending": dict.fromkeys(STATES, RETRY),
    "skipped": {
        **dict.fromkeys(STATES, SKIP),
        "complete": REFUSED,
        "skipped": SAME,
    },
    "complete": {**dict.fromkeys(STATES, ACCEPT), "complete": SAME},
    "blocked": {
        **dict.fromkeys(STATES, BLOCK),
        "complete": REFUSED,
        "skipped": REFUSED,
        "blocked": SAME,
    },
}
"""Written status -> task state -> what happens: the event applied, or nothing."""

ALIASES = {"completed": "complete", "done": "complete", "parked": "skipped", " Skipped ": "skipped"}


def _outcome(decision: orders.Decision) -> Event | str:
    if decision.refused:
        assert decision.event is None
        return REFUSED
    return SAME if decision.event is None else decision.event


@pytest.mark.parametrize("written", [*EXPECTED, *ALIASES])
@pytest.mark.parametrize("state", list(STATES))
def test_what_a_status_written_in_a_file_does(written: str, state: str) -> None:
    status, running = STATES[state]
    # Read the way the write-back reads it: a status changed since the daemon's last write.
    change = merge.user_changes({"id": "A", "status": written}, {"status": "in_progress"})
    assert change.ordered_status is not None
    decision = orders.decide(orders.WRITTEN[change.ordered_status], "t:A", status, running)
    expected = EXPECTED[ALIASES.get(written, written)][state]
    assert _outcome(decision) == expected, decision
    assert decision.message.startswith("t:A")


@pytest.mark.parametrize(("written", "command"), [("pending", "retry"), ("skipped", "skip")])
@pytest.mark.parametrize("state", list(STATES))
def test_a_file_order_is_decided_as_the_command_would(
    written: str, command: orders.Kind, state: str
) -> None:
    status, running = STATES[state]
    by_file = orders.decide(orders.WRITTEN[Status(written)], "t:A", status, running)
    assert by_file == orders.decide(command, "t:A", status, running)


@pytest.mark.parametrize("state", list(STATES))
def test_blocked_in_a_file_is_a_cancel(state: str) -> None:
    status, running = STATES[state]
    by_file = orders.decide(orders.WRITTEN[_B], "t:A", status, running)
    assert by_file == orders.decide("cancel", "t:A", status, running)


def test_only_statuses_that_are_orders_give_one() -> None:
    assert set(orders.WRITTEN) == ORDER_STATUSES
    for written in ("in_progress", "failed", "started"):
        change = merge.user_changes({"id": "A", "status": written}, {"status": "pending"})
        assert change.ordered_status is None
        assert change.not_an_order == written


# ---------------------------------------------------------------------- on a running daemon


def edit(path: Path, ident: str, **fields: Any) -> None:
    """Save ``path`` with fields of task ``ident`` changed (write a temp file, rename it)."""
    doc = json.loads(path.read_text())
    task = next(t for t in doc["features"] if t["id"] == ident)
    task.update(fields)
    lh.write_and_rename(path, lh.dump(doc))


def waiting(marker: Path, then: str = "exit 0") -> str:
    """A run that waits until ``marker`` exists, then does ``then``."""
    return f"while [ ! -e {marker} ]; do sleep 0.02; done; {then}"


async def started(live: lh.Live, key: TaskKey) -> None:
    """Wait until ``key``'s first attempt has its process recorded and the file says it runs:
    nothing more is written until the attempt ends."""
    store = live.engine.store

    def recorded() -> bool:
        attempts = store.attempts(key)
        return bool(attempts) and bool(store.processes(attempts[0].id))

    await live.until(recorded)
    await live.until(lambda: live.task(key.track, key.id).get("status") == "in_progress")
    await live.settled(key.track)


def refused(live: lh.Live) -> dict[str, Any]:
    """The refused orders of every plan journaled so far (in the store: at start-up too), by
    task id."""
    out: dict[str, Any] = {}
    for event in live.engine.store.events():
        if event.type == "reload_plan":
            out.update(event.data.get("refused", {}))
    return out


@pytest.mark.anyio
async def test_skipped_over_a_complete_task_is_refused_and_the_file_shows_complete_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track("t", [{"id": "C", "command": lh.note("C", tmp_path)}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:C") is Status.COMPLETE)
        before = (await live.settled("t"))["features"][0]
        edit(path, "C", status="skipped")
        await live.until(lambda: "C" in refused(live))
        assert refused(live)["C"] == {
            "written": "skipped",
            "status": "complete",
            "reason": "t:C is complete: skipping it would change nothing",
        }
        await live.until(lambda: live.task("t", "C").get("status") == "complete")
        assert live.task("t", "C") == before  # completed_at and the rest as they were
        assert live.status("t:C") is Status.COMPLETE
        assert not live.kinds("task_skipped")
        # The daemon goes on, and the refused edit is not taken again by later reads.
        edit(path, "C", description="reworded")
        await live.until(lambda: live.engine.defs[TaskKey("t", "C")].description == "reworded")
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == "complete"
        assert lh.ledger(tmp_path) == ["C"]
        assert doc["summary"]["complete"] == 1


@pytest.mark.anyio
async def test_skipped_written_while_the_task_completes_is_refused(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The person saw the task running and wrote ``skipped``; it completed before the daemon
    read the save (here: without the watcher, the write-back after the completion reads it).
    Its dependent runs as it would have; the file shows complete."""
    marker = tmp_path / "go"
    path = write_track(
        "t",
        [
            {"id": "R", "command": waiting(marker)},
            {"id": "D", "command": lh.note("D", tmp_path), "dependencies": ["R"]},
        ],
    )
    async with lh.live_daemon(tracks_dir, watch=False) as live:
        key = TaskKey("t", "R")
        await started(live, key)
        edit(path, "R", status="skipped")
        marker.touch()
        await live.until(lambda: lh.ledger(tmp_path) == ["D"])
        await live.until(lambda: live.status("t:D") is Status.COMPLETE)
        doc = await live.settled("t")
        assert [t["status"] for t in doc["features"]] == ["complete", "complete"]
        assert refused(live)["R"]["reason"] == "t:R is complete: skipping it would change nothing"
        (only,) = live.engine.store.attempts(key)
        assert only.verdict == "PASS"


@pytest.mark.anyio
async def test_blocked_over_a_complete_task_is_refused_and_its_dependent_is_not_held(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track(
        "t",
        [
            {"id": "C", "command": "true"},
            {"id": "D", "command": lh.note("D", tmp_path), "dependencies": ["C"]},
        ],
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:D") is Status.COMPLETE)
        await live.settled("t")
        edit(path, "C", status="blocked")
        await live.until(lambda: "C" in refused(live))
        assert refused(live)["C"]["reason"] == "t:C is complete: there is nothing to cancel"
        await live.until(lambda: live.task("t", "C").get("status") == "complete")
        assert live.task("t", "C").get("error") is None
        assert not live.kinds("task_blocked")


@pytest.mark.anyio
async def test_skipped_over_a_running_task_still_ends_it(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track(
        "t",
        [
            {"id": "R", "command": "sleep 30"},
            {"id": "D", "command": lh.note("D", tmp_path), "dependencies": ["R"]},
        ],
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.task("t", "R").get("status") == "in_progress")
        edit(path, "R", status="skipped")
        await live.until(lambda: live.status("t:D") is Status.COMPLETE)
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == "skipped"
        (attempt,) = live.engine.store.attempts(TaskKey("t", "R"))
        assert (attempt.state, attempt.reason) == (
            "interrupted",
            "status set to skipped in the file",
        )
        assert not refused(live)
        plan = live.kinds("reload_plan")[-1][2]
        assert plan["orders"] == {"R": "skipped"}


@pytest.mark.anyio
async def test_pending_over_a_failed_task_still_runs_it_again(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    marker = tmp_path / "fixed"
    command = f"echo F >> {tmp_path / 'ledger'}; [ -e {marker} ]"
    path = write_track("t", [{"id": "F", "command": command, "max_iterations": 1}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:F") is Status.FAILED)
        await live.settled("t")
        marker.touch()
        edit(path, "F", status="pending")
        await live.until(lambda: live.status("t:F") is Status.COMPLETE)
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == "complete"
        assert doc["features"][0]["attempts"] == 2
        assert lh.ledger(tmp_path) == ["F", "F"]
        assert live.kinds("task_retry")[0][2]["reason"] == "status set to pending in the file"


@pytest.mark.anyio
async def test_orders_that_change_nothing_keep_what_the_daemon_recorded(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """``complete`` over a task that completed and ``blocked`` over one its run blocked, written
    while it ran and read once it had ended: its completion time and the block's reason stay
    (no order is applied over them). One track each: a file is read when its track changes."""
    marker = tmp_path / "go"
    paths = {
        "c": write_track("c", [{"id": "C", "command": waiting(marker)}]),
        "b": write_track(
            "b", [{"id": "B", "command": waiting(marker, "echo '<blocked>no key</blocked>'")}]
        ),
    }
    async with lh.live_daemon(tracks_dir, watch=False) as live:
        for key in (TaskKey("c", "C"), TaskKey("b", "B")):
            await started(live, key)
        edit(paths["c"], "C", status="complete")
        edit(paths["b"], "B", status="blocked")
        marker.touch()
        await live.until(lambda: live.status("c:C") is Status.COMPLETE)
        await live.until(lambda: live.status("b:B") is Status.BLOCKED)
        await live.until(lambda: len(live.kinds("reload_plan")) == 2)
        # The person's status matches already: wait for the daemon's write of the rest.
        await live.until(lambda: "completed_at" in live.task("c", "C"))
        c, b = (await live.settled("c"))["features"][0], (await live.settled("b"))["features"][0]
        assert (c["status"], b["status"]) == ("complete", "blocked")
        assert c["completed_at"] == live.engine.states[TaskKey("c", "C")].owned.completed_at
        assert b["error"] == live.engine.states[TaskKey("b", "B")].owned.error
        assert "no key" in b["error"]
        assert [k for k, _, d in live.events if d.get("by") == "order"] == []
        assert not refused(live)
        plans = [d["orders"] for _, _, d in live.kinds("reload_plan")]
        assert sorted(plans, key=str) == [{"B": "blocked"}, {"C": "complete"}]


@pytest.mark.anyio
@pytest.mark.parametrize("written", ["skipped", "blocked", "complete"])
async def test_a_status_written_over_a_retry_queued_behind_its_ending_attempt_drops_it(
    written: str, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The task was skipped while it ran and retried at once: the retry waits for the skipped
    attempt to end. A status then written in the file is decided as for a running task: the
    waiting launch never starts, and its slot is free."""
    async with lh.retry_queued(tmp_path, tracks_dir, write_track) as (live, path):
        engine = live.engine
        assert engine.loop_queued(lh.QUEUED)
        await live.settled("t")
        edit(path, "K", status=written)
        await live.until(lambda: live.status("t:K") is Status(written))
        assert not engine.loop_queued(lh.QUEUED)
        await live.until(lambda: not engine.busy())
        assert lh.ledger(tmp_path) == ["start"]
        assert engine.running["t"] == 0
        doc = await live.settled("t")
        assert doc["features"][0]["status"] == written
        assert live.kinds("reload_plan")[-1][2]["orders"] == {"K": written}


@pytest.mark.anyio
async def test_an_order_written_while_the_daemon_was_stopped_is_decided_the_same(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """At start-up the edits made meanwhile are orders too: ``skipped`` over the complete C
    is refused, ``pending`` over the failed F runs it again."""
    marker = tmp_path / "fixed"
    path = write_track(
        "t",
        [
            {"id": "C", "command": lh.note("C", tmp_path)},
            {"id": "F", "command": f"[ -e {marker} ]", "max_iterations": 1},
        ],
    )
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:F") is Status.FAILED)
        await live.until(lambda: live.status("t:C") is Status.COMPLETE)
        before = (await live.settled("t"))["features"][0]
    edit(path, "C", status="skipped")
    edit(path, "F", status="pending")
    marker.touch()
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:F") is Status.COMPLETE)
        doc = await live.settled("t")
        assert doc["features"][0] == before
        assert live.status("t:C") is Status.COMPLETE
        assert refused(live)["C"]["reason"] == "t:C is complete: skipping it would change nothing"
        assert lh.ledger(tmp_path) == ["C"]
