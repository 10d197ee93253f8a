"""Where each track's attempts run: this machine, or a Ray cluster.

The daemon keeps the local executor (the default) and one :class:`RayExecutor` per cluster
address, created the first time a track needs it and owned by a task in the daemon's task
group. A track's ``executor`` (in its queue file) chooses, else the config's ``executor``; the
config's ``[ray]`` block holds the cluster settings and a track's ``executor`` object overrides
them for that track.

What ties remote runs to the store lives here too: the journal of how much of each remote
run's output is in its log file, the place recorded for each run (``ray:ADDRESS``),
re-attaching the attempts that were running when the daemon last stopped, and detaching the
running ones when it stops (their jobs go on; the next daemon attaches again).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from . import gitwork
from .attempt import AttemptPlan, RemoteRun
from .config import Config, Settings
from .errors import ConfigError, GitError
from .executors.base import Checkout, Executor
from .executors.ray import RayCluster, RayExecutor
from .model import ExecutorChoice, Status, TaskKey
from .store import Store

if TYPE_CHECKING:
    from .daemon import Engine, Track

log = structlog.get_logger("orchestratord")

LOCAL = "local"
TOKEN_ENV = "ORCHESTRATORD_RAY_TOKEN"


@dataclass(frozen=True, slots=True)
class RayPlan:
    """The effective Ray settings of one track."""

    address: str
    resources: Mapping[str, float]
    pending_limit: float
    workspace: Literal["shared", "git"]
    repo: str | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Resume:
    """An attempt that was running when the daemon last stopped, to be re-attached."""

    attempt_id: int
    number: int
    iteration: int
    runs: frozenset[str]
    """Run ids submitted before the stop: they are attached to, never started again."""


class StoreJournal:
    """The :class:`~orchestrator.executors.ray.RunJournal` of the daemon: in its store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self, run_id: str) -> tuple[int, int | None]:
        return self.store.run_log_mark(run_id)

    def save(self, run_id: str, offset: int, size: int | None) -> None:
        self.store.set_run_log_mark(run_id, offset, size)


def ray_plan(settings: Settings, choice: ExecutorChoice | None) -> RayPlan | None:
    """A track's effective Ray settings: its ``executor`` over the config's ``[ray]``.

    ``None`` when the track runs on this machine. Resources are merged by name (the track's
    win); only those above zero are reserved.
    """
    kind = choice.kind if choice is not None else settings.executor
    if kind == LOCAL:
        return None
    ray = settings.ray
    track = choice or ExecutorChoice("ray")
    cpus = ray.cpus if track.cpus is None else track.cpus
    gpus = ray.gpus if track.gpus is None else track.gpus
    memory = ray.memory_mb if track.memory_mb is None else track.memory_mb
    resources: dict[str, float] = {"CPU": cpus, "GPU": gpus, "memory": float(memory << 20)}
    resources.update(ray.resources)
    resources.update(track.resources)
    return RayPlan(
        address=(track.address or ray.address).rstrip("/"),
        resources={k: v for k, v in resources.items() if v > 0},
        pending_limit=track.pending_limit or ray.pending_limit,
        workspace=track.workspace or ray.workspace,
        repo=track.repo or ray.repo,
        ref=track.ref or ray.ref,
    )


def job_prefix(cfg: Config) -> str:
    """Job ids of this daemon: configured, else derived from its host and state directory
    (two daemons sharing a cluster never share jobs)."""
    if cfg.settings.ray.job_prefix:
        return cfg.settings.ray.job_prefix
    tag = hashlib.sha256(f"{socket.gethostname()}:{cfg.state_dir}".encode()).hexdigest()[:8]
    return f"orchd-{tag}-"


def _token(cfg: Config, env: Mapping[str, str]) -> str | None:
    ray = cfg.settings.ray
    if ray.token:
        return ray.token
    if ray.token_file:
        base = cfg.config_file.parent if cfg.config_file else Path.cwd()
        path = base / ray.token_file
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except OSError as error:
            raise ConfigError(
                f"ray.token_file: cannot read {path}: {error.strerror or error}"
            ) from None
    return env.get(TOKEN_ENV) or None


