"""The daemon runs the tracks: scheduling, the Ralph loop, write-back (real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator import lock, procs, worker
from orchestrator.attempt import AttemptPlan
from orchestrator.clock import SystemClock
from orchestrator.daemon import Engine
from orchestrator.errors import AlreadyRunningError
from orchestrator.executors.local import LocalExecutor
from orchestrator.model import TaskKey
from orchestrator.store import Store
from orchestrator.supervisor import Control, serve

from .conftest import WriteTrack
from .daemon_harness import run_once, settings
from .live_harness import ledger, live_daemon, note
from .process_harness import wait_for

pytestmark = pytest.mark.anyio


async def test_tracks_run_to_completion_across_a_trigger(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "backend",
        [
            {"id": "A1", "command": note("A1", tmp_path)},
            {"id": "A2", "command": note("A2", tmp_path), "dependencies": ["A1"]},
            {"id": "A3", "command": note("A3", tmp_path), "dependencies": ["A2"]},
        ],
    )
    write_track(
        "patient",
        {
            "track": {"start_after": ["backend:A2"]},
            "features": [
                {"id": "P1", "command": note("P1", tmp_path)},
                {"id": "P2", "command": note("P2", tmp_path), "dependencies": ["backend:A3", "P1"]},
            ],
        },
    )
    run = await run_once(tracks_dir)
    assert run.code == 0
    order = ledger(tmp_path)
    assert sorted(order) == ["A1", "A2", "A3", "P1", "P2"]
    assert order.index("P1") > order.index("A2")
    assert order.index("P2") > order.index("A3")
    assert ("track_started", "patient", {"trigger": ["backend:A2"]}) in run.events
    for name, total in (("backend", 3), ("patient", 2)):
        doc = run.doc(name)
        assert doc["summary"]["complete"] == total
        assert doc["summary"]["total"] == total
        assert all(t["status"] == "complete" and t["passes"] is True for t in doc["features"])


async def test_failure_output_reaches_the_next_attempt(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    script = (
        'if [ -s "$ORCHESTRATORD_FAILURE_FILE" ]; then '
        f'cp "$ORCHESTRATORD_FAILURE_FILE" {tmp_path}/seen; '
        'echo "$ORCHESTRATORD_TASK_ID $ORCHESTRATORD_TRACK $ORCHESTRATORD_ATTEMPT'
        ' $ORCHESTRATORD_LAUNCH"'
        f" > {tmp_path}/env; "
        "else echo first-try-output; exit 7; fi"
    )
    write_track("t", [{"id": "R", "command": script, "max_iterations": 3}])
    run = await run_once(tracks_dir)
    assert run.code == 0
    seen = (tmp_path / "seen").read_text()
    assert "the command exited with status 7" in seen
    assert "first-try-output" in seen
    second = run.store().attempts(TaskKey("t", "R"))[1].id
    marker = procs.launch_marker(run.store().store_id, os.getpid(), second)
    assert (tmp_path / "env").read_text().split() == ["R", "t", "2", marker]
    task = run.task("t", "R")
    assert (task["status"], task["attempts"], task["verification_verdict"]) == (
        "complete",
        2,
        "PASS",
    )


async def test_a_resumed_task_keeps_its_last_failure_output(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Attempt 1 fails; the daemon stops during attempt 2; after a restart, attempt 2 runs
    again and is still given attempt 1's failure output in ``$ORCHESTRATORD_FAILURE_FILE``."""
    started, seen = tmp_path / "started", tmp_path / "seen"
    script = (
        'if [ "$ORCHESTRATORD_ATTEMPT" = 1 ]; then echo first-try-output-7f3; exit 7; fi; '
        f"if [ ! -f {started} ]; then touch {started}; exec sleep 60; fi; "
        f'if [ -f "$ORCHESTRATORD_FAILURE_FILE" ]; then cp "$ORCHESTRATORD_FAILURE_FILE" {seen}; '
        f"else echo no-failure-file > {seen}; fi"
    )
    write_track("t", [{"id": "R", "command": script, "max_iterations": 3}])
    control = Control()

    async def stop_during_the_second_attempt() -> None:
        await anyio.to_thread.run_sync(wait_for, started.exists)  # the child's own file
        control.request_stop(force=True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_during_the_second_attempt)
        first = await run_once(tracks_dir, control=control)
    assert not seen.exists()
    cut = first.store().attempts(TaskKey("t", "R"))
    assert [(a.number, a.state) for a in cut] == [(1, "finished"), (2, "interrupted")]
    again = await run_once(tracks_dir)
    assert again.code == 0
    text = seen.read_text()
    assert "first-try-output-7f3" in text
    assert "the command exited with status 7" in text
    assert again.task("t", "R")["status"] == "complete"
    attempts = again.store().attempts(TaskKey("t", "R"))
    assert [(a.number, a.iteration, a.state, a.verdict) for a in attempts] == [
        (1, 1, "finished", "FAIL"),
        (2, 2, "interrupted", None),
        (2, 2, "finished", "PASS"),
    ]


