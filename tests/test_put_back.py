"""An older version of a queue file put back (``git checkout``, ``git stash``, a backup) is not
a set of orders: the daemon's record is written back, and no completed task runs again
(docs/live-editing.md "An older version put back")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import merge, plan
from orchestrator.cli import cli
from orchestrator.model import Status
from orchestrator.states import TaskState

from . import live_harness as lh
from .conftest import WriteTrack
from .daemon_harness import run_once

WRITTEN = {"status": "complete", "attempts": 2, "last_attempt": "2026-11-25T08:35:00+00:00"}


@pytest.mark.parametrize(
    "on_disk",
    [
        {"status": "pending", "attempts": 0, "last_attempt": None},  # the file before the run
        {"status": "pending"},  # a file that never had the daemon's fields
        {**WRITTEN, "status": "in_progress", "attempts": 1},  # as written while it ran
        {**WRITTEN, "status": "failed", "last_attempt": "2026-11-25T08:30:00+00:00"},  # earlier
        {**WRITTEN, "attempts": 1},  # the same status: what the daemon wrote comes back too
        # fewer attempts, an order, and a last attempt not the daemon's (another format)
        {**WRITTEN, "status": "pending", "attempts": 0, "last_attempt": "2026-11-25T09:00:00"},
        # no last attempt is the earliest, even with an order and as many attempts
        {**WRITTEN, "status": "pending", "last_attempt": None},
        {"status": "complete", "last_attempt": WRITTEN["last_attempt"]},  # no count is 0
        {**WRITTEN, "attempts": None},
    ],
)
def test_an_older_attempt_than_the_daemon_wrote_is_a_version_put_back(
    on_disk: dict[str, Any],
) -> None:
    assert merge.user_changes(on_disk, WRITTEN) == merge.REWOUND


@pytest.mark.parametrize(
    ("on_disk", "order"),
    [
        ({**WRITTEN, "status": "pending"}, Status.PENDING),  # a person's order: the status only
        ({**WRITTEN, "status": "skipped", "attempts": 3}, Status.SKIPPED),  # more: not older
        ({**WRITTEN, "status": "pending", "attempts": "2"}, Status.PENDING),  # not a count
        ({**WRITTEN, "status": "pending", "attempts": 0}, Status.PENDING),  # the old loop's retry
        ({**WRITTEN, "status": "Skipped", "attempts": 1}, Status.SKIPPED),  # fewer, an order
    ],
)
def test_a_status_changed_with_the_same_or_a_later_attempt_is_an_order(
    on_disk: dict[str, Any], order: Status
) -> None:
    change = merge.user_changes(on_disk, WRITTEN)
    assert not change.rewound
    assert change.ordered_status is order


@pytest.mark.parametrize(
    ("on_disk", "not_an_order", "fields"),
    [
        ({**WRITTEN, "status": "failed"}, "failed", frozenset()),  # as many attempts: not older
        ({**WRITTEN, "error": "see the log"}, None, frozenset({"error"})),
        ({**WRITTEN, "attempts": 3, "passes": 1}, None, frozenset({"attempts", "passes"})),
    ],
)
def test_other_changes_with_as_many_attempts_are_not_a_version_put_back(
    on_disk: dict[str, Any], not_an_order: str | None, fields: frozenset[str]
) -> None:
    change = merge.user_changes(on_disk, WRITTEN)
    assert not change.rewound
    assert change.not_an_order == not_an_order
    assert change.fields == fields


def test_a_version_put_back_takes_the_daemons_values_in_every_field() -> None:
    on_disk = {"status": "pending", "attempts": 0, "last_attempt": None, "error": "old"}
    store = {**merge.store_fields(TaskState()), **WRITTEN}
    merged = merge.merge_task(on_disk, WRITTEN, store, merge.REWOUND)
    assert {k: merged.edits[k] for k in ("status", "attempts", "last_attempt")} == WRITTEN
    assert merged.edits["error"] is None


@pytest.mark.anyio
async def test_a_file_put_back_runs_nothing_again_and_shows_the_daemons_record(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    path = write_track(
        "t",
        [
            {"id": "A", "command": lh.note("A", tmp_path), "status": "pending", "attempts": 0},
            {"id": "B", "command": lh.note("B", tmp_path), "status": "pending", "attempts": 0},
        ],
    )
    committed = path.read_text()  # the version in the repository
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:B") is Status.COMPLETE)
        record = await live.settled("t")
        lh.write_in_place(path, committed)  # as `git checkout -- tracks/t.json` does
        await live.until(lambda: put_back(live) == ["A", "B"])
        await live.until(lambda: json.loads(path.read_text()) == record)
        assert live.status("t:A") is Status.COMPLETE
        assert not live.kinds("task_retry")
        # A person's order afterwards is one, as ever.
        doc = json.loads(path.read_text())
        doc["features"][0]["status"] = "pending"
        lh.write_and_rename(path, lh.dump(doc))
        await live.until(lambda: lh.ledger(tmp_path).count("A") == 2)
    assert lh.ledger(tmp_path).count("B") == 1


def put_back(live: lh.Live) -> list[str]:
    """The tasks the journaled plans reported put back, in order."""
    out: list[str] = []
    for event in live.engine.store.events():
        if event.type == "reload_plan":
            out += event.data.get("rewound", [])
    return out


def test_the_plan_says_which_tasks_were_put_back() -> None:
    result = plan.Plan("t", "tracks/t.json", "change", rewound=("A", "B"))
    assert not result.empty
    assert result.headline() == "2 tasks put back"
    line = result.lines()[0]
    assert line.startswith("< A: an older attempt than the daemon wrote")
    assert line.endswith("(to give it an order, write its status again)")  # any order, not a retry
    assert result.data()["rewound"] == ["A", "B"]
    assert result.data()["counts"]["rewound"] == 2


@pytest.mark.anyio
async def test_a_retry_that_sets_attempts_back_to_0_is_an_order(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The old loop's way to retry a task: ``pending`` and ``attempts`` 0, ``last_attempt``
    left as it was. Nothing else of the file is older: the person means it."""
    fails = f"{lh.note('B', tmp_path)}; exit 1"
    path = write_track("t", [{"id": "B", "command": fails, "max_iterations": 1}])
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:B") is Status.FAILED)
        doc = await live.settled("t")
        assert doc["features"][0]["attempts"] == 1
        doc["features"][0].update(status="pending", attempts=0)
        lh.write_and_rename(path, lh.dump(doc))
        await live.until(lambda: lh.ledger(tmp_path).count("B") == 2)
        await live.until(lambda: live.status("t:B") is Status.FAILED)
        assert put_back(live) == []


