"""Track workers and the Ralph loop.

One :class:`TrackWorker` per track owns a task group in which that track's tasks run, for as
long as the daemon runs (a track whose file is removed keeps its worker, idle, for its return;
each task is cancelled on its own). :func:`run_task` is the Ralph loop for one task: attempt
after attempt until PASS, BLOCKED, or the iteration budget is spent, each attempt recorded in
the store before its process starts and its verdict recorded before anything acts on it. An
attempt cut short (the daemon stopping, a person's order, the track's file removed) is recorded
as interrupted; when nothing else decided the task's fate it is pending again, at the same
iteration.

Attempts on a cluster (:mod:`orchestrator.placement`) are the exception when the daemon
stops: their runs go on, the attempt stays running, and the next daemon resumes the Ralph
loop with that attempt (``run_task(..., resume=...)``), re-attaching to its runs; unless git
had committed its verified work before the daemon was killed: its runs were over, and it is cut
short like a local attempt, for the next one to find that commit.

Around each attempt :mod:`agentrun` gives the track's working tree and the attempt's git side
(changes, guardrails, the commit or the kept ref), checks budgets afterwards, and holds the
agent's tracks when it reports its usage limit (that attempt is interrupted, not counted).
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from . import agentoutput, agentrun, agents, logs, procs, verification
from .attempt import (
    AttemptPlan,
    AttemptResult,
    command_argv,
    note_interrupted,
    run_attempt,
    write_failure_file,
)
from .clock import iso
from .daemon import Engine, Track
from .errors import StateError
from .executors.base import Executor, RunInfo, RunSpec
from .gitattempt import Outcome
from .model import FOR_A_PERSON, Status, TaskDef, TaskKey, Verdict
from .placement import LOCAL, Resume
from .recovery import INTERRUPTED, STOPPED
from .states import Event, TaskState, transition
from .store import EventSpec

log = structlog.get_logger("orchestratord")
_attempt_log = logs.BoundOnce()


class TrackWorker:
    """Runs the tasks of one track, each in its own cancel scope.

    A task's Ralph loop runs in a *runner*: a task of the worker's task group that, once a
    loop ends, waits for the next task of the track instead of ending. Handing a task to an
    idle runner costs a few microseconds; starting a task in an anyio task group costs about
    25 (anyio 4.14 and later), which at thousands of short tasks a second is the daemon's
    single largest step. There are as many runners as tasks of the track ever ran at once.
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._tg: TaskGroup | None = None
        self._idle: list[_Runner] = []

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def launch(self, key: TaskKey, resume: Resume | None = None) -> None:
        if self._tg is None:
            raise RuntimeError(f"worker of track {self.name!r} is not running")
        requeues = self.engine.requeues(key)
        if self._idle:
            self._idle.pop().give(key, resume, requeues)
            return
        runner = _Runner()
        runner.give(key, resume, requeues)
        self._tg.start_soon(self._serve, runner, name=f"runner of track {self.name}")

    async def _serve(self, runner: _Runner) -> None:
        try:
            while True:
                key, resume, requeues = await runner.take()
                try:
                    await run_task(self.engine, key, resume)
                except StateError:
                    raise  # nothing can be recorded: the daemon stops, its state safe
                except Exception as exc:  # a defect: it stops this task, not the daemon
                    superseded = self.engine.requeues(key) != requeues
                    _contain(self.engine, key, exc, superseded)
                self._idle.append(runner)
        finally:
            if runner in self._idle:
                self._idle.remove(runner)
            given = runner.drop()
            if given is not None:  # cancelled before its loop began: as if it began and ended
                _loop_ended(self.engine, given, None)


class _Runner:
    """The hand-off of the next task to one runner of a :class:`TrackWorker`."""

    __slots__ = ("_given", "_job")

    def __init__(self) -> None:
        self._job: tuple[TaskKey, Resume | None, int] | None = None
        self._given = anyio.Event()

    def give(self, key: TaskKey, resume: Resume | None, requeues: int) -> None:
        """``requeues``: the task's :meth:`Engine.requeues` at its launch."""
        self._job = (key, resume, requeues)
        self._given.set()

    async def take(self) -> tuple[TaskKey, Resume | None, int]:
        await self._given.wait()
        self._given = anyio.Event()
        job, self._job = self._job, None
        assert job is not None
        return job

    def drop(self) -> TaskKey | None:
        """The task given and not taken (the runner is ending), if any."""
        job, self._job = self._job, None
        return None if job is None else job[0]