async def test_budget_spent_is_failed_and_dependents_wait(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "F", "command": "echo nope; exit 1", "max_iterations": 2},
            {"id": "D", "command": "true", "dependencies": ["F"]},
        ],
    )
    run = await run_once(tracks_dir)
    assert run.code == 1
    failed, waiting = run.task("t", "F"), run.task("t", "D")
    assert (failed["status"], failed["attempts"]) == ("failed", 2)
    assert failed["error"] == "the command exited with status 1"
    assert "status" not in waiting  # still pending: nothing to say, so no field is added
    assert "attempts" not in waiting
    attempts = run.store().attempts(TaskKey("t", "F"))
    assert [(a.number, a.iteration, a.verdict) for a in attempts] == [
        (1, 1, "FAIL"),
        (2, 2, "FAIL"),
    ]


async def test_verdicts_blocked_promise_verify_timeout(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        {
            "track": {"on_block": "continue"},
            "features": [
                {"id": "B", "command": "echo '<blocked>needs an API key</blocked>'; exit 0"},
                {
                    "id": "P",
                    "command": "echo done",
                    "completion_promise": "DONE",
                    "max_iterations": 1,
                },
                {
                    "id": "OK",
                    "command": "echo '<promise>DONE</promise>'",
                    "completion_promise": "DONE",
                },
                {
                    "id": "V",
                    "command": "true",
                    "verify": ["true", "echo lint-broke-here; exit 3"],
                    "max_iterations": 1,
                },
                {"id": "T", "command": "sleep 30", "timeout": 0.3, "max_iterations": 1},
                {
                    "id": "VT",
                    "command": "true",
                    "verify": "sleep 30",
                    "verify_timeout": 0.3,
                    "max_iterations": 1,
                },
                {"id": "N", "command": ["no-such-binary-for-sure"], "max_iterations": 1},
            ],
        },
    )
    run = await run_once(tracks_dir, kill_grace=0.5)
    t = {ident: run.task("t", ident) for ident in ("B", "P", "OK", "V", "T", "VT", "N")}
    assert (t["B"]["status"], t["B"]["error"], t["B"]["verification_verdict"]) == (
        "blocked",
        "needs an API key",
        "BLOCKED",
    )
    assert t["P"]["error"] == "the command exited 0 but did not print <promise>DONE</promise>"
    assert t["OK"]["status"] == "complete"
    assert t["V"]["error"] == "verify 2/2 `echo lint-broke-here; exit 3` exited with status 3"
    assert t["T"]["error"] == "the command timed out after 0.3 s"
    assert t["VT"]["error"] == "verify 1/1 `sleep 30` timed out after 0.3 s"
    assert t["N"]["error"].startswith("command not found: 'no-such-binary-for-sure'")
    assert all(t[k]["status"] == "failed" for k in ("P", "V", "T", "VT", "N"))
    log = (run.state / "logs" / "t" / "V.attempt-1.log").read_text()
    assert "lint-broke-here" in log
    assert "=== verify 2/2: echo lint-broke-here; exit 3 ===" in log


async def test_a_missing_workdir_fails_the_attempt_clearly(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        {
            "track": {"workdir": "nowhere"},
            "features": [{"id": "W", "command": "true", "max_iterations": 1}],
        },
    )
    run = await run_once(tracks_dir)
    error = run.task("t", "W")["error"]
    # Where it is set and how it is read: the path alone does not say which file to fix.
    assert error == (
        f"working directory not found: {tracks_dir / 'nowhere'} (track.workdir 'nowhere' in "
        f"{run.engine.tracks['t'].definition.path}, relative to that file)"
    )
    assert run.engine.tracks["t"].definition.path.endswith("t.json")


