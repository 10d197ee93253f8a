"""The control API's one definition: paths, requests, responses and events.

The daemon's server and the command-line client both use these models, so the two cannot
drift apart. Requests are strict (unknown keys are refused); responses ignore keys they do not
know, so an older client keeps working with a newer daemon. The status document is the
``status --json`` schema documented in ``docs/commands.md`` and versioned by
``schema_version``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VERSION = "v1"

STATUS = "/v1/status"
TASK = "/v1/task"
EXPLAIN = "/v1/explain"
BOARD = "/v1/board"
BOARD_MARKDOWN = "/v1/board.md"
LOG = "/v1/log"
EVENTS = "/v1/events"
ORDER = "/v1/order"
PAUSE = "/v1/pause"
RESUME = "/v1/resume"
RELOAD = "/v1/reload"
STOP = "/v1/stop"
PING = "/v1/ping"
METRICS = "/metrics"
WEB_BOARD = "/"

SOCKET_NAME = "control.sock"
TOKEN_NAME = "http.token"
INFO_NAME = "control.json"
EVENTS_LOG_NAME = "events.jsonl"

EVENT_TYPES: tuple[str, ...] = (
    "daemon_started",
    "daemon_stopping",
    "daemon_paused",
    "daemon_resumed",
    "task_started",
    "attempt_finished",
    "attempt_interrupted",
    "task_complete",
    "task_failed",
    "task_blocked",
    "task_skipped",
    "task_retry",
    "track_started",
    "track_complete",
    "track_paused",
    "track_resumed",
    "track_added",
    "track_removed",
    "queue_file_invalid",
    "queue_file_valid",
    "reload_plan",
    "attempt_reattached",
    "worktree_kept",
    "worktree_removed",
    "worktree_remade",
    "git_lock_removed",
    "git_lock_left",
    "budget_exceeded",
    "usage_limit",
    "usage_limit_reset",
    "config_reloaded",
    "config_invalid",
    "logs_pruned",
)
"""Every kind of event the daemon journals (``events.jsonl``, the SSE stream, webhooks)."""

ATTENTION_EVENTS: tuple[str, ...] = (
    "task_failed",
    "task_blocked",
    "track_complete",
    "queue_file_invalid",
    "budget_exceeded",
    "config_invalid",
    "daemon_stopping",
)
"""What notifications are sent for unless a hook lists its own events: what needs a person."""

Order = Literal["retry", "cancel", "skip"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# ---------------------------------------------------------------------- requests


class OrderRequest(_Request):
    """``retry``, ``cancel`` or ``skip`` one task."""

    ref: str = Field(min_length=1)
    order: Order


class PauseRequest(_Request):
    """Pause (or resume) one track, or the whole daemon when ``track`` is null."""

    track: str | None = None
    reason: str | None = None


class StopRequest(_Request):
    force: bool = False
    """Do not wait for running attempts: end them now (as a second SIGINT does)."""


# ---------------------------------------------------------------------- status document


class Counts(_Response):
    total: int
    pending: int
    in_progress: int
    complete: int
    blocked: int
    failed: int
    skipped: int


class TaskBrief(_Response):
    ref: str
    id: str
    priority: int | None = None
    summary: str | None = None


class RunningTask(TaskBrief):
    attempts: int
    """Attempts finished before the running one."""
    attempt: int
    """The number of the running attempt (``attempts + 1``)."""
    iteration: int | None = None
    """The running attempt's place in the current iteration budget (1-based)."""
    max_iterations: int | None = None
    started_at: str | None = None
    elapsed_seconds: float | None = None


class BlockedTask(TaskBrief):
    reason: str | None
    verdict: str | None = None


class FailedTask(TaskBrief):
    attempts: int
    reason: str | None
    verdict: str | None = None


class HeldTask(TaskBrief):
    """A pending task that waits (through dependencies or its track's trigger) on a failed or
    blocked task: it does not start until a person acts on that one."""

    waits_for: str
    """The failed or blocked task (the first found; ``explain`` names every one)."""
    waits_for_status: str


class Trigger(_Response):
    refs: list[str]
    holds: bool
    waiting_on: list[str]


class Cost(_Response):
    """What attempts cost, when the agent reports it (null until then)."""

    usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class Spend(_Response):
    """What the agents reported using (tokens, USD) over the attempts that reported it."""

    tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0


class Wait(_Response):
    """A track held until an agent's usage limit resets."""

    agent: str
    until: str
    reason: str


class UsageLimit(Wait):
    since: str | None = None
    tracks: list[str] = Field(default_factory=list)


class TrackStatus(_Response):
    name: str
    file: str | None
    loaded: bool = True
    """False: its file has errors and the daemon does not load it (only without a daemon)."""
    paused: bool
    counts: Counts
    trigger: Trigger | None
    ready_count: int
    next: list[TaskBrief]
    running: list[RunningTask]
    blocked: list[BlockedTask]
    failed: list[FailedTask]
    held: list[HeldTask] = Field(default_factory=list)
    spend: Spend = Field(default_factory=Spend)
    waiting: list[Wait] = Field(default_factory=list)


