"""The executor interface: one async seam for local and remote runs.

A *run* is one command (an agent run or one verification command) with its environment,
working directory, timeout and log file. Executors never retry: a failed or lost run is
reported, and the orchestrator decides what to do with a new run id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


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
    """What a remote executor reserves for the run (``CPU``, ``memory``, custom)."""


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

    @property
    def succeeded(self) -> bool:
        return self.state is RunState.EXITED and self.exit_code == 0

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


class Executor(Protocol):
    """Where runs happen. Every method is safe to call from the daemon's event loop."""

    name: str

    async def submit(self, spec: RunSpec) -> RunInfo:
        """Start a run; return once it runs (or could not start). Idempotent on ``run_id``."""
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

    async def aclose(self) -> None: ...
