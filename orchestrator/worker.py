"""Track workers and the Ralph loop.

One :class:`TrackWorker` per track owns a task group in which that track's tasks run; stopping
the worker cancels them. :func:`run_task` is the Ralph loop for one task: attempt after attempt
until PASS, BLOCKED, or the iteration budget is spent, each attempt recorded in the store before
its process starts and its verdict recorded before anything acts on it. An attempt cut short
(the daemon stopping, a person's order, the track's file removed) is recorded as interrupted;
when nothing else decided the task's fate it is pending again, at the same iteration.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from . import procs
from .attempt import AttemptPlan, AttemptResult, command_argv, run_attempt, write_failure_file
from .clock import iso
from .daemon import Engine, Track
from .executors.base import RunInfo, RunSpec
from .model import Command, Status, TaskDef, TaskKey, Verdict
from .prompt import DEFAULT_TEMPLATE, PromptInput, build
from .states import TaskState
from .store import EventSpec

log = structlog.get_logger("orchestratord")


class TrackWorker:
    """Runs the tasks of one track, each in its own cancel scope."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._tg: TaskGroup | None = None
        self._scope = anyio.CancelScope()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()

    def launch(self, key: TaskKey) -> None:
        if self._tg is None:
            raise RuntimeError(f"worker of track {self.name!r} is not running")
        self._tg.start_soon(run_task, self.engine, key, name=f"task {key}")

    def stop(self) -> None:
        self._scope.cancel()