class _Recorder:
    """Records every child process (or remote run) in the store the moment it runs."""

    def __init__(self, engine: Engine, attempt_id: int, where: str = LOCAL) -> None:
        self.engine = engine
        self.attempt_id = attempt_id
        self.where = where

    def started(self, role: str, spec: RunSpec, info: RunInfo) -> int:
        store = self.engine.store
        if self.where != LOCAL:
            existing = store.open_run(spec.run_id)  # re-attached: recorded once
            if existing is not None:
                return existing.id
        ticks = procs.start_ticks_now() if info.pid else None
        # A local child carries its attempt's launch marker: where a restarted daemon can
        # find it by that, its record can wait for the next commit (RECORD_DELAY at most).
        later = self.where == LOCAL and procs.ENVIRON_READABLE
        if later:
            self.engine.record_kept()
        return store.record_process(
            self.attempt_id,
            role,
            spec.argv,
            spec.cwd,
            info.pid,
            ticks,
            _boot_id(),
            executor=self.where,
            run_id=spec.run_id,
            later=later,
        )

    def ended(self, record_id: int, info: RunInfo) -> None:
        self.engine.store.end_process(record_id, info.exit_code)


@functools.cache
def _boot_id() -> str | None:
    return procs.boot_id()


def max_iterations(engine: Engine, task: TaskDef, track: Track) -> int:
    return (
        task.max_iterations
        or track.definition.settings.max_iterations
        or engine.cfg.settings.defaults.max_iterations
    )


def plan_attempt(
    engine: Engine,
    key: TaskKey,
    attempt_id: int,
    number: int,
    iteration: int,
    failure: str,
    *,
    cwd: str | None = None,
    workspace: str = "",
    notes: tuple[str, ...] = (),
) -> AttemptPlan:
    """Everything one attempt needs: what to run, where, with which limits.

    ``cwd`` is the track's working tree when it is not its ``workdir`` (a git worktree);
    ``workspace`` is what the prompt says about that tree; ``notes`` go to the attempt's log.
    """
    task, track = engine.settings_for(key)
    settings = engine.cfg.settings
    defaults = settings.defaults
    budget = max_iterations(engine, task, track)
    env_extra = dict(track.definition.settings.env)
    agent_env: dict[str, str] = {}
    run_argv: tuple[str, ...] | None = None
    run_error: str | None = None
    stdin_path: str | None = None
    what = "command"
    timeout = task.timeout or track.definition.settings.timeout
    agent: str | None = None
    output_format = "text"
    usage_limit: tuple[re.Pattern[str], ...] = ()
    blocked: str | None = None
    if task.command is not None:
        run_argv = command_argv(task.command)
    else:
        what = "agent"
        choice = agents.choose(task, track.definition.settings, settings)
        notes = (*notes, choice.describe())
        if choice.role is not None and number == 1:
            log.info(
                "agent role",
                task=str(key),
                agent=choice.requested,
                role=choice.role,
                profile=choice.profile.name if choice.profile else None,
            )
        if choice.manual:
            blocked = (
                f"agent {choice.requested!r} {FOR_A_PERSON}: do it, then set its "
                'status to "complete"'
            )
        elif choice.profile is None:
            # The config names no profile to run: every attempt would fail the same way at once,
            # so the task is blocked instead of spending its budget (fix the config, then retry).
            blocked = f"{choice.error}; then retry the task"
        else:
            profile = choice.profile
            agent = profile.name
            text = agents.prompt_for(
                task,
                choice,
                settings,
                attempt=iteration,
                max_iterations=budget,
                failure=failure,
                workspace=workspace,
            )
            agent_env = dict(profile.env)
            timeout = timeout or profile.timeout
            output_format = profile.output
            usage_limit = agentoutput.compiled(
                (*agentoutput.LIMIT_PATTERNS, *profile.usage_limit_patterns)
            )
            if profile.prompt_via == "stdin":
                stdin_path = engine.task_file(key, f"attempt-{number}.prompt")
                Path(stdin_path).write_text(text, encoding="utf-8")
            run_argv = profile.command(text)
    return AttemptPlan(
        key=key,
        attempt_id=attempt_id,
        number=number,
        run_argv=run_argv,
        run_error=run_error,
        cwd=cwd or str(track.workdir),
        env=engine.child_env(key, number, attempt_id, env_extra),
        run_env=(
            engine.child_env(key, number, attempt_id, {**agent_env, **env_extra})
            if agent_env
            else None
        ),
        timeout=timeout or defaults.timeout,
        verify=verification.commands(
            task, track.definition.settings, engine.cfg.settings.defaults.verify
        ),
        verify_timeout=(
            task.verify_timeout
            or track.definition.settings.verify_timeout
            or defaults.verify_timeout
        ),
        promise=task.completion_promise,
        log_path=engine.log_path(key, number),
        stdin_path=stdin_path,
        failure_bytes=defaults.failure_output_bytes,
        kill_grace=engine.cfg.settings.kill_grace,
        log_max_bytes=settings.log_max_bytes,
        what=what,
        output_format=output_format,
        usage_limit=usage_limit,
        no_tests=agentrun.of(engine).no_tests,
        blocked=blocked,
        notes=notes,
        agent=agent,
    )


