"""Runs on a Ray cluster, through its Jobs REST API (async HTTP; Ray is never imported).

Each run is one Ray job whose ``submission_id`` is the daemon's job prefix plus the run id, so
submitting is idempotent and a restarted daemon finds its jobs again (:meth:`attach`). The job's
entrypoint runs the node-side wrapper (:mod:`orchestrator.executors.raynode`), which enforces
the timeout on the node, ends the command's process group on a stop or when its parent dies,
and brackets the output with markers holding the outcome (:mod:`orchestrator.executors.rayjob`).

A watcher task per run polls the job's status and log, appends new output to the run's
``log_path`` (the same per-attempt file as local runs) and records in a :class:`RunJournal` how
many bytes of output are in the file, and the file's size just after, so that after a restart
the output continues from there instead of being written twice: output written by a daemon
killed before it journaled it is found at the end of the file again (:func:`_recovered`).
Polling slows down while a log is large (the Jobs API returns a log whole; the wrapper caps it
on the node).

States: ``PENDING`` while Ray waits for capacity (a run waiting longer than its pending limit is
stopped and reported *stuck*, as ``FAILED_TO_START``); ``RUNNING`` once the wrapper has started;
then how the wrapper says the command ended. A job whose supervisor or node died, or one the
daemon cannot reach for ``unreachable_limit`` seconds, is ``LOST``. Before submitting, the
cluster's nodes are checked: a run no node could ever hold fails at once.

:meth:`detach` (the daemon stopping) leaves every run going on the cluster: :meth:`cancel` and
:meth:`aclose` then stop nothing, and the next daemon attaches again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, Self

import anyio
import anyio.to_thread
import httpx

from ..errors import ExecutorError
from . import rayjob
from .base import Capacity, RunInfo, RunSpec, RunState, unfit
from .runbook import RunBook

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
CAPACITY_TTL = 15.0
"""Seconds the cluster's node list is reused for capacity checks."""
LARGE_LOG = 256 << 10
"""A log this large (bytes) is polled proportionally less often, up to :data:`SLOWEST`."""
SLOWEST = 10.0
END_RETRIES = 5
"""Log fetches after the job ended while the wrapper's end marker is still not there."""
BACKSTOP = 30.0
"""Seconds past timeout + grace after which the daemon stops a run the node did not end."""


@dataclass(frozen=True, slots=True)
class RayCluster:
    """Where the Jobs API is and how this daemon uses it."""

    address: str
    """The dashboard / Jobs API URL, e.g. ``http://127.0.0.1:8265``."""
    token: str | None = None
    """Sent as ``Authorization: Bearer TOKEN`` (Ray token authentication, proxies)."""
    job_prefix: str = "orchestratord-"
    """Job ids are this plus the run id: one prefix per daemon sharing a cluster."""
    resources: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    """Reserved for a run that does not say (never nothing: Ray would not limit it)."""
    pending_limit: float | None = 1800.0
    poll_interval: float = 1.0
    unreachable_limit: float = 300.0
    python: str = "python3"
    env_mode: Literal["exact", "overlay"] = "exact"
    """``exact``: the run's environment is exactly the spec's; ``overlay``: the node's own
    environment with the variables the daemon adds (see docs/ray.md)."""
    check_capacity: bool = True
    work_root: str = "/tmp/orchestratord-runs"  # noqa: S108 - on the nodes, one dir per job
    """Where git workspaces are checked out on the nodes."""
    output_cap: int = 1 << 20
    """Bytes of a run's output streamed from the node; beyond it only the tail is kept."""
    ship_files: tuple[str, ...] = ("ORCHESTRATORD_FAILURE_FILE",)
    """Environment variables naming a file on the daemon's host: the file goes with the run
    and the variable names its copy on the node."""


