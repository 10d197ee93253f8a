"""The executor interface: one async seam for local and remote runs.

A *run* is one command (an agent run or one verification command) with its environment,
working directory, timeout and log file. Executors never retry: a failed or lost run is
reported, and the orchestrator decides what to do with a new run id.

Local runs are child processes of the daemon (``pid``/``pgid`` set). Remote runs (a cluster)
queue for capacity (``PENDING``), have no local pid, survive a daemon restart and are found
again with :meth:`Executor.attach`; their output still lands in the run's ``log_path``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Checkout:
    """A workspace a remote executor prepares on its node: a fresh git checkout.

    The run's ``cwd`` is then relative to the checkout's root. With ``push``, whatever the run
    changed is committed and pushed to a branch named after the run
    (:attr:`RunInfo.branch`, :attr:`RunInfo.commit`).
    """

    repo: str
    """A URL (or path) every node can clone from and push to."""
    ref: str
    """Branch, tag or commit to check out."""
    push: bool = False


class RunState(StrEnum):
    PENDING = "pending"
    """Accepted but not started (waiting for capacity on a cluster)."""
    RUNNING = "running"
    EXITED = "exited"
    """Finished by itself; ``exit_code`` says how."""
    TIMED_OUT = "timed_out"
    """Ended by the executor after ``timeout`` seconds."""
    CANCELLED = "cancelled"
    """Ended on request (``cancel``)."""
    FAILED_TO_START = "failed_to_start"
    """Never ran: missing binary, bad working directory, no capacity that could ever fit."""
    LOST = "lost"
    """The node or supervisor running it died; its outcome is unknown."""

    @property
    def finished(self) -> bool:
        return self not in (RunState.PENDING, RunState.RUNNING)


@dataclass(frozen=True, slots=True)
class RunSpec:
    run_id: str
    """Unique per run; submitting the same id again returns the existing run."""
    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    """The complete environment of the child."""
    log_path: str
    """Output (stdout and stderr, interleaved) is appended to this file."""
    timeout: float | None = None
    stdin_path: str | None = None
    """A file to give the child as stdin; ``None`` means ``/dev/null``."""
    resources: Mapping[str, float] = field(default_factory=dict)
    """What a remote executor reserves for the run (``CPU``, ``GPU``, ``memory`` in bytes,
    custom resources such as ``agent_slot``); empty: the executor's defaults."""
    checkout: Checkout | None = None
    """Remote executors: run in a fresh git checkout instead of a shared ``cwd``."""
    pending_limit: float | None = None
    """Remote executors: seconds the run may wait for capacity before it is reported stuck."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    state: RunState
    pid: int | None = None
    pgid: int | None = None
    exit_code: int | None = None
    """The exit status; negative for a signal (``-9`` is SIGKILL), as in :mod:`subprocess`."""
    reason: str | None = None
    """Why a run did not exit by itself, or could not start, in words."""
    started: float | None = None
    """Monotonic time the process started."""
    ended: float | None = None
    """Monotonic time the run ended."""
    node: str | None = None
    """Where the run ran: ``None`` for this machine, else the remote node's name."""
    branch: str | None = None
    """Git checkouts with ``push``: the branch the run's result was pushed to."""
    commit: str | None = None
    """Git checkouts with ``push``: the commit at the head of :attr:`branch`."""

    @property
    def succeeded(self) -> bool:
        return self.state is RunState.EXITED and self.exit_code == 0

    @property
    def cut_short(self) -> bool:
        """Ended from outside (a timeout, an order, the daemon stopping, a signal), not by its
        own exit: whatever clean-up it had did not run."""
        if self.state is RunState.EXITED:
            return self.exit_code is not None and self.exit_code < 0
        return self.state in (RunState.TIMED_OUT, RunState.CANCELLED, RunState.LOST)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class Capacity:
    """What an executor's nodes offer at most: the total resources of each node that is up."""

    nodes: tuple[Mapping[str, float], ...]
    where: str = "this machine"


def _amounts(resources: Mapping[str, float]) -> str:
    def amount(name: str, value: float) -> str:
        if name == "memory":
            return f"memory={value / (1 << 20):g} MiB"
        return f"{name}={value:g}"

    return ", ".join(amount(k, v) for k, v in sorted(resources.items())) or "nothing"


def unfit(resources: Mapping[str, float], capacity: Capacity) -> str | None:
    """Why no node could ever run something asking for ``resources``; ``None`` if one could."""
    wanted = {k: v for k, v in resources.items() if v > 0}
    for node in capacity.nodes:
        if all(node.get(k, 0.0) >= v for k, v in wanted.items()):
            return None
    if not capacity.nodes:
        return f"{capacity.where} has no node that is up"
    shown = sorted(
        capacity.nodes,
        key=lambda node: -sum(1 for k, v in wanted.items() if node.get(k, 0.0) >= v),
    )[:3]
    offers = "; ".join(_amounts({k: node.get(k, 0.0) for k in wanted}) for node in shown)
    return (
        f"no node of {capacity.where} can ever run it: it asks for {_amounts(wanted)}, "
        f"the nodes offer at most: {offers}"
    )


class Executor(Protocol):
    """Where runs happen. Every method is safe to call from the daemon's event loop."""

    name: str

    async def submit(self, spec: RunSpec) -> RunInfo:
        """Start a run; return once it runs, is queued (remote) or could not start.

        Idempotent on ``run_id``: submitting an id again returns that run and starts nothing.
        """
        ...

    async def attach(self, spec: RunSpec) -> RunInfo:
        """Find a run submitted before a daemon restart again; never start it anew.

        ``LOST`` when the executor has no such run (local runs never outlive the daemon).
        """
        ...

    async def wait(self, run_id: str) -> RunInfo:
        """Wait until the run has finished (its timeout enforced) and return how it ended."""
        ...

    async def status(self, run_id: str) -> RunInfo: ...

    async def cancel(self, run_id: str, grace: float) -> RunInfo:
        """End the run's whole process tree: SIGTERM, ``grace`` seconds, then SIGKILL."""
        ...

    async def read_log(self, run_id: str, offset: int) -> tuple[bytes, int]:
        """Output from byte ``offset`` on, and the offset to continue from."""
        ...

    async def active(self) -> list[RunInfo]:
        """Runs not finished yet, for re-attaching after a daemon restart."""
        ...

    async def capacity(self) -> Capacity:
        """The largest runs it could ever take (see :func:`unfit`)."""
        ...

    async def aclose(self) -> None: ...