def _conclude(
    engine: Engine,
    key: TaskKey,
    started: TaskState,
    result: AttemptResult,
    iteration: int,
    budget: int,
    files: tuple[str, ...] | None = None,
) -> tuple[TaskState, list[EventSpec]]:
    now = iso(engine.clock.now())
    attempts = started.owned.attempts + 1
    data = {"attempt": attempts, "verdict": result.verdict.value, "reason": result.reason}
    if result.branch is not None:  # a git workspace on a cluster: where the changes are
        data.update(branch=result.branch, commit=result.commit)
    finished: EventSpec = ("attempt_finished", key, data)
    common: dict[str, Any] = {"attempts": attempts, "verification_verdict": result.verdict.value}
    if files is not None:
        common["files_actually_changed"] = files
    if result.verdict is Verdict.PASS:
        state = started.with_owned(
            status=transition(started.status, Event.PASS),
            completed_at=now,
            passes=True,
            error=None,
            **common,
        )
        return state, [finished, ("task_complete", key, {"attempts": attempts})]
    if result.verdict is Verdict.BLOCKED:
        state = started.with_owned(
            status=transition(started.status, Event.BLOCK),
            passes=False,
            error=result.reason,
            **common,
        )
        return state, [finished, ("task_blocked", key, {"reason": result.reason})]
    if iteration >= budget:
        state = started.with_owned(
            status=transition(started.status, Event.FAIL),
            passes=False,
            error=result.reason,
            **common,
        )
        return state, [
            finished,
            ("task_failed", key, {"reason": result.reason, "attempts": attempts}),
        ]
    state = started.with_owned(
        status=transition(started.status, Event.RETRY),
        passes=False,
        error=result.reason,
        **common,
    )
    return state, [finished]


async def _executor(
    engine: Engine, key: TaskKey, plan: AttemptPlan
) -> tuple[Executor, AttemptPlan]:
    """Where the attempt runs: this machine, or the track's cluster."""
    placement = engine.placement
    if placement is None:
        return engine.executor, plan
    return await placement.place(engine.tracks[key.track], plan)


def _in_missing_workdir(engine: Engine, key: TaskKey, plan: AttemptPlan) -> AttemptPlan:
    """A local run in a track's workdir that is not there cannot start: say where it is set
    (the executor could only name the path). A cluster's nodes have their own directories."""
    track = engine.tracks[key.track]
    missing = track.missing_workdir() if plan.cwd == str(track.workdir) else None
    return plan if missing is None else replace(plan, run_argv=None, run_error=missing)