class _Recorder:
    """Records every child process in the store the moment it runs."""

    def __init__(self, engine: Engine, attempt_id: int) -> None:
        self.engine = engine
        self.attempt_id = attempt_id

    def started(self, role: str, spec: RunSpec, info: RunInfo) -> int:
        ticks = procs.start_ticks_now() if info.pid else None
        return self.engine.store.record_process(
            self.attempt_id, role, spec.argv, spec.cwd, info.pid, ticks, _boot_id()
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


def _verify(engine: Engine, task: TaskDef, track: Track) -> tuple[Command, ...]:
    if task.verify is not None:
        return task.verify
    if track.definition.settings.verify is not None:
        return track.definition.settings.verify
    return tuple(c if isinstance(c, str) else tuple(c) for c in engine.cfg.settings.defaults.verify)


def plan_attempt(
    engine: Engine, key: TaskKey, attempt_id: int, number: int, iteration: int, failure: str
) -> AttemptPlan:
    """Everything one attempt needs: what to run, where, with which limits."""
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
    if task.command is not None:
        run_argv = command_argv(task.command)
    else:
        what = "agent"
        name = task.agent if task.agent is not None else track.definition.settings.agent
        name = name or defaults.agent
        profile = settings.agents.get(name) if name else None
        if not name:
            run_error = (
                "the task has no `command` and no agent is configured: set `agent` on the task "
                "or its track, or `defaults.agent` in the config"
            )
        elif profile is None:
            known = ", ".join(sorted(settings.agents)) or "none"
            run_error = (
                f"unknown agent {name!r}: define [agents.{name}] in the config (known: {known})"
            )
        else:
            text = build(PromptInput(task, iteration, budget, failure), _template(engine))
            agent_env = dict(profile.env)
            timeout = timeout or profile.timeout
            if profile.prompt_via == "stdin":
                stdin_path = engine.task_file(key, f"attempt-{number}.prompt")
                Path(stdin_path).write_text(text, encoding="utf-8")
                run_argv = tuple(profile.argv)
            else:
                run_argv = tuple(arg.replace("{prompt}", text) for arg in profile.argv)
    return AttemptPlan(
        key=key,
        attempt_id=attempt_id,
        number=number,
        run_argv=run_argv,
        run_error=run_error,
        cwd=str(track.workdir),
        env=engine.child_env(key, number, env_extra),
        run_env=engine.child_env(key, number, {**agent_env, **env_extra}) if agent_env else None,
        timeout=timeout or defaults.timeout,
        verify=_verify(engine, task, track),
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
    )


def _template(engine: Engine) -> str:
    path = engine.cfg.settings.defaults.prompt_template
    if not path:
        return DEFAULT_TEMPLATE
    return Path(path).read_text(encoding="utf-8")


def _conclude(
    engine: Engine,
    key: TaskKey,
    started: TaskState,
    result: AttemptResult,
    iteration: int,
    budget: int,
) -> tuple[TaskState, list[EventSpec]]:
    now = iso(engine.clock.now())
    attempts = started.owned.attempts + 1
    finished: EventSpec = (
        "attempt_finished",
        key,
        {"attempt": attempts, "verdict": result.verdict.value, "reason": result.reason},
    )
    common = {"attempts": attempts, "verification_verdict": result.verdict.value}
    if result.verdict is Verdict.PASS:
        state = started.with_owned(
            status=Status.COMPLETE, completed_at=now, passes=True, error=None, **common
        )
        return state, [finished, ("task_complete", key, {"attempts": attempts})]
    if result.verdict is Verdict.BLOCKED:
        state = started.with_owned(
            status=Status.BLOCKED, passes=False, error=result.reason, **common
        )
        return state, [finished, ("task_blocked", key, {"reason": result.reason})]
    if iteration >= budget:
        state = started.with_owned(
            status=Status.FAILED, passes=False, error=result.reason, **common
        )
        return state, [
            finished,
            ("task_failed", key, {"reason": result.reason, "attempts": attempts}),
        ]
    state = started.with_owned(
        status=Status.IN_PROGRESS, passes=False, error=result.reason, **common
    )
    return state, [finished]


async def run_task(engine: Engine, key: TaskKey) -> None:
    """The Ralph loop of one task, from its first attempt to its verdict."""
    attempt_id: int | None = None
    started_at = engine.clock.monotonic()
    try:
        with anyio.CancelScope() as scope:
            engine.track_scope(key, scope)
            failure = _previous_failure(engine, key)
            while engine.states[key].status is Status.IN_PROGRESS:
                task, track = engine.settings_for(key)
                state = engine.states[key]
                number = state.owned.attempts + 1
                iteration = state.iteration + 1
                budget = max_iterations(engine, task, track)
                started = state.with_owned(
                    status=Status.IN_PROGRESS, last_attempt=iso(engine.clock.now())
                )
                log_path = engine.log_path(key, number)
                event: EventSpec = (
                    "task_started",
                    key,
                    {"attempt": number, "iteration": iteration, "max_iterations": budget},
                )
                attempt_id = engine.store.begin_attempt(
                    key, started, number, iteration, log_path, event
                )
                engine.after_commit(key, started, [event])
                write_failure_file(Path(engine.failure_path(key)), failure)
                plan = plan_attempt(engine, key, attempt_id, number, iteration, failure)
                engine.watch_log(plan.log_path, True)
                try:
                    result = await run_attempt(plan, engine.executor, _Recorder(engine, attempt_id))
                finally:
                    engine.watch_log(plan.log_path, False)
                fresh = engine.states[key].budget_base
                if fresh != started.budget_base:
                    # A retry order while the attempt ran: a fresh budget, this attempt its first.
                    started = replace(started, budget_base=fresh)
                    iteration = started.owned.attempts + 1 - fresh
                state, events = _conclude(engine, key, started, result, iteration, budget)
                engine.store.finish_attempt(
                    attempt_id,
                    key,
                    state,
                    result.verdict.value,
                    result.reason,
                    result.exit_code,
                    *events,
                )
                attempt_id = None
                log.info(
                    "attempt",
                    task=str(key),
                    track=key.track,
                    attempt=number,
                    iteration=f"{iteration}/{budget}",
                    verdict=result.verdict.value,
                    reason=result.reason,
                    duration=round(engine.clock.monotonic() - started_at, 3),
                )
                engine.after_commit(key, state, events)
                if state.status is Status.BLOCKED and track.definition.settings.on_block == "pause":
                    engine.pause_track(key.track, f"task {key.id} is blocked (on_block: pause)")
                failure = result.failure_output
                started_at = engine.clock.monotonic()
    finally:
        # Synchronous on purpose: nothing here can be cancelled half-way.
        _interrupted(engine, key, attempt_id)
        engine.finished(key)


def _previous_failure(engine: Engine, key: TaskKey) -> str:
    """Resuming an interrupted task: the failure output its last attempt was given."""
    if engine.states[key].iteration == 0:
        return ""
    try:
        return Path(engine.failure_path(key)).read_text(encoding="utf-8")
    except OSError:
        return ""


def _interrupted(engine: Engine, key: TaskKey, attempt_id: int | None) -> None:
    """Record a Ralph loop cut short; a task still in progress is pending again."""
    state = engine.states.get(key)
    reason = engine.cancel_reasons.get(key, "the daemon stopped during the attempt")
    still_running = state is not None and state.status is Status.IN_PROGRESS
    resets = {key: state.with_owned(status=Status.PENDING)} if still_running and state else {}
    if attempt_id is not None:
        engine.store.interrupt_attempts([attempt_id], resets, reason)
    elif resets:
        engine.store.put_tasks(resets)
    if resets:
        engine.after_commit(key, resets[key], [("attempt_interrupted", key, {"reason": reason})])