class RunJournal(Protocol):
    """Remembers, across daemon restarts, how much of each run's output is in its log file:
    ``offset`` bytes of output, and the file's ``size`` right after they were written (None
    when not known)."""

    def load(self, run_id: str) -> tuple[int, int | None]: ...

    def save(self, run_id: str, offset: int, size: int | None) -> None: ...


class MemoryJournal:
    """A journal for one process (tests, tools); the daemon keeps its journal in the store."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[int, int | None]] = {}

    def load(self, run_id: str) -> tuple[int, int | None]:
        return self.marks.get(run_id, (0, None))

    def save(self, run_id: str, offset: int, size: int | None) -> None:
        self.marks[run_id] = (offset, size)


class _ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {' '.join(text.split())[:300]}")
        self.status = status
        self.text = text


@dataclass(eq=False, slots=True)
class _Run:
    spec: RunSpec
    job: str
    nonce: str
    info: RunInfo
    done: anyio.Event = field(default_factory=anyio.Event)
    wake: anyio.Event = field(default_factory=anyio.Event)
    appended: int = 0
    """Bytes of the run's output already in its log file."""
    journaled_size: int | None = None
    """Attached after a restart: the log file's size the journal holds, until the output that
    may have been written after it is looked for (:func:`_recovered`)."""
    queued: float = field(default_factory=time.monotonic)
    stop_requested: bool = False
    stop_sent: bool = False
    stop_state: RunState = RunState.CANCELLED
    stop_reason: str = "cancelled"
    end_misses: int = 0
    failing_since: float | None = None
    interval: float = 0.0

    @property
    def log_path(self) -> str:
        return self.spec.log_path


def _mono(wall: object) -> float | None:
    """A wall-clock time (seconds) as this process's monotonic time."""
    if not isinstance(wall, int | float):
        return None
    return time.monotonic() - (time.time() - float(wall))