def _where(engine: Engine, executor: Executor) -> str:
    return LOCAL if engine.placement is None else engine.placement.locator(executor)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """The attempt under way in a task's Ralph loop."""

    id: int
    number: int
    iteration: int
    """Within the task's current budget (a retry order starts a fresh one)."""
    started: TaskState
    """The task's state as the attempt began."""
    reattach: frozenset[str] = frozenset()
    """Runs of a resumed attempt, submitted before the last daemon stopped."""


async def run_task(engine: Engine, key: TaskKey, resume: Resume | None = None) -> None:
    """The Ralph loop of one task, from its first attempt to its verdict.

    ``resume``: the attempt the last daemon left running on a cluster, to continue first.
    """
    current: _Attempt | None = None
    runtime = agentrun.of(engine)
    try:
        with anyio.CancelScope() as scope:
            engine.track_scope(key, scope)
            failure = _previous_failure(engine, key)
            first = True
            # The scope's own check: a cancellation that came while the last attempt's end
            # waited on a thread (which nothing interrupts) is not delivered until the next
            # wait, and the task may be gone from its file by now. A loop whose task was
            # dispatched again before it began (orders in quick succession) gives way to the
            # loop queued behind it: that one's start is the one that counts.
            while (
                engine.states[key].status is Status.IN_PROGRESS
                and not engine.draining
                and not scope.cancel_called
                and not engine.loop_queued(key)
            ):
                if not first and (stop := runtime.stop_reason(key)):
                    engine.cancel_reasons[key] = stop  # pending again, at this iteration
                    break
                first = False
                began = engine.clock.monotonic()
                task, track = engine.settings_for(key)
                budget = max_iterations(engine, task, track)
                if resume is not None:  # left running by the last daemon: continue it
                    state = engine.states[key]
                    current = _Attempt(
                        resume.attempt_id, resume.number, resume.iteration, state, resume.runs
                    )
                    resume = None
                else:
                    current = _begin(engine, key, budget, failure)
                ran = await _run_in_tree(engine, runtime, key, current, failure)
                if ran is None:  # re-attached, its runs over: the next attempt takes it up
                    current = None
                    continue
                plan, outcome = ran
                current = _rebased(engine, key, current)
                result = outcome.result
                details = runtime.details(plan, outcome)
                if engine.states[key].status is not Status.IN_PROGRESS or engine.loop_queued(key):
                    # An order (skip, block, accept: each cancels the attempt) came while the
                    # attempt's end waited on a thread, which no cancellation interrupts: the
                    # order decides the task's fate, and the attempt is interrupted as if it had
                    # come a moment earlier (what it spent is recorded all the same). So too
                    # when a later order made it runnable again (skip, then retry): the state
                    # is that of the loop queued behind this one, not this attempt's to decide.
                    if details is not None:
                        engine.store.set_attempt_details(current.id, details)
                    await anyio.lowlevel.checkpoint_if_cancelled()
                if result.usage_limit is not None and plan.agent is not None:
                    # Not the task's doing: the attempt is interrupted, and not counted.
                    if details is not None:
                        engine.store.set_attempt_details(current.id, details)
                    runtime.after_attempt(key, result)
                    engine.cancel_reasons[key] = runtime.limit_hit(
                        key, plan.agent, result.usage_limit
                    )
                    break
                state, events = _conclude(
                    engine, key, current.started, result, current.iteration, budget, outcome.files
                )
                engine.store.finish_attempt(
                    current.id,
                    key,
                    state,
                    result.verdict.value,
                    result.reason,
                    result.exit_code,
                    *events,
                    details=details,
                )
                done, current = current, None
                _log_attempt(engine, key, done, budget, plan, outcome, began)
                engine.after_commit(key, state, events)
                if state.status is Status.BLOCKED and track.definition.settings.on_block == "pause":
                    engine.pause_track(key.track, f"task {key.id} is blocked (on_block: pause)")
                runtime.after_attempt(key, result)
                failure = result.failure_output + outcome.note
            else:
                await runtime.task_done(key)
    finally:
        _loop_ended(engine, key, current.id if current is not None else None)