@pytest.mark.anyio
async def test_a_version_put_back_is_reported_once_when_its_write_waits(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A save from an editor that had the file open since before A ran: A is put back, and
    the task added in it starts first, so the file is merged on the next round; that round
    does not report A again."""
    path = write_track("t", [{"id": "A", "command": lh.note("A", tmp_path), "attempts": 0}])
    stale = json.loads(path.read_text())
    async with lh.live_daemon(tracks_dir) as live:
        await live.until(lambda: live.status("t:A") is Status.COMPLETE)
        record = (await live.settled("t"))["features"][0]
        stale["features"].append({"id": "D", "command": lh.note("D", tmp_path)})
        lh.write_in_place(path, lh.dump(stale))
        await live.until(lambda: "D" in lh.ledger(tmp_path))
        await live.until(lambda: live.doc("t")["features"][0] == record)
        await live.settled("t")
        assert put_back(live) == ["A"]
    assert lh.ledger(tmp_path) == ["A", "D"]


@pytest.mark.anyio
async def test_a_version_put_back_while_the_daemon_is_stopped(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The offline ``status`` and the next start both keep the daemon's record; a retry the
    old loop's way in the same file is an order for both."""
    fails = f"{lh.note('B', tmp_path)}; exit 1"
    tasks = [
        {"id": "A", "command": lh.note("A", tmp_path), "status": "pending", "attempts": 0},
        {"id": "B", "command": fails, "status": "pending", "max_iterations": 1},
    ]
    path = write_track("t", tasks)
    committed = json.loads(path.read_text())
    state = tmp_path / "state"
    await run_once(tracks_dir, state)
    assert lh.ledger(tmp_path) == ["A", "B"]
    record = json.loads(path.read_text())["features"]
    committed["features"][1] = {**record[1], "status": "pending", "attempts": 0}
    path.write_text(lh.dump(committed))  # A as in the repository; B retried

    args = ["status", "--json", "--tracks", str(tracks_dir), "--state-dir", str(state)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    counts = json.loads(result.stdout)["tracks"][0]["counts"]
    assert (counts["complete"], counts["pending"]) == (1, 1)

    run = await run_once(tracks_dir, state)
    assert lh.ledger(tmp_path) == ["A", "B", "B"]
    assert run.task("t", "A") == record[0]
