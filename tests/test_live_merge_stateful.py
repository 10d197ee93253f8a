"""User edits and daemon transitions interleaved at random, through the real merge and files.

A person edits a queue file (status orders, descriptions, keys of their own, tasks added and
removed, sometimes saving *while the daemon writes*), the daemon runs tasks (dispatch, PASS
or FAIL) and writes the file back. The real :class:`~orchestrator.writeback.Writeback` and
:class:`~orchestrator.daemon.Engine` do the work, with a store on disk; attempts are simulated
(no processes) so that thousands of interleavings run in seconds. After every step:

* the file is valid JSON;
* no user edit is lost: every task the person wrote is there, in their order, with the
  values they gave the keys they own;
* no daemon transition is lost: a sync changes a task's status only where the person wrote an
  order since the last sync (or where a task is launched), and attempts never go back;
* an order is applied by the first sync that reads it, and only once;

and at the end, after a last write-back, the file is exactly the merge of both histories: the
person's document with the daemon-owned fields of every task as the store has them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orchestrator import config, merge, queuefile
from orchestrator.clock import SystemClock
from orchestrator.control import orders
from orchestrator.daemon import Engine
from orchestrator.model import OWNED_FIELDS, Status, TaskKey
from orchestrator.store import Store
from orchestrator.supervisor import _load_tracks
from orchestrator.writeback import Writeback

from .fakes import FakeExecutor


def _refused_or_idle(key: TaskKey, written: Status, status: Status) -> bool:
    """Whether the order ``written`` in the file is one the daemon does not apply to a task
    that is ``status`` (the same decision as for the command; no attempt runs here)."""
    decision = orders.decide(orders.WRITTEN[written], str(key), status, running=False)
    return decision.event is None


PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
ORDERS = ("pending", "skipped", "complete", "blocked")
TRACK = "t"
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None

TEXT = st.sampled_from(["", "fix the login", "naïve café", "line\nbreak", '"quoted"', "x" * 40])


class LiveEditing(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="live-", dir=SCRATCH))
        self.tracks = self.root / "tracks"
        self.tracks.mkdir()
        self.path = self.tracks / f"{TRACK}.json"
        self.user: list[dict[str, Any]] = [
            {"id": "T0", "description": "first", "owner": "ana"},
            {"id": "T1", "description": "second", "dependencies": ["T0"]},
            {"id": "T2", "description": "third"},
            {"id": "T3", "description": "fourth", "dependencies": ["T2"], "notes": []},
        ]
        """The tasks as the person wrote them (their keys only, plus status orders)."""
        self.next_id = 4
        self.orders: dict[str, str] = {}
        """Statuses written since the last sync read the file (the last one per task)."""
        self.base: dict[str, str] = {}
        """Each task's status as the daemon last left it in the file (absent: none)."""
        self.hook_ran = False
        self.during_write: list[tuple[str, str]] = []
        """Edits to make while the daemon's next write is under way: (task id, note)."""
        self.attempts: dict[str, int] = {}
        self.path.write_text(self.render_user(None, {"T2": "complete"}), encoding="utf-8")
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.portal.call(self._start)
        self.sync()

    # ------------------------------------------------------------------ set-up

    def _start(self) -> None:
        cfg = config.load(
            flags={"tracks": str(self.tracks), "state_dir": str(self.root / "state")},
            env={},
            cwd=self.root,
        )
        self.store = Store.open(cfg.state_dir, SystemClock())
        self.engine = Engine(cfg, self.store, FakeExecutor(), SystemClock())
        self.writeback = Writeback(self.engine, 0.0, quiet=0.0)
        _load_tracks(self.engine, cfg, self.writeback, self.store.load_tasks())
        self.launched: list[TaskKey] = []
        self.engine.connect(self.launched.append, self.writeback.mark)

    def teardown(self) -> None:
        queuefile.write_if_unchanged = _REAL_WRITE
        self.portal.call(self._stop)
        self._portal_cm.__exit__(None, None, None)
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ the person

    def file_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return doc

    def render_user(self, current: dict[str, Any] | None, statuses: dict[str, str]) -> str:
        """The file as the person saves it: what they see now, with their changes."""
        on_disk = {t["id"]: t for t in current["features"]} if current else {}
        items = []
        for task in self.user:
            item = dict(on_disk.get(task["id"], {}))
            for key in list(item):
                if key not in OWNED_FIELDS and key not in task:
                    del item[key]
            item.update(task)
            if task["id"] in statuses:
                item["status"] = statuses[task["id"]]
            items.append(item)
        doc = dict(current or {"project": "p", "phase": "kept as written"})
        doc["features"] = items
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    def save(self, in_place: bool = False, statuses: dict[str, str] | None = None) -> None:
        text = self.render_user(self.file_doc(), statuses or {})
        if in_place:
            with self.path.open("w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            tmp = self.path.with_name(".t.json.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)

    def user_task(self, ident: str) -> dict[str, Any]:
        return next(t for t in self.user if t["id"] == ident)

    def ids(self) -> list[str]:
        return [t["id"] for t in self.user]

    @rule(data=st.data(), order=st.sampled_from(ORDERS), in_place=st.booleans())
    def write_an_order(self, data: st.DataObject, order: str, in_place: bool) -> None:
        ident = data.draw(st.sampled_from(self.ids()))
        self.orders[ident] = order
        self.save(in_place, {ident: order})

    @rule(data=st.data(), text=TEXT, key=st.sampled_from(["description", "notes", "owner"]))
    def edit_a_key(self, data: st.DataObject, text: str, key: str) -> None:
        ident = data.draw(st.sampled_from(self.ids()))
        self.user_task(ident)[key] = text
        self.save()

    @rule(text=TEXT, depends=st.booleans())
    def add_a_task(self, text: str, depends: bool) -> None:
        ident = f"T{self.next_id}"
        self.next_id += 1
        task: dict[str, Any] = {"id": ident, "description": text}
        if depends:
            task["dependencies"] = [self.user[-1]["id"]]
        self.user.append(task)
        self.save()

    @precondition(lambda self: len(self.user) > 1)
    @rule(data=st.data())
    def remove_a_task(self, data: st.DataObject) -> None:
        ident = data.draw(st.sampled_from(self.ids()))
        self.user = [t for t in self.user if t["id"] != ident]
        for task in self.user:  # the person fixes refs to it, or the save is invalid
            if ident in task.get("dependencies", []):
                task["dependencies"] = [d for d in task["dependencies"] if d != ident]
        self.orders.pop(ident, None)
        self.base.pop(ident, None)
        self.save()

    @rule(data=st.data(), text=TEXT)
    def edit_while_the_daemon_writes(self, data: st.DataObject, text: str) -> None:
        """The next write-back finds the file saved since it read it."""
        ident = data.draw(st.sampled_from(self.ids()))
        self.during_write.append((ident, text))

    # ------------------------------------------------------------------ the daemon

    @precondition(lambda self: bool(self.launched))
    @rule(data=st.data(), passes=st.booleans())
    def an_attempt_ends(self, data: st.DataObject, passes: bool) -> None:
        key = data.draw(st.sampled_from(self.launched))
        self.launched.remove(key)
        self.portal.call(self._conclude, key, passes)

    def _conclude(self, key: TaskKey, passes: bool) -> None:
        engine = self.engine
        state = engine.states[key]
        if key in engine.graph and state.status is Status.IN_PROGRESS:
            attempts = state.owned.attempts + 1
            self.attempts[key.id] = attempts
            now = "2026-11-25T08:00:00+00:00"
            if passes:
                new = state.with_owned(
                    status=Status.COMPLETE, attempts=attempts, completed_at=now, passes=True
                )
            else:
                new = state.with_owned(
                    status=Status.FAILED, attempts=attempts, passes=False, error="exit 1"
                )
            engine.apply(key, new, ("attempt_finished", key, {"attempt": attempts}))
        # Otherwise an order or an edit ended the run early (it was cancelled).
        engine.finished(key)

    @rule()
    def sync(self) -> None:
        """The write-back reads the file, applies orders and edits, and writes it back."""
        before = {k.id: s for k, s in self.engine.states.items() if k in self.engine.graph}
        # An order is a status that differs from what the daemon last left in the file.
        consumed = {i: o for i, o in self.orders.items() if self.base.get(i) != o}
        self.orders.clear()
        hook, self.during_write = self.during_write, []
        self.hook_ran = False
        if hook:
            queuefile.write_if_unchanged = self._edit_then_write(hook)
        try:
            self.portal.call(self.writeback.sync, TRACK)
        finally:
            queuefile.write_if_unchanged = _REAL_WRITE
        if self.hook_ran:
            # The write was refused (the file changed): the orders read are spent all the same.
            self.base.update(consumed)
        else:
            self.base = {t["id"]: t["status"] for t in self.file_doc()["features"] if "status" in t}
        states = self.engine.states
        for ident in self.ids():
            key = TaskKey(TRACK, ident)
            state = states.get(key)
            if state is None:
                continue
            was = before.get(ident)
            if ident in consumed:
                wanted = Status(consumed[ident])
                if was is not None and _refused_or_idle(key, wanted, was.status):
                    # Refused (it would undo finished work) or nothing to do: unchanged.
                    assert state == was, (ident, was, state, wanted)
                elif wanted is Status.PENDING:
                    assert state.status in (Status.PENDING, Status.IN_PROGRESS), (ident, state)
                    assert state.budget_base == state.owned.attempts, (ident, state)
                else:
                    assert state.status is wanted, (ident, state, wanted)
            elif was is not None:
                launched = was.status is Status.PENDING and state.status is Status.IN_PROGRESS
                assert state.status is was.status or launched, (ident, was, state)
                assert state.budget_base == was.budget_base, (ident, was, state)

    def _edit_then_write(self, edits: list[tuple[str, str]]) -> Any:
        def write(path: Path, text: str, expected: Any, **kwargs: Any) -> Any:
            self.hook_ran = True
            for ident, note in edits:
                if any(t["id"] == ident for t in self.user):
                    self.user_task(ident)["notes"] = note
            self.save()
            return _REAL_WRITE(path, text, expected, **kwargs)

        return write

    # ------------------------------------------------------------------ checks

    @invariant()
    def the_file_is_valid_json_and_keeps_every_user_edit(self) -> None:
        doc = self.file_doc()
        items = doc["features"]
        assert [t["id"] for t in items] == self.ids()
        for task, item in zip(self.user, items, strict=True):
            for key, value in task.items():
                if key not in OWNED_FIELDS:
                    assert item[key] == value, (key, item, task)
        assert doc["phase"] == "kept as written"

    @invariant()
    def attempts_never_go_back(self) -> None:
        for ident, count in self.attempts.items():
            state = self.engine.states.get(TaskKey(TRACK, ident))
            assert state is not None
            assert state.owned.attempts >= count

    def teardown_check(self) -> None:
        """The final file is the merge of both histories."""
        self.orders.clear()
        self.portal.call(self.writeback.sync, TRACK)
        self.portal.call(self.writeback.flush)  # a sync that started tasks writes next round
        doc = self.file_doc()
        items = {t["id"]: t for t in doc["features"]}
        for task in self.user:
            item = items[task["id"]]
            state = self.engine.states[TaskKey(TRACK, task["id"])]
            wanted = merge.store_fields(state)
            for name in OWNED_FIELDS:
                if name in item:
                    assert merge.same(name, item[name], wanted[name]), (name, item, state)
                else:
                    assert not merge.says_something(name, wanted[name]), (name, item, state)
            for field, value in task.items():
                if field not in OWNED_FIELDS:
                    assert item[field] == value
        assert doc["summary"] == merge.summary(self.engine.counts(TRACK), None)
        stored = self.store.load_tasks()
        for ident in self.ids():
            task_key = TaskKey(TRACK, ident)
            state = self.engine.states[task_key]
            if state.status is not Status.IN_PROGRESS:  # launched: its attempt has not begun
                assert stored[task_key] == state


_REAL_WRITE = queuefile.write_if_unchanged


class Checked(LiveEditing):
    def teardown(self) -> None:
        try:
            self.teardown_check()
        finally:
            super().teardown()


def _run(examples: int, steps: int) -> None:
    run_state_machine_as_test(
        Checked,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_user_edits_and_daemon_transitions_never_lose_each_other() -> None:
    _run(examples=200, steps=30)


@pytest.mark.soak
@pytest.mark.timeout(600)  # 1,500 examples: about a minute on a quiet machine
def test_user_edits_and_daemon_transitions_soak() -> None:
    _run(examples=1500, steps=60)