def _begin(engine: Engine, key: TaskKey, budget: int, failure: str) -> _Attempt:
    """Record a new attempt (committed before anything runs) and give it the last failure."""
    state = engine.states[key]
    number = state.owned.attempts + 1
    iteration = state.iteration + 1
    started = state.with_owned(status=Status.IN_PROGRESS, last_attempt=iso(engine.clock.now()))
    event: EventSpec = (
        "task_started",
        key,
        {"attempt": number, "iteration": iteration, "max_iterations": budget},
    )
    attempt_id = engine.store.begin_attempt(
        key, started, number, iteration, engine.log_path(key, number), event
    )
    engine.after_commit(key, started, [event])
    write_failure_file(engine.failure_path(key), failure)
    return _Attempt(attempt_id, number, iteration, started)


async def _run_in_tree(
    engine: Engine,
    runtime: agentrun.AgentRuntime,
    key: TaskKey,
    current: _Attempt,
    failure: str,
) -> tuple[AttemptPlan, Outcome] | None:
    """Run the attempt in its working tree, where the track's runs go; git has its say.

    None: a re-attached attempt whose runs were over (:attr:`agentrun.Session.settled`), now
    cut short (:func:`_runs_over`)."""
    async with runtime.attempt(key, current.number, bool(current.reattach), current.id) as session:
        # Finding the tree may have waited on a thread, which no cancellation interrupts: one
        # that came meanwhile (the task removed from its file) takes effect here, before the
        # task's definition is read.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if session.settled:
            _runs_over(engine, key, current, session.notes)
            return None
        plan = plan_attempt(
            engine,
            key,
            current.id,
            current.number,
            current.iteration,
            failure,
            cwd=session.cwd,
            workspace=session.workspace,
            notes=session.notes,
        )
        if session.error is not None:
            plan = replace(plan, blocked=session.error)
        executor, plan = await _executor(engine, key, plan)
        where = _where(engine, executor)
        if where == LOCAL and plan.run_argv is not None:
            plan = _in_missing_workdir(engine, key, plan)
        recorder = _Recorder(engine, current.id, where)
        # A git workspace on a cluster: the runs work in checkouts of their own, not here.
        in_tree = plan.remote is None or plan.remote.checkout is None
        gate = session.gate if in_tree else None
        engine.watch_log(plan.log_path, True)
        try:
            result = await run_attempt(plan, executor, recorder, current.reattach, gate)
        finally:
            engine.watch_log(plan.log_path, False)
        return plan, await session.conclude(result, in_tree)


def _runs_over(engine: Engine, key: TaskKey, current: _Attempt, notes: tuple[str, ...]) -> None:
    """A re-attached attempt whose runs were over (its verified commit found at HEAD) is cut
    short by the last daemon's end, as a local attempt is by recovery: the attempt that follows,
    of the same number, finds the commit (recorded then, or run again). The records of its runs
    that daemon left open are closed with it, their exit status unknown (all ended before that
    commit was made: nothing of them runs on the cluster)."""
    placement = engine.placement
    if placement is not None:
        placement.close_runs(current.id)
    engine.store.interrupt_attempts([current.id], {}, INTERRUPTED)
    path = engine.log_path(key, current.number)
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as log_file:
        log_file.writelines(f"{line}\n" for line in notes)
    note_interrupted(path, INTERRUPTED)
    log.info("re-attached attempt's runs were over", task=str(key), attempt=current.number)


def _rebased(engine: Engine, key: TaskKey, current: _Attempt) -> _Attempt:
    """A retry order while the attempt ran gives a fresh budget, this attempt its first (so
    its record says too: the history reads as the log line and ``status`` did)."""
    fresh = engine.states[key].budget_base
    if fresh == current.started.budget_base:
        return current
    started = replace(current.started, budget_base=fresh)
    iteration = started.owned.attempts + 1 - fresh
    if iteration != current.iteration:
        engine.store.set_attempt_iteration(current.id, iteration)
    return replace(current, started=started, iteration=iteration)


