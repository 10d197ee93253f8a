"""What the daemon adds around each agent attempt: its git tree, its budgets, usage limits.

One :class:`AgentRuntime` per engine (:func:`of`). For each attempt, :meth:`attempt` prepares
the track's working tree (:mod:`worktrees`) and the attempt's git side (:mod:`gitattempt`),
one attempt per tree at a time. After each attempt, :meth:`after_attempt` checks the budgets
(:mod:`budgets`): a crossing pauses the track and is announced. When an agent reports its usage
limit, :meth:`limit_hit` pauses every track whose pending work uses that agent until the reset
time; :func:`service` (a daemon service) resumes them then, by itself, and restores waits that
were under way when the daemon last stopped. A track paused this way runs no further attempt
of a task already running, nor the attempt of one that waits for the track's tree: that
task goes back to pending, at the same iteration.

When every task of a track is done, however that came (its last PASS, a skip or an accept, the
last undone task removed from its file, or while the daemon was stopped), its worktree is
removed once none of the track's Ralph loops runs any more, or kept and reported if it has
uncommitted changes.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from . import agentoutput, agents, budgets, eventtext, gitlocks, verification
from .attempt import AttemptPlan, AttemptResult, Gate
from .clock import iso
from .config import Settings
from .daemon import Engine
from .errors import GitError
from .gitattempt import GitAttempt, Outcome
from .guardrails import Guardrails, NoTests
from .model import TaskKey
from .recovery import DAEMON_ENDS
from .store import AttemptDetails, HoldRow, Spend
from .worktrees import Tree, Trees

if TYPE_CHECKING:
    from .supervisor import Runtime

log = structlog.get_logger("orchestratord")

_RUNTIMES: weakref.WeakKeyDictionary[Engine, AgentRuntime] = weakref.WeakKeyDictionary()
MAX_SLEEP = 60.0


def of(engine: Engine) -> AgentRuntime:
    """The runtime of an engine (made on first use)."""
    runtime = _RUNTIMES.get(engine)
    if runtime is None:
        runtime = _RUNTIMES[engine] = AgentRuntime(engine)
    return runtime


def _cleanup_wait(track: str) -> str:
    """What the daemon waits for while a finished track's worktree is to be cleaned up."""
    return f"worktree clean-up: {track}"


def guardrails_of(settings: Settings) -> Guardrails:
    guard = settings.guardrails
    return Guardrails.build(
        [*guard.patterns, *guard.extra_patterns], guard.exempt_marker, guard.ignore_paths
    )


@dataclass(slots=True)
class Session:
    """One attempt's working tree and git side (all None outside git)."""

    cwd: str | None = None
    notes: tuple[str, ...] = ()
    workspace: str = ""
    """What the prompt says about the tree."""
    error: str | None = None
    """The tree could not be prepared: the attempt is blocked with this reason."""
    git: GitAttempt | None = None
    commit: bool = True

    @property
    def gate(self) -> Gate | None:
        return self.git

    @property
    def settled(self) -> bool:
        """A re-attached attempt whose runs are over: its verified commit is at HEAD
        (:attr:`GitAttempt.settled`). It is taken up again as a new attempt, not run here."""
        return self.git is not None and self.git.settled is not None

    async def conclude(self, result: AttemptResult, in_tree: bool = True) -> Outcome:
        """``in_tree``: the runs worked in this tree, not in a checkout of their own (a git
        workspace on a cluster's node, whose changes arrive as a fetched branch): then what
        changed in this tree meanwhile is not theirs (a person's edits) and is left as it is,
        neither committed nor put aside."""
        if self.git is None:
            return Outcome(result)
        if not in_tree:
            self.git.leave()
            return Outcome(result)
        return await self.git.conclude(result, self.commit)


@dataclass(slots=True)
class Hold:
    """An agent waiting for its usage limit to reset."""

    agent: str
    since: datetime
    until: datetime
    reason: str
    tracks: set[str] = field(default_factory=set)
    """The tracks this wait paused (and will resume)."""

    def row(self) -> HoldRow:
        return HoldRow(
            self.agent, iso(self.since), iso(self.until), self.reason, tuple(sorted(self.tracks))
        )