class DaemonInfo(_Response):
    running: bool
    source: Literal["daemon", "state", "files"] = "files"
    """Where the document comes from: the daemon, or (no daemon) the queue files together
    with the state database (``state``), or the queue files alone (``files``)."""
    pid: int | None = None
    version: str | None = None
    started_at: str | None = None
    paused: bool = False
    stopping: bool = False
    max_parallel: int | None = None
    running_attempts: int = 0
    http: str | None = None
    """The web board's address when the daemon serves HTTP."""
    unfinished: list[str] = Field(default_factory=list)
    """Without a daemon: tasks whose attempt the stopped daemon never ended (it was killed, or
    left the run on a cluster); the next start takes them over."""


class ProblemInfo(_Response):
    file: str
    path: str
    message: str
    severity: Literal["error", "warning"]


class StatusDocument(_Response):
    schema_version: int
    generated_at: str | None = None
    daemon: DaemonInfo
    totals: Counts
    tracks: list[TrackStatus]
    problems: list[ProblemInfo]
    spend: Spend = Field(default_factory=Spend)
    usage_limits: list[UsageLimit] = Field(default_factory=list)


# ---------------------------------------------------------------------- one task


class AttemptInfo(_Response):
    number: int
    iteration: int
    state: Literal["running", "finished", "interrupted"]
    started_at: str
    ended_at: str | None
    verdict: str | None
    reason: str | None
    exit_code: int | None
    log_path: str
    cost: Cost | None = None
    agent: str | None = None
    commit: str | None = None
    files_changed: list[str] | None = None
    saved_ref: str | None = None
    """Where a FAIL or BLOCKED attempt's changes were kept (a git ref)."""


class TaskDetail(_Response):
    ref: str
    track: str
    id: str
    status: str
    summary: str | None
    description: str | None
    priority: int | None
    dependencies: list[str]
    file: str | None
    attempts: int
    iteration: int
    max_iterations: int | None
    running: bool
    last_attempt: str | None
    completed_at: str | None
    passes: bool | None
    error: str | None
    verification_verdict: str | None
    history: list[AttemptInfo]
    explain: list[str]


class Explanation(_Response):
    ref: str
    lines: list[str]


# ---------------------------------------------------------------------- board


class Card(_Response):
    ref: str
    track: str
    id: str
    status: str
    summary: str | None = None
    priority: int | None = None
    attempts: int = 0
    iteration: int = 0
    """Finished attempts in the current iteration budget (``attempts`` less those before a
    retry order): the running attempt is ``attempts + 1``, at ``iteration + 1`` of the budget."""
    max_iterations: int | None = None
    verdict: str | None = None
    error: str | None = None


class BoardTrack(_Response):
    name: str
    loaded: bool = True
    """As the status document's."""
    held: int = 0
    """Pending tasks that wait on a failed or blocked task (the status document lists them)."""
    paused: bool
    counts: Counts
    trigger: Trigger | None


class BoardDocument(_Response):
    generated_at: str
    seq: int
    """The last event included: subscribe to events after it to stay current."""
    daemon: DaemonInfo
    columns: list[str]
    tracks: list[BoardTrack]
    cards: list[Card]


# ---------------------------------------------------------------------- results


class OrderResult(_Response):
    ref: str
    order: Order
    status: str
    """The task's status after the order."""
    message: str


class PauseResult(_Response):
    track: str | None
    paused: bool
    message: str


class ReloadResult(_Response):
    message: str
    problems: list[ProblemInfo]


class StopResult(_Response):
    message: str
    running: int
    grace: float


class Ping(_Response):
    pid: int
    version: str
    started_at: str
    http: str | None = None


class ErrorBody(_Response):
    error: str
    kind: str = "error"
    """``not_found``, ``bad_request``, ``refused``, ``unauthorized`` or ``error``."""


# ---------------------------------------------------------------------- events


class TaskState(_Response):
    """Where a task stands when its event is published (the web board moves cards by it)."""

    status: str
    attempts: int
    iteration: int = 0
    """As a card's: finished attempts in the current iteration budget."""
    verdict: str | None = None
    error: str | None = None


class Event(_Response):
    """One journaled event: a line of ``events.jsonl`` and one message of the SSE stream."""

    seq: int
    at: str
    type: str
    track: str | None = None
    task: str | None = None
    ref: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    text: str = ""
    """The event in words, as the terminal, the board and notifications say it."""
    task_state: TaskState | None = None


# ---------------------------------------------------------------------- addresses


def parse_address(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); loopback only unless allowed.

    Raises ValueError with a message saying what to write instead.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r}: write HOST:PORT, for example 127.0.0.1:8765")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number (0 picks a free one)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be between 0 and 65535")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ValueError(f"{text!r}: the host must be an IP address, such as 127.0.0.1") from None
    if not loopback and not allow_remote:
        raise ValueError(
            f"{text!r} is not a loopback address: the control API would be reachable from "
            "other machines. Use 127.0.0.1:PORT, or set http_allow_remote (flag "
            "--http-allow-remote) to accept it; every request then needs the token"
        )
    return host, port