def _log_attempt(
    engine: Engine,
    key: TaskKey,
    done: _Attempt,
    budget: int,
    plan: AttemptPlan,
    outcome: Outcome,
    began: float,
) -> None:
    result, usage = outcome.result, outcome.result.usage
    _attempt_log.get().info(
        "attempt",
        task=str(key),
        track=key.track,
        attempt=done.number,
        iteration=f"{done.iteration}/{budget}",
        verdict=result.verdict.value,
        reason=result.reason,
        duration=round(engine.clock.monotonic() - began, 3),
        agent=plan.agent,
        tokens=usage.tokens if usage else None,
        cost_usd=usage.cost_usd if usage else None,
        commit=outcome.commit,
    )


def _previous_failure(engine: Engine, key: TaskKey) -> str:
    """Resuming an interrupted task: the failure output its last attempt was given."""
    if engine.states[key].iteration == 0:
        return ""
    try:
        return Path(engine.failure_path(key)).read_text(encoding="utf-8")
    except OSError:
        return ""


def _loop_ended(engine: Engine, key: TaskKey, attempt_id: int | None) -> None:
    """A task's Ralph loop is over, however it ended: record it if it was cut short (its
    attempt ``attempt_id``, if one was under way), and free its slot. Synchronous on purpose:
    nothing here can be cancelled half-way. The slot frees even if recording fails: the
    error goes on to the runner (which contains it), and the track is not stuck."""
    try:
        _interrupted(engine, key, attempt_id)
    finally:
        engine.finished(key)


def _contain(engine: Engine, key: TaskKey, exc: Exception, superseded: bool) -> None:
    """A defect of orchestratord ended a task's Ralph loop (which recorded the loop's end):
    block the task, with the error as its reason, so that it is not run again and again.

    Not when orders cut the loop short and made the task runnable again meanwhile
    (``superseded``): the task's state is then that of the person's retry, and of the loop
    that began (or waits to begin) behind this one."""
    log.error("internal error in a task's Ralph loop", task=str(key), exc_info=exc)
    if engine.draining:
        return  # the daemon is stopping (perhaps the cause): the next start runs the task again
    if superseded:
        return
    state = engine.states.get(key)
    if state is None or key not in engine.graph or state.status not in _UNDECIDED:
        return  # gone from the schedule, or its fate already recorded
    reason = (
        f"internal error: {type(exc).__name__}: {exc} (a defect of orchestratord: the daemon's "
        "log has the traceback; set the task's status to pending to try again)"
    )
    engine.order(key, Event.ORDER_BLOCK, reason, by="daemon")


_UNDECIDED = frozenset({Status.PENDING, Status.IN_PROGRESS})


def _interrupted(engine: Engine, key: TaskKey, attempt_id: int | None) -> None:
    """Record a Ralph loop cut short; a task still in progress is pending again.

    Unless its attempt's runs go on on a cluster (the daemon stopping, detached): then the
    attempt stays running and the task in progress, for the next daemon to re-attach.
    """
    placement = engine.placement
    if attempt_id is not None and placement is not None and placement.left_running(attempt_id):
        log.info("left running on the cluster", task=str(key), attempt_id=attempt_id)
        return
    state = engine.states.get(key)
    reason = engine.cancel_reasons.get(key, STOPPED)
    # In progress again for a loop queued behind this one (a new order): that loop's state.
    still_running = (
        state is not None and state.status is Status.IN_PROGRESS and not engine.loop_queued(key)
    )
    resets = (
        {key: state.with_owned(status=transition(state.status, Event.INTERRUPT))}
        if still_running and state
        else {}
    )
    events: list[EventSpec] = [("attempt_interrupted", key, {"reason": reason})]
    if attempt_id is not None:
        events = engine.store.interrupt_attempts([attempt_id], resets, reason)
        cut = next((a for a in engine.store.attempts(key) if a.id == attempt_id), None)
        if cut is not None:
            note_interrupted(cut.log_path, reason)
    elif resets:
        engine.store.put_tasks(resets, events)
    if resets:
        engine.after_commit(key, resets[key], events)