class AgentRuntime:
    """Trees, guardrails, budgets and usage-limit waits of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        settings = engine.cfg.settings
        self.settings = settings
        self.trees = Trees(engine.cfg)
        self.guardrails = guardrails_of(settings)
        self.no_tests = NoTests.build(settings.guardrails.no_tests_patterns)
        self.holds: dict[str, Hold] = {}
        self.budget_paused: dict[str, str] = {}
        """Tracks paused by a budget crossing, with the reason."""
        self.seen: set[tuple[str, str, str, float]] = set()
        self._wake = anyio.Event()
        self.locks_reported = gitlocks.Reported()
        self._ending: set[str] = set()
        """Finished tracks whose worktree is to be cleaned up."""
        self._cleanups: TaskGroup | None = None
        """Where clean-ups wait for the loops of their track to end (see :func:`service`)."""
        engine.listeners.append(self._on_event)

    def _on_event(self, kind: str, subject: TaskKey | str | None, data: Mapping[str, Any]) -> None:
        if kind == "track_complete" and isinstance(subject, str):
            self._track_complete(subject)
        elif kind == "track_resumed" and isinstance(subject, str):
            # A person's resume (or ours): the track is no longer held by us.
            self.budget_paused.pop(subject, None)
            for hold in self.holds.values():
                hold.tracks.discard(subject)

    # ------------------------------------------------------------------ attempts

    @asynccontextmanager
    async def attempt(
        self, key: TaskKey, number: int, reattached: bool = False, attempt_id: int | None = None
    ) -> AsyncIterator[Session]:
        """The attempt's tree, held for the whole attempt. ``reattached``: an attempt the last
        daemon left running on a cluster, whose runs are attached to again (cut short by that
        daemon's end, as far as its git side is concerned). ``attempt_id``: its row in the
        store, where the commit of its PASS is recorded before git moves the branch."""
        engine = self.engine
        task, track = engine.settings_for(key)
        git = self.settings.git
        integration = track.definition.settings.integration or git.integration

        def workdirs() -> dict[str, Path]:
            return {name: t.workdir for name, t in engine.tracks.items()}

        while True:
            try:
                tree = await self.trees.prepare(key.track, track.workdir, workdirs, integration)
            except (GitError, OSError) as exc:
                yield Session(error=f"git: {exc}")
                return
            if tree is None:
                yield Session()
                return
            remade = self._report_remade(key.track, tree)
            waited = tree.lock.locked()
            await tree.lock.acquire()
            if self.trees.tree(key.track) is tree:
                break
            # Removed while this waited for it (the track's last task was done and its
            # worktree cleaned up), or replaced: the track's tree now, made again if need be.
            tree.lock.release()
        try:
            if waited and (stop := self.stop_reason(key)) is not None:
                # The track was held (a budget crossed, a usage limit, a pause) while this
                # waited for the tree another attempt held: this one does not start either;
                # the task is pending again, at the same iteration.
                engine.cancel_running(key, stop)
                await anyio.lowlevel.checkpoint()
            stamp = engine.clock.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            scratch = engine.cfg.state_dir / "git" / f"{key.track}.index"
            rows = [a for a in engine.store.attempts(key) if a.number == number]
            cut = [a for a in rows if a.state == "interrupted"]
            # Re-attached: the run attached to, whose PASS may have recorded its commit too.
            attached = [a for a in rows if reattached and a.id == attempt_id]
            attempt = GitAttempt(
                self.trees,
                tree,
                task,
                number,
                self.guardrails,
                scratch,
                stamp,
                resumed=bool(cut) or reattached,
                # Each time by its daemon's end (a kill, recovery's reason; or a stop), never by
                # an order, after which the person meant it to run again: a daemon's pid says
                # nothing of that (an order, then a restart, then a retry), nor which of the
                # cuts came after the commit.
                after_stop=bool(cut) and all(a.reason in DAEMON_ENDS for a in cut),
                reattached=reattached,
                intents={a.committing: a.verifies or "" for a in (*cut, *attached) if a.committing},
                verifies=self.verifies(key) or "",
                committing=self._committing(attempt_id),
            )
            try:
                notes = [*remade, *await attempt.begin()]
            except (GitError, OSError) as exc:
                self.report_locks(key, attempt)
                yield Session(error=f"git: {exc}")
                return
            self.report_locks(key, attempt)
            # What its run is verified against: the plan the worker builds next, without a
            # wait in between, reads the task's definition as it is now (a reload may have
            # changed it while git worked above; or removed it: the worker ends the attempt).
            attempt.verifies = self.verifies(key) or attempt.verifies
            yield Session(
                cwd=str(tree.cwd),
                notes=tuple(notes),
                workspace=agents.workspace_note(tree.branch, tree.own),
                git=attempt,
                commit=git.commit,
            )
        finally:
            tree.lock.release()

    def verifies(self, key: TaskKey) -> str | None:
        """What an attempt of ``key`` is verified against now (:func:`verification.fingerprint`):
        its verification commands and completion promise as its plan reads them, and the
        guardrails and no-tests patterns it is checked with. None: the task left its file."""
        engine = self.engine
        task, track = engine.defs.get(key), engine.tracks.get(key.track)
        if task is None or track is None:
            return None
        defaults = engine.cfg.settings.defaults.verify
        verify = verification.commands(task, track.definition.settings, defaults)
        return verification.fingerprint(
            verify, task.completion_promise, self.guardrails, self.no_tests
        )

    def _committing(self, attempt_id: int | None) -> Callable[[str, str], None] | None:
        """Records in the store the commit a PASS of the attempt is about to put on its branch
        (:attr:`GitAttempt.committing`)."""
        if attempt_id is None:
            return None
        store = self.engine.store
        return lambda commit, verifies: store.set_committing(attempt_id, commit, verifies)

    def _report_remade(self, track: str, tree: Tree) -> list[str]:
        """Journal that a half-made worktree was removed and made again (once); the note for
        the attempt's log."""
        what, tree.remade = tree.remade, None
        if what is None:
            return []
        self.engine.journal("worktree_remade", track, path=str(tree.root), reason=what)
        return [f"git: {what}"]

    def report_locks(self, key: TaskKey, attempt: GitAttempt) -> None:
        """Log and journal the git lock files found in an attempt's way: each removal, and a
        lock left in place once while it stays (the attempt's own log notes it every time)."""
        for found in self.locks_reported.new(attempt.locks):
            data = {"path": str(found.path), "reason": found.why}
            if found.removed:
                self.engine.journal("git_lock_removed", key.track, **data)
                log.warning("stale git lock file removed", task=str(key), **data)
            else:
                self.engine.journal("git_lock_left", key.track, **data)
                log.warning("git lock file left in place", task=str(key), **data)

    def stop_reason(self, key: TaskKey) -> str | None:
        """Why a running task must not start another attempt now: its track is held (a budget,
        a usage limit), or anything else holds it back (:meth:`Engine.held_back`)."""
        if key.track in self.budget_paused:
            return f"{self.budget_paused[key.track]}; the track is paused"
        for hold in self.holds.values():
            if key.track in hold.tracks:
                until = iso(hold.until)
                return f"waiting for the usage limit of agent {hold.agent!r} to reset ({until})"
        return self.engine.held_back(key)

    def details(self, plan: AttemptPlan, outcome: Outcome) -> AttemptDetails | None:
        """What the store records beyond the verdict; None when there is nothing."""
        usage = outcome.result.usage
        if plan.agent is None and usage is None and outcome.files is None:
            return None
        return AttemptDetails(
            agent=plan.agent,
            tokens_in=usage.tokens_in if usage else None,
            tokens_out=usage.tokens_out if usage else None,
            cost_usd=usage.cost_usd if usage else None,
            commit_id=outcome.commit,
            files_changed=outcome.files,
            saved_ref=outcome.saved_ref,
        )

    # ------------------------------------------------------------------ finished tracks

    def _track_complete(self, track: str) -> None:
        """Every task of ``track`` is done now, however that came (its last PASS, a skip or an
        accept, the last task left undone removed from the file): its worktree goes once no
        loop of the track runs any more."""
        self._ending.add(track)
        self._schedule_clean_up(track)

    def _schedule_clean_up(self, track: str, adopt: bool = False) -> None:
        """Clean ``track``'s worktree up once its loops have ended (one clean-up per track at a
        time). The daemon is not idle from now on until that is done (``--once`` does not end
        before it): the wait is noted here, not when the clean-up begins to run."""
        wait = _cleanup_wait(track)
        if self._cleanups is None or wait in self.engine.waiting:
            return  # (not served yet: the service's start finds it; or one is on its way)
        self.engine.waiting.add(wait)
        self._cleanups.start_soon(self._clean_up_after_loops, track, adopt)

    async def task_done(self, key: TaskKey) -> None:
        """After a task's Ralph loop that ended by itself: if that finished its track, the
        track's worktree is cleaned up now (the others wait for the loops to end)."""
        if key.track in self._ending:
            await self._clean_up(key.track)

    async def _clean_up_after_loops(self, track: str, adopt: bool) -> None:
        """Clean the worktree of a finished track up once none of its Ralph loops runs (a
        skipped attempt's ends when its processes have: up to ``kill_grace``), and again if the
        track finished once more meanwhile. ``adopt``: a worktree a daemon that stopped left,
        not known yet."""
        engine = self.engine
        try:
            while True:
                while engine.running.get(track):
                    await engine.wait_changed()
                if adopt:
                    adopt = False
                    await self._adopt(track)
                if track not in self._ending:
                    return
                await self._clean_up(track)
        finally:
            engine.waiting.discard(_cleanup_wait(track))
            engine.dispatch()  # idle now, if that was all

    async def _adopt(self, track: str) -> None:
        """Know the worktree a daemon that stopped left for ``track`` (if it is finished)."""
        done = self._finished(track)
        if done is None:
            return
        try:
            tree = await self.trees.existing(track, *done)
            if tree is not None:
                self._report_remade(track, tree)
        except (GitError, OSError) as exc:
            log.warning("worktree not removed", track=track, error=str(exc))
            self._ending.discard(track)

    def _finished(self, track: str) -> tuple[Path, str] | None:
        """The workdir and integration of ``track`` when every one of its tasks is done."""
        engine = self.engine
        found = engine.tracks.get(track)
        if found is None or not all(engine.graph.status(k).done for k in engine.graph.keys(track)):
            return None
        integration = found.definition.settings.integration or self.settings.git.integration
        return found.workdir, integration

    async def _clean_up(self, track: str) -> None:
        self._ending.discard(track)
        if self._finished(track) is None:
            return  # work came back meanwhile (a retry, a new task), or the track left
        engine = self.engine
        try:
            finished = await self.trees.finish(track)
        except (GitError, OSError) as exc:
            log.warning("worktree not removed", track=track, error=str(exc))
            return
        if finished is None:
            return
        path = str(finished.path)
        if finished.removed:
            engine.journal("worktree_removed", track, path=path, branch=finished.branch)
            log.info("worktree removed", track=track, path=path, branch=finished.branch)
            return
        data = {"path": path, "files": list(finished.files[: eventtext.FILES_LISTED])}
        engine.journal("worktree_kept", track, **data)
        log.warning(
            "worktree kept: it has uncommitted changes",
            track=track,
            path=path,
            files=len(finished.files),
        )

    async def run_cleanups(self) -> None:
        """Clean up the worktrees of finished tracks (those a daemon that stopped left too)."""
        try:
            async with anyio.create_task_group() as tg:
                self._cleanups = tg
                for track in list(self.engine.tracks):
                    if self._finished(track) is not None:
                        self._ending.add(track)
                        self._schedule_clean_up(track, adopt=True)
                await anyio.sleep_forever()
        finally:
            self._cleanups = None

    # ------------------------------------------------------------------ budgets

    def after_attempt(self, key: TaskKey, result: AttemptResult) -> None:
        """Check the budgets once an attempt that used something has ended."""
        if result.usage is None:
            return
        engine = self.engine
        # The track's settings, also for a task (or track) that left its file meanwhile: what
        # the attempt spent counts all the same.
        track = engine.tracks.get(key.track) or engine.removed.get(key.track)
        own = track.definition.settings.budget if track is not None else None
        applicable = budgets.limits(self.settings.budgets, own)
        if not applicable:
            return
        now = engine.clock.now().astimezone(UTC)
        day = now.strftime("%Y-%m-%d")
        since = iso(now.replace(hour=0, minute=0, second=0, microsecond=0))
        store = engine.store

        def spend(scope: budgets.Scope) -> Spend:
            if scope == "task":
                return store.spend(track=key.track, task_id=key.id)
            if scope == "track":
                return store.spend(track=key.track)
            return store.spend(since=since)

        for crossing in budgets.crossings(key, day, applicable, spend, self.seen):
            reason = crossing.describe()
            engine.journal("budget_exceeded", key, **crossing.as_data())
            log.warning("budget exceeded", task=str(key), reason=reason)
            names = list(engine.tracks) if crossing.scope == "day" else [key.track]
            for name in names:
                if not engine.graph.track_paused(name):
                    engine.pause_track(name, reason)
                    self.budget_paused[name] = reason

    # ------------------------------------------------------------------ usage limits

    def tracks_using(self, agent: str) -> set[str]:
        """Tracks with work left that runs ``agent``."""
        engine = self.engine
        out: set[str] = set()
        for name, track in engine.tracks.items():
            for task in track.definition.tasks:
                state = engine.states.get(task.key)
                if task.command is not None or (state is not None and state.status.done):
                    continue
                choice = agents.choose(task, track.definition.settings, self.settings)
                if choice.profile is not None and choice.profile.name == agent:
                    out.add(name)
                    break
        return out

    def limit_hit(self, key: TaskKey, agent: str, message: str) -> str:
        """An agent reported its usage limit: hold its tracks until the reset. The reason."""
        engine = self.engine
        now = engine.clock.now()
        until = agentoutput.reset_time(message, now)
        if until is None or until <= now:
            found = agents.profile(agent, self.settings)
            wait = found.usage_limit_wait if found is not None else 1800.0
            until = now + timedelta(seconds=wait)
        hold = self.holds.get(agent)
        if hold is None:
            hold = self.holds[agent] = Hold(agent, now, until, message)
        else:
            hold.until, hold.reason = max(hold.until, until), message
        pause = f"usage limit of agent {agent!r} reached; waiting until {iso(hold.until)}"
        for name in sorted(self.tracks_using(agent) | {key.track}):
            if not engine.graph.track_paused(name):
                engine.pause_track(name, pause)
                hold.tracks.add(name)
        data = {
            "agent": agent,
            "until": iso(hold.until),
            "message": message,
            "tracks": sorted(hold.tracks),
        }
        engine.waiting.add(f"usage limit: {agent}")
        engine.store.put_hold(hold.row(), ("usage_limit", key, data))
        engine.announce("usage_limit", key, **data)
        log.warning("usage limit reached", agent=agent, task=str(key), until=iso(hold.until))
        self._wake.set()
        return f"the usage limit of agent {agent!r} was reached; waiting until {iso(hold.until)}"

    def _release(self, hold: Hold) -> None:
        engine = self.engine
        self.holds.pop(hold.agent, None)
        resumed = []
        for name in sorted(hold.tracks):
            held_elsewhere = any(name in other.tracks for other in self.holds.values())
            if held_elsewhere or name in self.budget_paused or name not in engine.tracks:
                continue
            if engine.graph.track_paused(name):
                resumed.append(name)
        data = {"agent": hold.agent, "tracks": resumed}
        engine.store.drop_hold(hold.agent, ("usage_limit_reset", None, data))
        engine.announce("usage_limit_reset", None, **data)
        log.info("usage limit reset", agent=hold.agent, tracks=resumed)
        engine.waiting.discard(f"usage limit: {hold.agent}")
        for name in resumed:
            engine.resume_track(name)
        engine.dispatch()  # idle again if nothing resumed

    def restore(self) -> None:
        """Waits recorded by a daemon that stopped during them go on (or end, if over)."""
        engine = self.engine
        now = engine.clock.now()
        for row in engine.store.holds():
            until = datetime.fromisoformat(row.until)
            hold = Hold(row.agent, datetime.fromisoformat(row.since), until, row.reason)
            self.holds[row.agent] = hold
            engine.waiting.add(f"usage limit: {row.agent}")
            if until <= now:
                continue  # released by the service's first pass
            pause = f"usage limit of agent {row.agent!r} reached; waiting until {row.until}"
            for name in row.tracks:
                if name in engine.tracks and not engine.graph.track_paused(name):
                    engine.pause_track(name, pause)
                    hold.tracks.add(name)

    async def run_timers(self) -> None:
        """Resume held tracks when their agent's limit resets (re-checking the clock)."""
        clock = self.engine.clock
        while True:
            now = clock.now()
            for hold in [h for h in self.holds.values() if h.until <= now]:
                self._release(hold)
            delay = math.inf
            if self.holds:
                soonest = min(h.until for h in self.holds.values())
                delay = min(max((soonest - now).total_seconds(), 0.05), MAX_SLEEP)
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()

    def status(self) -> dict[str, Any]:
        """For status views: what waits, and why."""
        return {
            "usage_limits": [
                {
                    "agent": h.agent,
                    "until": iso(h.until),
                    "reason": h.reason,
                    "tracks": sorted(h.tracks),
                }
                for h in self.holds.values()
            ],
            "budget_paused": dict(self.budget_paused),
        }


async def service(
    rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """The daemon service that ends usage-limit waits (``supervisor.Service``)."""
    runtime = of(rt.engine)
    runtime.restore()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.run_cleanups)
        task_status.started()
        await runtime.run_timers()
