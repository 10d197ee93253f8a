"""One run as a Ray job: the entrypoint that carries it, and how to read what came back.

Pure functions, no I/O. The entrypoint runs the node-side wrapper
(:mod:`orchestrator.executors.raynode`, shipped compressed inside the entrypoint) with the
run's *payload*: argv, environment, working directory or git checkout, timeout, grace, stdin.

The job's log, as Ray returns it, holds Ray's own lines, then the wrapper's *start marker*,
the run's output, and the wrapper's *end marker* with the outcome. Both markers carry a random
nonce of the run (also in the job's metadata), so output cannot fake them. :func:`frame` cuts
the output out of the log; :func:`outcome` turns Ray's job status plus the end marker into a
:class:`~orchestrator.executors.base.RunState`.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .base import RunSpec, RunState
from .raynode import END, START

ENTRYPOINT_LIMIT = 120_000
"""Bytes: Linux limits one argument (the shell's ``-c`` string) to 128 KiB."""
META_RUN = "orchestratord_run"
META_NONCE = "orchestratord_nonce"
LOST_ERRORS = frozenset(
    {
        "JOB_SUPERVISOR_ACTOR_DIED",
        "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE",
        "JOB_SUPERVISOR_ACTOR_START_FAILURE",
        "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
        "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
    }
)
"""Ray error types meaning the job's supervisor (or its node) died: the outcome is unknown."""
_BOOT = (
    "import base64 as b,sys,zlib as z;"
    'exec(z.decompress(b.b64decode(sys.argv[1])),{"__name__":"__main__"})'
)


@cache
def wrapper_source() -> bytes:
    """The node-side wrapper, compressed and base64-encoded, as the entrypoint carries it."""
    source = resources.files("orchestrator.executors").joinpath("raynode.py").read_bytes()
    return base64.b64encode(zlib.compress(source, 9))


def branch_name(job: str) -> str:
    """The branch a git-workspace run's result is pushed to: named after the run."""
    return f"orchestratord/{job}"


def payload(
    spec: RunSpec,
    *,
    job: str,
    nonce: str,
    grace: float,
    cap: int,
    env_mode: str,
    work_root: str,
    stdin: bytes | None,
    files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """What the wrapper needs to run ``spec`` on a node.

    ``files``: environment variable -> content of the file it names on the daemon's host; the
    wrapper writes a copy on the node and points the variable at it.
    """
    data: dict[str, Any] = {
        "job": job,
        "nonce": nonce,
        "argv": list(spec.argv),
        "cwd": spec.cwd,
        "env": dict(spec.env),
        "env_mode": env_mode,
        "timeout": spec.timeout,
        "grace": grace,
        "cap": cap,
        "stdin": None if stdin is None else base64.b64encode(stdin).decode(),
        "files": {k: base64.b64encode(v).decode() for k, v in (files or {}).items()},
    }
    if spec.checkout is not None:
        data["checkout"] = {
            "repo": spec.checkout.repo,
            "ref": spec.checkout.ref,
            "push": spec.checkout.push,
        }
        data["work_root"] = work_root
        data["branch"] = branch_name(job)
    return data


def entrypoint(job: str, python: str, data: Mapping[str, Any]) -> str:
    """The shell command of the job: a readable label, then the wrapper and its payload."""
    packed = base64.b64encode(zlib.compress(json.dumps(data).encode(), 6)).decode()
    return f": orchestratord {job}; exec {python} -c '{_BOOT}' {wrapper_source().decode()} {packed}"


@dataclass(frozen=True, slots=True)
class Framed:
    """A job log cut into its parts (every part ``None``/empty while not there yet)."""

    start: Mapping[str, Any] | None
    """The start marker's data (``pid``, ``node``, ``t``)."""
    body: bytes
    """The run's output, as far as it is certain (a possible partial end marker held back)."""
    end: Mapping[str, Any] | None
    """The end marker's data (``state``, ``code``, ``reason``, ``t``, ``branch``, ``commit``)."""


def _marker(log: bytes, tag: bytes, begin: int) -> tuple[int, int, Mapping[str, Any]] | None:
    """Find a complete marker line: (where it starts, where its line ends, its data)."""
    at = log.find(tag, begin)
    if at < 0:
        return None
    newline = log.find(b"\n", at)
    if newline < 0:
        return None
    try:
        data = json.loads(log[at + len(tag) : newline])
    except ValueError:
        return None
    return (at, newline + 1, data) if isinstance(data, dict) else None


def frame(log: bytes, nonce: str) -> Framed:
    """Cut the run's output out of the whole job log."""
    start = _marker(log, f"{START} {nonce} ".encode(), 0)
    if start is None:
        return Framed(None, b"", None)
    begin = start[1]
    end_tag = f"{END} {nonce} ".encode()
    end = _marker(log, end_tag, begin)
    if end is not None:
        return Framed(start[2], log[begin : end[0]], end[2])
    at = log.find(end_tag, begin)
    if at >= 0:  # the end marker is there but its line is not complete yet
        return Framed(start[2], log[begin:at], None)
    body = log[begin:]
    # Hold back a tail that may be the beginning of the end marker.
    for size in range(min(len(end_tag) - 1, len(body)), 0, -1):
        if end_tag.startswith(body[-size:]):
            body = body[:-size]
            break
    return Framed(start[2], body, None)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: RunState
    exit_code: int | None = None
    reason: str | None = None


def _short(message: object, limit: int = 300) -> str:
    text = " ".join(str(message or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def outcome(job: Mapping[str, Any], end: Mapping[str, Any] | None, stop_requested: bool) -> Outcome:
    """How a run ended, from Ray's job info and the wrapper's end marker (if it wrote one).

    Only for a job in a terminal state (``SUCCEEDED``, ``FAILED``, ``STOPPED``).
    """
    status = job.get("status")
    error = job.get("error_type")
    message = _short(job.get("message"))
    if end is not None:
        state = {
            "exited": RunState.EXITED,
            "timed_out": RunState.TIMED_OUT,
            "cancelled": RunState.CANCELLED,
            "failed_to_start": RunState.FAILED_TO_START,
        }.get(str(end.get("state")), RunState.LOST)
        code = end.get("code")
        reason = end.get("reason")
        if state is RunState.LOST and error in LOST_ERRORS:
            reason = f"the job's supervisor or node died ({error}): {message}"
        elif state is RunState.LOST and not reason:
            reason = "the node-side wrapper ended without an outcome"
        return Outcome(state, code if isinstance(code, int) else None, reason)
    if status == "STOPPED" or stop_requested:
        why = "cancelled" if stop_requested else "stopped on the cluster (ray job stop)"
        return Outcome(RunState.CANCELLED, None, why)
    if error in LOST_ERRORS:
        reason = f"the job's supervisor or node died ({error}): {message}"
        return Outcome(RunState.LOST, None, reason)
    if error in {"RUNTIME_ENV_SETUP_FAILURE", "JOB_ENTRYPOINT_COMMAND_START_ERROR"}:
        return Outcome(RunState.FAILED_TO_START, None, f"the job could not start: {message}")
    if status == "FAILED":
        code = job.get("driver_exit_code")
        return Outcome(
            RunState.FAILED_TO_START,
            None,
            f"the node-side wrapper did not run (exit status {code}; is `python3` on the "
            f"node's PATH, or the `python` setting right?): {message}",
        )
    return Outcome(RunState.LOST, None, f"the job ended ({status}) without an outcome: {message}")