def _signal_reason(code: int) -> str:
    import signal  # noqa: PLC0415

    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class RayExecutor(RunBook[_Run]):
    """Runs commands as Ray jobs (see the module docstring)."""

    name = "ray"
    _unknown_reason = "no such run in this executor (attach it after a daemon restart)"

    def __init__(
        self,
        cluster: RayCluster,
        *,
        kill_grace: float = 5.0,
        journal: RunJournal | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(kill_grace, BACKSTOP)
        self.cluster = cluster
        self._journal: RunJournal = journal or MemoryJournal()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._detached = False
        self._capacity: tuple[float, Capacity] | None = None

    # -- lifetime -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None or self._closing:
            raise ExecutorError("a RayExecutor can be entered only once")
        headers = {"Authorization": f"Bearer {self.cluster.token}"} if self.cluster.token else {}
        self._client = httpx.AsyncClient(
            base_url=self.cluster.address,
            headers=headers,
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=self._transport,
        )
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    def detach(self) -> None:
        """Leave every run going on the cluster: from now on nothing is stopped."""
        self._detached = True

    async def aclose(self) -> None:
        """Stop every unfinished run (unless detached); refuse new runs."""
        await self._close_starts()
        if not self._detached:
            await self._stop_all(self._request_stop)

    async def _release(self) -> None:
        assert self._client is not None
        with anyio.CancelScope(shield=True):
            await self._client.aclose()

    # -- the Executor protocol ------------------------------------------------------------

    async def submit(self, spec: RunSpec) -> RunInfo:
        """Submit the run as a job; return once the cluster has it (``PENDING``) or refused."""
        return await self._once(spec, attach=False)

    async def attach(self, spec: RunSpec) -> RunInfo:
        """The run's job, found on the cluster again (``LOST`` when it is not there)."""
        return await self._once(spec, attach=True)

    async def cancel(self, run_id: str, grace: float) -> RunInfo:
        """Stop the job: the wrapper ends the command's group (SIGTERM, grace, SIGKILL).

        The grace on the node is the executor's ``kill_grace``, at most the cluster's
        ``RAY_JOB_STOP_WAIT_TIME_S`` (after which Ray kills the job's processes itself).
        Detached, it stops nothing and returns the run as it is.
        """
        run = self._runs.get(run_id)
        if run is None:
            return self._unknown(run_id)
        if run.done.is_set() or self._detached:
            return run.info
        self._request_stop(run)
        await run.done.wait()
        return run.info

    async def capacity(self) -> Capacity:
        """The cluster's nodes that are up, with their total resources."""
        now = time.monotonic()
        if self._capacity is not None and now - self._capacity[0] < CAPACITY_TTL:
            return self._capacity[1]
        data = await self._json("GET", "/api/v0/nodes", params={"limit": 10_000})
        rows = data.get("data", {}).get("result", {}).get("result", [])
        nodes = tuple(
            {
                k: float(v)
                for k, v in (row.get("resources_total") or {}).items()
                if not k.startswith("node:") and k != "object_store_memory"
            }
            for row in rows
            if row.get("state") == "ALIVE"
        )
        capacity = Capacity(nodes, f"the Ray cluster at {self.cluster.address}")
        self._capacity = (now, capacity)
        return capacity

    async def sweep(self, keep: set[str]) -> list[str]:
        """Stop this daemon's unfinished jobs whose run is not in ``keep``; return their runs.

        After a crash between submitting a job and recording it, the job would run for
        nothing: the next daemon ends it.
        """
        jobs = await self._json("GET", "/api/jobs/")
        stopped: list[str] = []
        prefix = self.cluster.job_prefix
        for job in jobs if isinstance(jobs, list) else []:
            job_id = job.get("submission_id") or ""
            run_id = (job.get("metadata") or {}).get(rayjob.META_RUN)
            if not job_id.startswith(prefix) or job.get("status") in TERMINAL or not run_id:
                continue
            if run_id in keep or run_id in self._runs:
                continue
            with contextlib.suppress(httpx.HTTPError, _ApiError):
                await self._json("POST", f"/api/jobs/{job_id}/stop")
                stopped.append(run_id)
        return stopped

    # -- submitting and attaching ---------------------------------------------------------

    def job_id(self, run_id: str) -> str:
        return self.cluster.job_prefix + run_id

    async def _once(self, spec: RunSpec, *, attach: bool) -> RunInfo:
        existing = await self._started(spec.run_id)
        if existing is not None:
            return existing.info
        tg = self._open_group(spec.run_id)
        self._starting[spec.run_id] = started = anyio.Event()
        try:
            run = await (self._attach(spec) if attach else self._submit(spec))
        except BaseException:
            if not attach:  # cancelled while submitting: leave no job behind
                tg.start_soon(self._stop_quietly, self.job_id(spec.run_id))
            raise
        finally:
            del self._starting[spec.run_id]
            started.set()
        self._runs[spec.run_id] = run
        if run.done.is_set():
            self._remember(spec.run_id)
        else:
            tg.start_soon(self._watch, run)
        return run.info

    def _failed(
        self, spec: RunSpec, reason: str, state: RunState = RunState.FAILED_TO_START
    ) -> _Run:
        run = _Run(spec, self.job_id(spec.run_id), "", RunInfo(spec.run_id, state, reason=reason))
        _append(spec.log_path, reason.encode("utf-8", "replace") + b"\n")
        run.done.set()
        return run

    async def _submit(self, spec: RunSpec) -> _Run:
        if not spec.argv:
            return self._failed(spec, "no command given (argv is empty)")
        resources = dict(spec.resources or self.cluster.resources)
        if self.cluster.check_capacity:
            try:
                problem = unfit(resources, await self.capacity())
            except Exception:  # the submission below says what is wrong with the cluster
                problem = None
            if problem is not None:
                return self._failed(spec, problem)
        stdin: bytes | None = None
        if spec.stdin_path is not None:
            try:
                stdin = await anyio.Path(spec.stdin_path).read_bytes()
            except OSError as error:
                reason = f"cannot open stdin file {spec.stdin_path!r}: {error.strerror or error}"
                return self._failed(spec, reason)
        files = await _shipped(spec, self.cluster.ship_files)
        job = self.job_id(spec.run_id)
        nonce = secrets.token_hex(8)
        data = rayjob.payload(
            spec,
            job=job,
            nonce=nonce,
            grace=self._kill_grace,
            cap=self.cluster.output_cap,
            env_mode=self.cluster.env_mode,
            work_root=self.cluster.work_root,
            stdin=stdin,
            files=files,
        )
        command = rayjob.entrypoint(job, self.cluster.python, data)
        if len(command) > rayjob.ENTRYPOINT_LIMIT:
            return self._failed(
                spec,
                f"the run is too large for a Ray job ({len(command)} bytes of command, "
                f"environment and stdin; at most {rayjob.ENTRYPOINT_LIMIT}): pass large "
                "inputs through the shared workspace instead",
            )
        body: dict[str, Any] = {
            "entrypoint": command,
            "submission_id": job,
            "metadata": {rayjob.META_RUN: spec.run_id, rayjob.META_NONCE: nonce},
            **_entrypoint_resources(resources),
        }
        try:
            await self._json("POST", "/api/jobs/", json=body, retry=True)
        except _ApiError as error:
            if "already exists" in error.text:
                return await self._attach(spec)
            return self._failed(spec, f"the Ray cluster refused the job {job}: {error}")
        except httpx.HTTPError as error:
            return self._failed(spec, self._unreachable(error))
        run = _Run(spec, job, nonce, RunInfo(spec.run_id, RunState.PENDING))
        run.interval = self.cluster.poll_interval
        return run

    async def _attach(self, spec: RunSpec) -> _Run:
        job = self.job_id(spec.run_id)
        try:
            info = await self._json("GET", f"/api/jobs/{job}", retry=True)
        except _ApiError as error:
            if error.status == 404:
                reason = f"no job {job} on the Ray cluster any more (was it restarted?)"
                return self._failed(spec, reason, RunState.LOST)
            return self._failed(spec, f"cannot look up job {job}: {error}", RunState.LOST)
        except httpx.HTTPError as error:
            return self._failed(spec, self._unreachable(error), RunState.LOST)
        metadata = (info.get("metadata") if isinstance(info, dict) else None) or {}
        if metadata.get(rayjob.META_RUN) != spec.run_id or not metadata.get(rayjob.META_NONCE):
            reason = f"job {job} on the Ray cluster was not submitted for run {spec.run_id}"
            return self._failed(spec, reason, RunState.LOST)
        nonce = str(metadata[rayjob.META_NONCE])
        run = _Run(spec, job, nonce, RunInfo(spec.run_id, RunState.PENDING))
        run.appended, run.journaled_size = self._journal.load(spec.run_id)
        run.interval = self.cluster.poll_interval
        return run

    def _unreachable(self, error: BaseException) -> str:
        return (
            f"cannot reach the Ray Jobs API at {self.cluster.address} "
            f"(for {self.cluster.unreachable_limit:g} s): {error or type(error).__name__}"
        )

    # -- HTTP -----------------------------------------------------------------------------

    async def _json(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> Any:
        """One request; with ``retry``, connection failures are retried for the unreachable
        limit. Raises :class:`_ApiError` for an HTTP error status."""
        assert self._client is not None
        deadline = time.monotonic() + self.cluster.unreachable_limit
        delay = 0.2
        while True:
            try:
                response = await self._client.request(method, path, **kwargs)
                break
            except httpx.TransportError:
                if not retry or time.monotonic() + delay > deadline:
                    raise
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if response.status_code >= 400:
            raise _ApiError(response.status_code, response.text)
        try:
            return response.json()
        except ValueError:  # a proxy's error page, say
            raise _ApiError(
                response.status_code, f"not a Jobs API answer: {response.text}"
            ) from None

    # -- watching -------------------------------------------------------------------------

    def _request_stop(self, run: _Run) -> None:
        if not run.done.is_set():
            run.stop_requested = True
            run.wake.set()

    async def _watch(self, run: _Run) -> None:
        """Poll the run's job until it has ended (the run's one watcher)."""
        while not run.done.is_set():
            try:
                await self._poll(run)
                run.failing_since = None
            except Exception as error:
                # HTTP errors, answers of an unexpected shape: retried; lost after the limit.
                if isinstance(error, _ApiError) and error.status == 404:
                    reason = f"job {run.job} vanished from the cluster"
                    self._finish(run, RunState.LOST, None, reason)
                    break
                now = time.monotonic()
                run.failing_since = run.failing_since or now
                if now - run.failing_since >= self.cluster.unreachable_limit:
                    self._finish(run, RunState.LOST, None, self._unreachable(error))
                    break
            if run.done.is_set():
                break
            with anyio.move_on_after(run.interval):
                await run.wake.wait()
            run.wake = anyio.Event()

    async def _poll(self, run: _Run) -> None:
        if run.stop_requested and not run.stop_sent:
            await self._json("POST", f"/api/jobs/{run.job}/stop")
            run.stop_sent = True
        job = await self._json("GET", f"/api/jobs/{run.job}")
        status = job.get("status")
        if status == "PENDING":
            if run.stop_sent:
                # Nothing of it runs; Ray ends it the moment it would start.
                reason = f"{run.stop_reason} before it started"
                self._finish(run, run.stop_state, None, reason)
            else:
                self._check_pending(run, job)
            return
        raw = await self._json("GET", f"/api/jobs/{run.job}/logs")
        log = str(raw.get("logs") or "").encode("utf-8", "replace")
        run.interval = min(SLOWEST, self.cluster.poll_interval * max(1.0, len(log) / LARGE_LOG))
        framed = rayjob.frame(log, run.nonce)
        if len(framed.body) > run.appended and run.journaled_size is not None:
            path, journaled = run.spec.log_path, run.journaled_size
            run.appended = await anyio.to_thread.run_sync(
                _recovered, path, framed.body, run.appended, journaled
            )
            run.journaled_size = None
        if len(framed.body) > run.appended:
            size = await anyio.to_thread.run_sync(
                _append, run.spec.log_path, framed.body[run.appended :]
            )
            run.appended = len(framed.body)
            self._journal.save(run.spec.run_id, run.appended, size)
        if framed.start is not None and run.info.state is RunState.PENDING:
            run.info = replace(
                run.info,
                state=RunState.RUNNING,
                started=_mono(framed.start.get("t")),
                node=str(framed.start.get("node") or "") or None,
            )
        if framed.end is None and status not in TERMINAL:
            self._check_backstop(run)
            return
        if framed.end is None and run.end_misses < END_RETRIES and framed.start is not None:
            run.end_misses += 1  # the last output may still be on its way
            run.interval = min(run.interval, 0.2)
            return
        result = rayjob.outcome(job, framed.end, run.stop_requested)
        end = framed.end or {}
        started = _mono(end.get("started")) or run.info.started or _mono_ms(job.get("start_time"))
        why = result.reason
        code = result.exit_code
        if result.state is RunState.EXITED and code is not None and code < 0:
            why = _signal_reason(code)
        run.info = replace(
            run.info,
            started=started,
            branch=end.get("branch") if isinstance(end.get("branch"), str) else None,
            commit=end.get("commit") if isinstance(end.get("commit"), str) else None,
        )
        ended = _mono(end.get("t")) or _mono_ms(job.get("end_time"))
        self._finish(run, result.state, code, why, ended)

    def _check_pending(self, run: _Run, job: Mapping[str, Any]) -> None:
        limit = run.spec.pending_limit or self.cluster.pending_limit
        waited = time.monotonic() - run.queued
        if limit is None or waited < limit:
            return
        resources = dict(run.spec.resources or self.cluster.resources)
        wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()))
        self._finish(
            run,
            RunState.FAILED_TO_START,
            None,
            f"stuck: waited {waited:.0f} s (pending limit {limit:g} s) for a node with "
            f"{wanted} free on {self.cluster.address}; Ray says: "
            f"{' '.join(str(job.get('message') or '').split())}",
        )
        if self._tg is not None:  # the job must not start later
            self._tg.start_soon(self._stop_quietly, run.job)

    async def _stop_quietly(self, job: str) -> None:
        with contextlib.suppress(httpx.HTTPError, _ApiError, ValueError):
            await self._json("POST", f"/api/jobs/{job}/stop", retry=True)

    def _check_backstop(self, run: _Run) -> None:
        """The node enforces the timeout; should it not (a wedged node), the daemon does."""
        timeout, started = run.spec.timeout, run.info.started
        if timeout is None or started is None or run.stop_requested:
            return
        if time.monotonic() - started > timeout + self._kill_grace + BACKSTOP:
            run.stop_state = RunState.TIMED_OUT
            run.stop_reason = f"timed out after {timeout:g} s (ended by the daemon)"
            self._request_stop(run)

    def _finish(
        self,
        run: _Run,
        state: RunState,
        code: int | None,
        reason: str | None,
        ended: float | None = None,
    ) -> None:
        if run.done.is_set():
            return
        if state is RunState.CANCELLED and run.stop_state is not RunState.CANCELLED:
            state, reason = run.stop_state, run.stop_reason
        run.info = replace(
            run.info, state=state, exit_code=code, reason=reason, ended=ended or time.monotonic()
        )
        run.done.set()
        self._remember(run.spec.run_id)


