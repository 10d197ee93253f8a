"""Core values: task statuses, task keys and refs, task and track definitions.

Everything here is a frozen value without I/O. The queue-file boundary (``schema``) turns JSON
into these values; the graph, scheduler and daemon work only with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, NamedTuple

from .errors import RefError


class Status(StrEnum):
    """The status vocabulary written to queue files."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    BLOCKED = "blocked"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def done(self) -> bool:
        """Complete or skipped: dependents of this task may proceed."""
        return self is Status.COMPLETE or self is Status.SKIPPED


STATUS_ORDER: tuple[Status, ...] = tuple(Status)

FOR_A_PERSON = "marks this task for a person"
"""Words of the reason a task for a person (role ``manual``) is blocked with, so that advice
about a blocked task can tell it from one to fix and retry."""


class Verdict(StrEnum):
    """The outcome of one attempt."""

    PASS = "PASS"
    FAIL = "FAIL"
    BLOCKED = "BLOCKED"


class TaskKey(NamedTuple):
    """Names one task exactly: its track and its id (``track:ID``)."""

    track: str
    id: str

    def __str__(self) -> str:
        return f"{self.track}:{self.id}"


class TrackAll(NamedTuple):
    """A resolved ``track:*`` ref: every task of one track."""

    track: str

    def __str__(self) -> str:
        return f"{self.track}:*"


Target = TaskKey | TrackAll
"""What a dependency or trigger ref resolves to."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A ref as written in a file: ``ID``, ``track:ID`` or ``track:*``."""

    track: str | None
    id: str

    @property
    def is_all(self) -> bool:
        return self.id == "*"

    def __str__(self) -> str:
        return self.id if self.track is None else f"{self.track}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Ref:
        """Parse a ref; raise :class:`RefError` when it is empty or malformed."""
        stripped = text.strip()
        if not stripped:
            raise RefError("empty task ref; write ID, track:ID or track:*")
        track, sep, ident = stripped.partition(":")
        if not sep:
            if stripped == "*":
                raise RefError("'*' needs a track: write track:*")
            return cls(None, stripped)
        if not track or not ident or ":" in ident:
            raise RefError(f"malformed task ref {text!r}; write ID, track:ID or track:*")
        return cls(track, ident)


Command = str | tuple[str, ...]
"""A command: a string run by ``/bin/sh -c``, or an argv tuple run directly."""

OnBlock = Literal["continue", "pause"]

OWNED_FIELDS: tuple[str, ...] = (
    "status",
    "attempts",
    "last_attempt",
    "completed_at",
    "passes",
    "error",
    "verification_verdict",
    "files_actually_changed",
)
"""Task fields the daemon writes back. Everything else in a task belongs to the user."""


@dataclass(frozen=True, slots=True)
class Owned:
    """The daemon-owned fields of one task as they stand in a file (or in the store)."""

    status: Status = Status.PENDING
    attempts: int = 0
    last_attempt: str | None = None
    completed_at: str | None = None
    passes: bool | None = None
    error: str | None = None
    verification_verdict: str | None = None
    files_actually_changed: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class TaskDef:
    """One task as defined in a queue file."""

    key: TaskKey
    index: int
    """Position in the file's task list: the tie-breaker after priority."""
    priority: int
    owned: Owned = field(default_factory=Owned)
    description: str | None = None
    title: str | None = None
    file: str | None = None
    tests: tuple[str, ...] = ()
    deps: tuple[Ref, ...] = ()
    deps_field: str = "dependencies"
    max_iterations: int | None = None
    completion_promise: str | None = None
    agent: str | None = None
    type: str | None = None
    command: Command | None = None
    verify: tuple[Command, ...] | None = None
    timeout: float | None = None
    verify_timeout: float | None = None
    acceptance_criteria: tuple[str, ...] = ()
    allow_no_changes: bool = False
    paused: bool = False

    @property
    def status(self) -> Status:
        return self.owned.status

    @property
    def summary_line(self) -> str:
        """The shortest human description: title, else the description's first line."""
        text = self.title or self.description or ""
        return text.strip().splitlines()[0] if text.strip() else ""


Integration = Literal["merge", "branch"]


@dataclass(frozen=True, slots=True)
class TrackBudget:
    """A track's ``budget`` object: spending limits in USD and tokens (None: no limit)."""

    usd: float | None = None
    tokens: int | None = None
    task_usd: float | None = None
    task_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutorChoice:
    """The optional ``track.executor``: where a track's attempts run, and overrides of the
    config's ``[ray]`` settings for this track (``None``: the config's value)."""

    kind: Literal["local", "ray"]
    address: str | None = None
    cpus: float | None = None
    gpus: float | None = None
    memory_mb: int | None = None
    resources: tuple[tuple[str, float], ...] = ()
    pending_limit: float | None = None
    workspace: Literal["shared", "git"] | None = None
    repo: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class TrackSettings:
    """The optional ``track`` object of a queue file."""

    name: str | None = None
    start_after: tuple[Ref, ...] = ()
    concurrency: int = 1
    paused: bool = False
    agent: str | None = None
    workdir: str | None = None
    verify: tuple[Command, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    on_block: OnBlock = "continue"
    timeout: float | None = None
    verify_timeout: float | None = None
    max_iterations: int | None = None
    executor: ExecutorChoice | None = None
    integration: Integration | None = None
    budget: TrackBudget | None = None


@dataclass(frozen=True, slots=True)
class TrackDef:
    """One queue file: a named track and its tasks in file order."""

    name: str
    path: str
    """The file as the user named it (for messages)."""
    list_key: str
    """``features`` or ``tasks``: where the tasks live in the file."""
    tasks: tuple[TaskDef, ...]
    settings: TrackSettings = field(default_factory=TrackSettings)
    project: str | None = None

    def task_path(self, index: int) -> str:
        """The JSON location of the task at ``index``, e.g. ``features[3]``."""
        return f"{self.list_key}[{index}]"