async def test_concurrency_and_max_parallel(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    spans = tmp_path / "spans"
    body = (
        f"echo start $ORCHESTRATORD_TRACK >> {spans}; sleep 0.2; "
        f"echo end $ORCHESTRATORD_TRACK >> {spans}"
    )
    write_track(
        "a",
        {
            "track": {"concurrency": 2},
            "features": [{"id": f"A{i}", "command": body} for i in range(5)],
        },
    )
    write_track(
        "b",
        {
            "track": {"concurrency": 3},
            "features": [{"id": f"B{i}", "command": body} for i in range(5)],
        },
    )
    run = await run_once(tracks_dir, max_parallel=3)
    assert run.code == 0
    live: dict[str, int] = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0, "all": 0}
    for line in spans.read_text().splitlines():
        what, track = line.split()
        live[track] += 1 if what == "start" else -1
        peak[track] = max(peak[track], live[track])
        peak["all"] = max(peak["all"], live["a"] + live["b"])
    assert peak["a"] <= 2
    assert peak["all"] <= 3
    assert peak["all"] == 3  # the limit is used, not just respected


async def test_priority_then_file_order(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    items = [("L", "low"), ("P3", "P3"), ("H1", "high"), ("Z", 0), ("H2", "P1"), ("N", None)]
    write_track("t", [{"id": i, "priority": p, "command": note(i, tmp_path)} for i, p in items])
    await run_once(tracks_dir)
    assert ledger(tmp_path) == ["Z", "H1", "H2", "N", "L", "P3"]


async def test_done_tasks_are_not_run_and_leftovers_are(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "C", "status": "completed", "command": note("C", tmp_path)},
            {"id": "S", "status": "parked", "command": note("S", tmp_path)},
            {"id": "I", "status": "in_progress", "command": note("I", tmp_path)},
        ],
    )
    run = await run_once(tracks_dir)
    assert ledger(tmp_path) == ["I"]
    assert run.code == 0
    assert run.task("t", "C")["status"] == "completed"  # the file's own spelling is kept


async def test_agent_profile_gets_the_prompt(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import sys, pathlib\n"
        "text = sys.stdin.read() if sys.argv[-1] == 'stdin' else sys.argv[1]\n"
        f"pathlib.Path({str(tmp_path)!r}, 'prompt-' + sys.argv[-1][:5]).write_text(text)\n"
        "print('<promise>SHIP_IT</promise>')\n"
    )
    config = tmp_path / "orchestratord.toml"
    config.write_text(
        f'[agents.fake]\nargv = [{sys.executable!r}, {str(agent)!r}, "{{prompt}}"]\n'
        f'[agents.piped]\nargv = [{sys.executable!r}, {str(agent)!r}, "stdin"]\n'
        'prompt_via = "stdin"\n'
    )
    task = {
        "description": "Add the approval endpoint",
        "file": "api/approve.py",
        "tests": ["api/test_approve.py"],
        "acceptance_criteria": ["admins only", "returns 204"],
        "completion_promise": "SHIP_IT",
    }
    write_track(
        "t", [{"id": "AG", "agent": "fake", **task}, {"id": "ST", "agent": "piped", **task}]
    )
    os.environ["ORCHESTRATORD_CONFIG"] = str(config)
    try:
        run = await run_once(tracks_dir)
    finally:
        del os.environ["ORCHESTRATORD_CONFIG"]
    assert run.code == 0
    for name in ("prompt-You a", "prompt-stdin"):
        prompt = (tmp_path / name).read_text()
        for part in (
            "AG" if "You" in name else "ST",
            "Add the approval endpoint",
            "api/approve.py",
            "api/test_approve.py",
            "- admins only",
            "- returns 204",
            "<promise>SHIP_IT</promise>",
        ):
            assert part in prompt, (name, part)