async def _shipped(spec: RunSpec, names: tuple[str, ...]) -> dict[str, bytes]:
    """The daemon-side files the run's environment names, to recreate on the node."""
    files: dict[str, bytes] = {}
    for name in names:
        path = spec.env.get(name)
        if not path:
            continue
        with contextlib.suppress(OSError):
            files[name] = await anyio.Path(path).read_bytes()
    return files


def _mono_ms(wall_ms: object) -> float | None:
    return _mono(wall_ms / 1000) if isinstance(wall_ms, int | float) else None


def _entrypoint_resources(resources: Mapping[str, float]) -> dict[str, Any]:
    """Ray's entrypoint fields for ``CPU``, ``GPU``, ``memory`` and custom resources."""
    body: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for name, amount in resources.items():
        if name == "CPU":
            body["entrypoint_num_cpus"] = amount
        elif name == "GPU":
            body["entrypoint_num_gpus"] = amount
        elif name == "memory":
            body["entrypoint_memory"] = int(amount)
        else:
            custom[name] = amount
    if custom:
        body["entrypoint_resources"] = custom
    return body


def _append(path: str, data: bytes) -> int | None:
    """Append ``data`` to the file; its size just after (None: it could not be written)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    return None


def _recovered(path: str, body: bytes, appended: int, size: int) -> int:
    """Bytes of ``body`` in the log file after a restart: ``appended`` as journaled when the
    file was ``size`` bytes long, plus the output a daemon killed between writing it and
    journaling it had written: the file grew past ``size`` by exactly the output that follows.
    Anything else at the end of the file (the log trimmed or written to since) is not output
    already there, and the output goes on from ``appended`` as journaled."""
    try:
        with open(path, "rb") as handle:
            now = os.fstat(handle.fileno()).st_size
            extra = now - size
            if extra <= 0 or appended + extra > len(body):
                return appended
            handle.seek(now - extra)
            tail = handle.read(extra)
    except OSError:
        return appended
    return appended + extra if tail == body[appended : appended + extra] else appended