class Placement:
    """The executors of one daemon, and the choice between them per track."""

    def __init__(
        self,
        cfg: Config,
        local: Executor,
        store: Store,
        tg: TaskGroup,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.local = local
        self.store = store
        self.journal = StoreJournal(store)
        self.detached = False
        self._tg = tg
        self._env = os.environ if env is None else env
        self._clusters: dict[str, RayExecutor] = {}
        self._lock = anyio.Lock()

    # -- choosing -------------------------------------------------------------------------

    def plan(self, track: Track) -> RayPlan | None:
        """The track's Ray settings, or ``None`` when it runs on this machine."""
        return ray_plan(self.cfg.settings, track.definition.settings.executor)

    async def place(self, track: Track, plan: AttemptPlan) -> tuple[Executor, AttemptPlan]:
        """The executor for an attempt of ``track``, and its plan with where it runs."""
        ray = self.plan(track)
        if ray is None:
            return self.local, plan
        try:
            executor = await self.cluster(ray.address)
        except ConfigError as error:  # the attempt fails with the reason; the daemon goes on
            return self.local, replace(plan, run_argv=None, run_error=str(error))
        remote = RemoteRun(resources=ray.resources, pending_limit=ray.pending_limit)
        if ray.workspace == "git":
            try:
                remote, cwd = await _git_workspace(Path(plan.cwd), ray, remote)
            except WorkspaceError as error:
                return executor, replace(plan, run_argv=None, run_error=str(error))
            plan = replace(plan, cwd=cwd)
        return executor, replace(plan, remote=remote)

    def sweep_soon(self, addresses: set[str], keep: set[str]) -> None:
        """:meth:`sweep`, in the background of the daemon."""
        self._tg.start_soon(self.sweep, addresses, keep)

    def locator(self, executor: Executor) -> str:
        """What the store records as where a run ran."""
        if isinstance(executor, RayExecutor):
            return f"ray:{executor.cluster.address}"
        return LOCAL

    async def cluster(self, address: str) -> RayExecutor:
        """The executor of the cluster at ``address`` (created on first use)."""
        async with self._lock:
            executor = self._clusters.get(address)
            if executor is None:
                executor = await self._tg.start(self._own, address)
                self._clusters[address] = executor
                if self.detached:
                    executor.detach()
            return executor

    async def _own(self, address: str, *, task_status: TaskStatus[RayExecutor]) -> None:
        ray = self.cfg.settings.ray
        cluster = RayCluster(
            address=address,
            token=_token(self.cfg, self._env),
            job_prefix=job_prefix(self.cfg),
            resources={"CPU": ray.cpus} if ray.cpus else {},
            pending_limit=ray.pending_limit,
            poll_interval=ray.poll_interval,
            unreachable_limit=ray.unreachable_limit,
            python=ray.python,
            env_mode=ray.env,
            check_capacity=ray.check_capacity,
            work_root=ray.work_root,
            output_cap=self.cfg.settings.log_max_bytes,
        )
        kill_grace = self.cfg.settings.kill_grace
        async with RayExecutor(cluster, kill_grace=kill_grace, journal=self.journal) as executor:
            task_status.started(executor)
            await anyio.sleep_forever()

    # -- the daemon stopping and starting again -------------------------------------------

    def detach(self) -> bool:
        """The daemon stops: remote runs go on (unless ``ray.detach_on_stop`` is false)."""
        if not self.cfg.settings.ray.detach_on_stop:
            return False
        self.detached = True
        for executor in self._clusters.values():
            executor.detach()
        return True

    def remote_keys(self, engine: Engine) -> list[TaskKey]:
        """Running tasks whose track runs on a cluster."""
        return [
            key
            for key in engine.running_keys()
            if key.track in engine.tracks and self.plan(engine.tracks[key.track]) is not None
        ]

    def left_running(self, attempt_id: int) -> bool:
        """Whether a cut-short attempt stays running for the next daemon (detached)."""
        return self.detached and attempt_id in self.store.remote_attempts()

    def close_runs(self, attempt_id: int) -> None:
        """Close the records of an attempt's remote runs that the last daemon left open, once
        they are known to be over and are not attached to again; their exit status unknown
        (as recovery closes a dead daemon's local ones). They go with the next commit."""
        for row in self.store.processes(attempt_id):
            if row.ended_at is None and row.executor != LOCAL:
                self.store.end_process(row.id, None)

    def resumable(self) -> dict[TaskKey, Resume]:
        """The attempts the last daemon left running on clusters."""
        found: dict[TaskKey, Resume] = {}
        remote = self.store.remote_attempts()
        for attempt in self.store.running_attempts():
            rows = remote.get(attempt.id)
            if not rows:
                continue
            runs = frozenset(row.run_id for row in rows if row.run_id)
            found[attempt.key] = Resume(attempt.id, attempt.number, attempt.iteration, runs)
        return found

    async def sweep(self, addresses: set[str], keep: set[str]) -> None:
        """Stop this daemon's jobs that no attempt will re-attach to (orphans of a crash)."""
        for address in sorted(addresses):
            try:
                stopped = await (await self.cluster(address)).sweep(keep)
            except Exception as error:
                log.warning("cannot look for orphaned jobs", cluster=address, error=str(error))
                continue
            if stopped:
                log.warning("stopped orphaned jobs", cluster=address, runs=stopped)


class WorkspaceError(Exception):
    """A git workspace cannot be set up for a track (a FAIL of the attempt, with this reason)."""


async def _git(cwd: Path, *args: str) -> str:
    try:
        return await anyio.to_thread.run_sync(partial(gitwork.out, cwd, *args))
    except GitError as error:
        raise WorkspaceError(" ".join(str(error).split())) from None


async def _git_workspace(workdir: Path, ray: RayPlan, remote: RemoteRun) -> tuple[RemoteRun, str]:
    """The checkout a git-workspace run gets, and the run's directory inside it."""
    try:
        found = await _git(workdir, "rev-parse", "--show-toplevel", "--show-prefix")
    except WorkspaceError as error:
        raise WorkspaceError(
            f'workspace "git" needs the track\'s workdir in a git repository: {error}'
        ) from None
    top, _, prefix = found.partition("\n")  # the prefix is empty at the top level
    repo = ray.repo or await _git(Path(top), "remote", "get-url", "origin")
    ref = ray.ref or await _git(Path(top), "rev-parse", "HEAD")
    cwd = prefix.strip().rstrip("/") or "."
    checkout = Checkout(repo=repo, ref=ref, push=True)
    return replace(remote, checkout=checkout, fetch_into=str(top)), cwd


async def reattach(
    engine: Engine, placement: Placement, launch: Callable[[TaskKey, Resume], None]
) -> None:
    """Resume the Ralph loops of the attempts left running on clusters (at start-up)."""
    resumes = placement.resumable()
    keep: set[str] = set()
    addresses = {
        plan.address
        for track in engine.tracks.values()
        if (plan := placement.plan(track)) is not None
    }
    for rows in placement.store.remote_attempts().values():
        addresses.update(row.executor.removeprefix("ray:") for row in rows)
    gone: list[int] = []
    for key, resume in resumes.items():
        state = engine.states.get(key)
        if key not in engine.defs or state is None or state.status is not Status.IN_PROGRESS:
            gone.append(resume.attempt_id)
            continue
        keep.update(resume.runs)
        engine.resuming(key)
        engine.journal("attempt_reattached", key, attempt=resume.number)
        log.info("re-attaching", task=str(key), attempt=resume.number, runs=sorted(resume.runs))
        launch(key, resume)
    if gone:  # their task is gone or was given an order: the runs are stopped below
        reason = "not resumed: its task is no longer defined or no longer in progress"
        engine.store.interrupt_attempts(gone, {}, reason)
    if addresses:
        placement.sweep_soon(addresses, keep)