async def test_unknown_agent_blocks_the_task_at_once_with_a_clear_reason(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Every attempt would fail the same way until the config changes: an old queue file's
    30 iterations were spent in milliseconds, and the task said 'failed after 30 attempts'."""
    write_track(
        "t",
        [
            {"id": "A", "agent": "nonesuch", "max_iterations": 30},
            # An old queue file's role name runs the default profile: none is configured here.
            {"id": "R", "agent": "FeatureBuilder", "max_iterations": 30},
        ],
    )
    run = await run_once(tracks_dir)
    a, r = run.task("t", "A"), run.task("t", "R")
    assert (a["status"], a["attempts"], r["status"], r["attempts"]) == ("blocked", 1, "blocked", 1)
    assert a["error"] == (
        "unknown agent 'nonesuch': define [agents.nonesuch] in the config, or map it to a role "
        "with [roles.nonesuch] (profiles: aider, claude, codex, gemini; roles: bugfix, "
        "codequality, docwriter, featurebuilder, manual, refactor, testwriter); then retry the task"
    )
    assert r["error"] == (
        "agent 'FeatureBuilder' is a role: it runs the default agent profile, and none is set; "
        'set defaults.agent in the config (e.g. "claude"), or agent on [roles.featurebuilder]; '
        "then retry the task"
    )


async def test_attempt_logs_are_capped_keeping_the_tail(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "BIG", "command": "seq 1 400000; echo THE-END"}])
    run = await run_once(tracks_dir, log_max_bytes=64 * 1024)
    log = (run.state / "logs" / "t" / "BIG.attempt-1.log").read_bytes()
    assert len(log) < 64 * 1024 + 200
    assert b"THE-END" in log
    assert b"earlier bytes dropped" in log


async def test_a_second_daemon_on_the_same_state_dir_refuses(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}])
    held = lock.StateLock(tmp_path / "state")
    held.acquire()
    try:
        with pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}"):
            await run_once(tracks_dir, tmp_path / "state")
        assert lock.holder(tmp_path / "state") == os.getpid()
    finally:
        held.release()
    assert lock.holder(tmp_path / "state") is None


async def test_write_back_is_coalesced(tracks_dir: Path, write_track: WriteTrack) -> None:
    write_track("t", [{"id": f"T{i}", "command": "true"} for i in range(150)])
    run = await run_once(tracks_dir, writeback_delay=0.2)
    assert run.code == 0
    assert run.doc("t")["summary"]["complete"] == 150
    # 450 transitions (started, attempt, complete per task) made only a handful of writes.
    assert run.engine.stats["file_writes"] < 30


async def test_agent_env_reaches_the_agent_but_not_verification(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "orchestratord.toml"
    config.write_text(
        "[agents.sh]\n"
        f'argv = ["sh", "-c", "echo agent=$AGENT_ONLY track=$TRACK_VAR > {tmp_path}/agent-env"]\n'
        'env = { AGENT_ONLY = "1" }\n'
    )
    monkeypatch.setenv("ORCHESTRATORD_CONFIG", str(config))
    mark = tmp_path / "verified"
    write_track(
        "t",
        {
            "track": {"env": {"TRACK_VAR": "t"}},
            "features": [
                {
                    "id": "E",
                    "agent": "sh",
                    "max_iterations": 1,
                    "verify": f'test -z "$AGENT_ONLY" && test "$TRACK_VAR" = t && touch {mark}',
                }
            ],
        },
    )
    run = await run_once(tracks_dir)
    assert run.code == 0, run.task("t", "E")
    assert (tmp_path / "agent-env").read_text().split() == ["agent=1", "track=t"]
    assert (tmp_path / "verified").exists()


def test_task_ids_become_safe_file_names() -> None:
    from orchestrator.daemon import safe_name

    assert safe_name("PROVIDER-013") == "PROVIDER-013"
    assert safe_name("a/b c") == "a%2Fb%20c"
    assert safe_name("..") == "%2E."
    assert safe_name("é") == "%C3%A9"


async def test_services_are_ready_before_the_daemon_is(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    from anyio.abc import TaskStatus

    from orchestrator.executors.local import LocalExecutor
    from orchestrator.supervisor import Runtime, serve

    from .daemon_harness import settings

    write_track("t", [{"id": "A", "command": "true"}])
    seen: list[str] = []

    async def service(
        rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        seen.append(f"service started with workers {sorted(rt.workers)}")
        task_status.started()
        await anyio.sleep_forever()

    cfg = settings(tracks_dir, tracks_dir.parent / "state")
    async with LocalExecutor(1.0) as executor:
        code = await serve(
            cfg,
            executor,
            once=True,
            handle_signals=False,
            services=[service],
            on_ready=lambda engine: seen.append("ready"),
        )
    assert code == 0
    assert seen == ["service started with workers ['t']", "ready"]


async def test_a_task_given_to_a_runner_that_ends_before_taking_it_is_pending_again(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The daemon is cancelled from outside (a service failed) just as a task is handed to an
    idle runner: the runner ends without taking it, and the task's loop counts as begun and
    cut short. Its slot frees and it is pending again, with no attempt made."""
    from anyio.abc import TaskStatus

    from orchestrator.executors.local import LocalExecutor
    from orchestrator.states import Event
    from orchestrator.supervisor import Runtime, serve

    from .daemon_harness import settings

    write_track("t", [{"id": "A", "command": "true"}])
    key = TaskKey("t", "A")
    engines: list[Engine] = []

    async def service(
        rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        engine = rt.engine
        while engine.states[key].status.value != "complete" or engine.busy():  # noqa: ASYNC110
            await anyio.sleep(0.01)  # A ran, and its runner waits for the track's next task
        rt.tg.cancel_scope.cancel()  # as a failing service does
        # A retry order slips in during the unwinding (shielded: the caller's own scope is
        # cancelled, and the engine starts nothing from a cancelled one).
        with anyio.CancelScope(shield=True):  # noqa: ASYNC100
            engine.order(key, Event.ORDER_RETRY, "again")
        assert engine.running["t"] == 1  # handed to the idle runner, not taken yet

    state = tracks_dir.parent / "state"
    async with LocalExecutor(1.0) as executor:
        await serve(
            settings(tracks_dir, state),
            executor,
            handle_signals=False,
            services=[service],
            on_ready=engines.append,
        )
    (engine,) = engines
    assert engine.running["t"] == 0
    assert engine.states[key].status.value == "pending"
    store = Store.open(state, SystemClock())
    stored = store.task(key)
    assert stored is not None
    assert stored.status.value == "pending"
    assert len(store.attempts(key)) == 1  # the run before the order only
    kinds = [e.type for e in store.events() if e.key == key]
    assert kinds[-2:] == ["task_retry", "attempt_interrupted"]


async def test_a_process_record_kept_for_later_is_committed_while_the_process_runs(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Nothing else commits while a verification command runs (the write-back of the start
    happened during the run): its record gets a transaction of its own within RECORD_DELAY,
    so the store shows it before the verdict. The command looks for its own record through
    another connection."""
    state = tmp_path / "state"
    probe = (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(state / 'state.db')!r})\n"
        "end = time.monotonic() + 20\n"
        "while time.monotonic() < end:\n"
        "    if db.execute(\"SELECT 1 FROM processes WHERE role = 'verify 1'\").fetchone():\n"
        "        sys.exit(0)\n"
        "    time.sleep(0.05)\n"
        "sys.exit(1)\n"
    )
    write_track(
        "t",
        [
            {
                "id": "V",
                "command": "sleep 0.5",
                "verify": [[sys.executable, "-c", probe]],
                "max_iterations": 1,
            }
        ],
    )
    run = await run_once(tracks_dir, state)
    assert run.task("t", "V")["status"] == "complete", run.task("t", "V").get("error")


async def test_a_track_runs_its_tasks_in_a_few_runners(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A runner whose task ended takes the track's next task: 40 tasks run in about as many
    asyncio tasks as run at once, not in one each."""
    write_track(
        "t", [{"id": f"T{i}", "command": "true"} for i in range(40)], track={"concurrency": 3}
    )
    runners: dict[str, list[asyncio.Task[object]]] = {}

    def note_runner(kind: str, subject: object, data: object) -> None:
        if kind == "task_started":  # announced from within the task's Ralph loop
            task = asyncio.current_task()
            assert task is not None
            runners.setdefault(str(subject), []).append(task)  # kept: ids stay unique

    def ready(engine: Engine) -> None:
        engine.listeners.append(note_runner)

    run = await run_once(tracks_dir, on_ready=ready, max_parallel=3)
    assert run.code == 0
    assert len(runners) == 40
    distinct = {id(task) for tasks in runners.values() for task in tasks}
    assert 3 <= len(distinct) <= 4  # 3 at once, and one more while a loop ends


async def test_a_defect_in_one_tasks_loop_blocks_that_task_and_the_daemon_goes_on(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception in the Ralph loop of one task (a bug of orchestratord) blocks
    that task with the error as its reason; the other tasks run, the daemon does not stop."""
    plan = worker.plan_attempt

    def faulty(engine: Engine, key: TaskKey, *args: Any, **kwargs: Any) -> AttemptPlan:
        if key.id == "BAD":
            raise RuntimeError("a defect")
        return plan(engine, key, *args, **kwargs)

    monkeypatch.setattr(worker, "plan_attempt", faulty)
    write_track(
        "t",
        [
            {"id": "BAD", "command": note("BAD", tmp_path)},
            {"id": "OK", "command": note("OK", tmp_path)},
            {"id": "AFTER", "command": note("AFTER", tmp_path), "dependencies": ["BAD"]},
        ],
    )
    run = await run_once(tracks_dir)
    assert run.code == 1  # AFTER waits on the blocked task
    assert ledger(tmp_path) == ["OK"]
    bad = run.task("t", "BAD")
    assert bad["status"] == "blocked"
    assert bad["error"].startswith("internal error: RuntimeError: a defect (a defect of")
    (blocked,) = [data for kind, ref, data in run.events if kind == "task_blocked"]
    assert blocked["by"] == "daemon"  # not a person's order: no attempt is counted cut short twice
    assert run.task("t", "AFTER").get("status", "pending") == "pending"
    (attempt,) = run.store().attempts(TaskKey("t", "BAD"))
    assert attempt.state == "interrupted"


async def test_a_defect_as_a_tasks_loop_ends_still_frees_its_slot(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect while the end of a Ralph loop is recorded does not keep the track's only slot
    taken: the next task runs, and the task whose verdict was recorded keeps it."""
    interrupted = worker._interrupted

    def faulty(engine: Engine, key: TaskKey, attempt_id: int | None) -> None:
        interrupted(engine, key, attempt_id)
        if key.id == "FIRST":
            raise RuntimeError("a defect")

    monkeypatch.setattr(worker, "_interrupted", faulty)
    write_track(
        "t",
        [
            {"id": "FIRST", "command": note("FIRST", tmp_path)},
            {"id": "NEXT", "command": note("NEXT", tmp_path)},
        ],
    )
    with anyio.fail_after(20):  # a slot left taken: the run never ends
        run = await run_once(tracks_dir, max_parallel=1)
    assert run.code == 0
    assert ledger(tmp_path) == ["FIRST", "NEXT"]
    assert run.task("t", "FIRST")["status"] == "complete"  # its verdict stands


async def test_a_defect_while_the_daemon_stops_leaves_the_task_for_the_next_start(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same defect while the daemon stops (it may be the cause) does not block the task:
    it is pending, for the next start to run again."""
    rebased = worker._rebased

    def faulty(engine: Engine, key: TaskKey, current: Any) -> Any:
        if engine.draining:
            raise RuntimeError("a defect")
        return rebased(engine, key, current)

    monkeypatch.setattr(worker, "_rebased", faulty)
    marker = tmp_path / "go"
    write_track("t", [{"id": "K", "command": f"while [ ! -e {marker} ]; do sleep 0.02; done"}])
    async with live_daemon(tracks_dir) as live:
        await live.until(lambda: live.task("t", "K").get("status") == "in_progress")
        live.control.request_stop()
        await live.until(lambda: live.engine.draining)
        marker.touch()  # the attempt ends within the stop's grace
        key = TaskKey("t", "K")
        await live.until(lambda: live.engine.states[key].status.value != "in_progress")
        assert live.engine.states[key].status.value == "pending"
        (attempt,) = live.engine.store.attempts(key)
        assert attempt.state == "interrupted"


async def test_the_daemon_leaves_sighup_as_it_found_it(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The start-up SIGHUP guard is put back when the daemon returns: a SIGHUP afterwards
    reaches the handler the embedding program had, not the daemon's note."""
    write_track("t", [{"id": "A", "command": "true"}])
    got: list[int] = []
    before = signal.signal(signal.SIGHUP, lambda signum, frame: got.append(signum))
    try:
        cfg = settings(tracks_dir, tracks_dir.parent / "state")
        async with LocalExecutor(cfg.settings.kill_grace) as executor:
            assert await serve(cfg, executor, once=True, handle_signals=True) == 0
        os.kill(os.getpid(), signal.SIGHUP)
        await anyio.sleep(0.05)
        assert got == [signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, before)
