"""One attempt: run the agent or command, then every verification command, then decide.

PASS only when the run exited 0, printed the completion promise (when the task has one) as
``<promise>TEXT</promise>``, passed the gate (in git: it changed files, and no guardrail
matched what it added), and every verification command exited 0 having run some test. A run
that prints ``<blocked>reason</blocked>`` is BLOCKED, and so is a guardrail hit. Anything else
is FAIL with a reason in words: the exit status, a timeout, a missing binary, a missing
promise, no changes, or which verification command failed (or ran no test) and the tail of its
output. An agent's structured output is read first (:mod:`agentoutput`): the promise and the
``<blocked>`` signal are looked for in its final text, and what it used is reported; a failed
run that reports the agent's usage limit says so (``usage_limit``).

Output goes to the attempt's log file, which is trimmed to its last ``log_max_bytes`` bytes
(the tail is what matters) and never read into memory beyond that. While a run goes on, the
daemon's log warden keeps the file under twice that size.

Remote attempts (a cluster; ``AttemptPlan.remote``) differ in three ways: each run reserves
resources; an attempt left running when the daemon stopped is resumed by running it again
with the same run ids, *attaching* to the runs submitted before (``reattach``) and writing
no header twice; with a git workspace the run pushes its result to a branch, the daemon
fetches it (:mod:`orchestrator.runbranch`), and the verification commands run on that commit.
The gate does not run in a git workspace: the changes are on the fetched branch, not in the
daemon's tree (see docs/ray.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import anyio

from . import agentoutput, procs, runbranch, strays
from .agentoutput import Usage
from .errors import unwritable
from .executors.base import Checkout, Executor, RunInfo, RunSpec, RunState
from .guardrails import NoTests
from .model import Command, TaskKey, Verdict
from .prompt import promise_tag

_BLOCKED = re.compile(rb"<blocked>(.*?)</blocked>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class RemoteRun:
    """How an attempt's runs are placed on a cluster (remote executors only)."""

    resources: Mapping[str, float] = field(default_factory=dict)
    pending_limit: float | None = None
    checkout: Checkout | None = None
    """Git workspace: the repository and ref every run starts from (``cwd`` is relative)."""
    fetch_into: str | None = None
    """Git workspace: the daemon's repository the run's branch is fetched into."""


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    key: TaskKey
    attempt_id: int
    number: int
    run_argv: tuple[str, ...] | None
    """None when no run can be built; ``run_error`` says why."""
    run_error: str | None
    cwd: str
    env: Mapping[str, str]
    """The environment of the verification commands."""
    timeout: float
    verify: tuple[Command, ...]
    verify_timeout: float
    promise: str | None
    log_path: str
    stdin_path: str | None = None
    failure_bytes: int = 4000
    kill_grace: float = 5.0
    log_max_bytes: int = 1_048_576
    what: str = "command"
    """``agent`` or ``command``: how the run is named in reasons."""
    run_env: Mapping[str, str] | None = None
    """The environment of the run, when it differs (an agent profile's ``env``)."""
    remote: RemoteRun | None = None
    """Where on a cluster the runs go; ``None`` for the local executor."""
    output_format: str = "text"
    """How the run's output is read: ``text`` or ``claude-json``."""
    usage_limit: tuple[re.Pattern[str], ...] = ()
    """Messages meaning the agent's usage limit is reached (looked for when a run fails)."""
    no_tests: NoTests | None = None
    """Recognises a verification run that ran no test."""
    blocked: str | None = None
    """The task cannot run at all and is blocked for this reason (a task for a person)."""
    notes: tuple[str, ...] = ()
    """Lines for the attempt's log before the run (which agent, which working tree)."""
    agent: str | None = None
    """The agent profile that runs (None for a command)."""


@dataclass(frozen=True, slots=True)
class AttemptResult:
    verdict: Verdict
    reason: str | None
    exit_code: int | None
    failure_output: str = ""
    """What the next attempt is told: the reason and the tail of the failing output."""
    branch: str | None = None
    """Git workspace: the local branch holding the run's changes (fetched)."""
    commit: str | None = None
    usage: Usage | None = None
    """What the run used, when the agent reported it."""
    usage_limit: str | None = None
    """The agent's own words when it reported that its usage limit is reached."""


Note = Callable[[str], None]
"""Writes a line to the attempt's log."""


class Gate(Protocol):
    """Checks what a successful run changed, before verification (git: changes, guardrails)."""

    @property
    def verified(self) -> str | None:
        """This attempt's PASS, verified and committed before the daemon stopped and not
        recorded (git: the commit): recorded now, nothing is run again. None: run it."""
        ...

    async def after_run(self, note: Note, what: str) -> AttemptResult | None:
        """None to go on to verification, or the attempt's verdict."""
        ...


class ProcessRecorder(Protocol):
    """Records each child in the store as soon as it runs, and when it ends."""

    def started(self, role: str, spec: RunSpec, info: RunInfo) -> int: ...

    def ended(self, record_id: int, info: RunInfo) -> None: ...


def command_argv(command: Command) -> tuple[str, ...]:
    return ("/bin/sh", "-c", command) if isinstance(command, str) else tuple(command)


def command_text(command: Command) -> str:
    return command if isinstance(command, str) else shlex.join(command)


class _Log:
    """The attempt's log file, opened once: the daemon's headers and the children's output.

    Children get their own descriptor from the executor (also appending); the daemon writes
    only between children, unbuffered, so the file reads in order.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            try:
                self.fd = os.open(path, flags, 0o644)
            except FileNotFoundError:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(path, flags, 0o644)
        except OSError as error:
            raise unwritable(path, error) from error

    def write(self, text: str) -> None:
        try:
            os.write(self.fd, text.encode("utf-8", "replace"))
        except OSError as error:
            raise unwritable(self.path, error) from error

    def line(self, text: str) -> None:
        """A :data:`Note`: ``text`` as a line of its own."""
        self.write(text if text.endswith("\n") else text + "\n")

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def after(self, needle: bytes) -> int | None:
        """Where the last copy of ``needle`` in the file ends (``None``: not there)."""
        data = os.pread(self.fd, self.size(), 0)
        at = data.rfind(needle)
        return None if at < 0 else at + len(needle)

    def header(self, text: str, resuming: bool) -> int:
        """Write a header line, unless a resumed attempt has it already; return where the
        output after it begins."""
        if resuming:
            found = self.after(text.encode("utf-8", "replace"))
            if found is not None:
                return found
        self.write(text)
        return self.size()

    def section(self, start: int, limit: int) -> bytes:
        """From ``start`` to the end, at most the last ``limit`` bytes."""
        size = self.size()
        if size < start:  # trimmed while running: the section start is gone
            start = 0
        begin = max(start, size - limit)
        return os.pread(self.fd, size - begin, begin)

    def close(self) -> None:
        os.close(self.fd)


INTERRUPTED_MARK = "--- interrupted"


def note_interrupted(path: str, reason: str) -> None:
    """End the log of an attempt cut short (an order, a stop, a killed daemon) with why, so its
    output is not taken for a whole run; the attempt that runs again under the same number
    writes its own header after it. One cut short before its run wrote that header (while its
    working tree was set up, say) says so: a log that ends with a note already, or is empty,
    had nothing from it. Best effort: the log may be gone."""
    with contextlib.suppress(OSError), open(path, "a+b") as log:
        size = log.seek(0, os.SEEK_END)
        log.seek(max(size - 4096, 0))
        lines = log.read().splitlines()
        before = not lines or lines[-1].startswith(INTERRUPTED_MARK.encode())
        when = " before its run began" if before else ""
        log.write(f"{INTERRUPTED_MARK}{when}: {reason}\n".encode("utf-8", "replace"))


def trim_log(path: str, limit: int) -> bool:
    """Keep only the last ``limit`` bytes of a log, marking what was dropped."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return False
    if size <= limit:
        return False
    with open(path, "r+b") as handle:
        handle.seek(size - limit)
        tail = handle.read(limit)
        handle.seek(0)
        handle.truncate()
        handle.write(f"[... {size - limit} earlier bytes dropped ...]\n".encode())
        handle.write(tail)
    return True


def tail_text(data: bytes, limit: int) -> str:
    text = data.decode("utf-8", "replace")
    if len(text) <= limit:
        return text
    return "[...]\n" + text[-limit:]


def _failure(reason: str, output: bytes, limit: int) -> str:
    body = tail_text(output, max(limit - len(reason) - 1, 0)) if limit else ""
    return f"{reason}\n{body}".rstrip() + "\n"


def _ended_reason(info: RunInfo, what: str, timeout: float) -> str:
    if info.state is RunState.FAILED_TO_START:
        return info.reason or f"the {what} could not start"
    if info.state is RunState.TIMED_OUT:
        return f"the {what} timed out after {timeout:g} s"
    if info.state is RunState.CANCELLED:
        return info.reason or f"the {what} was cancelled"
    if info.state is RunState.LOST:
        return info.reason or f"the {what} was lost (its node or supervisor died)"
    if info.exit_code is not None and info.exit_code < 0:
        return info.reason or f"the {what} was killed by signal {-info.exit_code}"
    return f"the {what} exited with status {info.exit_code}"


async def _run(
    plan: AttemptPlan,
    executor: Executor,
    recorder: ProcessRecorder,
    log: _Log,
    role: str,
    argv: tuple[str, ...],
    limit: float,
    reattach: frozenset[str] = frozenset(),
    checkout: Checkout | None = None,
) -> RunInfo:
    remote = plan.remote
    spec = RunSpec(
        run_id=f"a{plan.attempt_id}-{role.replace(' ', '')}",
        argv=argv,
        cwd=plan.cwd,
        env=plan.run_env if role == "run" and plan.run_env is not None else plan.env,
        log_path=plan.log_path,
        timeout=limit,
        stdin_path=plan.stdin_path if role == "run" else None,
        resources=remote.resources if remote is not None else {},
        checkout=checkout,
        pending_limit=remote.pending_limit if remote is not None else None,
    )
    if spec.run_id in reattach:
        info = await executor.attach(spec)
    else:
        info = await executor.submit(spec)
    record = recorder.started(role, spec, info)
    try:
        final = info if info.state.finished else await executor.wait(spec.run_id)
    except BaseException:
        with anyio.CancelScope(shield=True):
            final = await executor.cancel(spec.run_id, plan.kill_grace)
            if final.state.finished:  # else a remote run left going (the daemon stopping)
                recorder.ended(record, final)
                await _end_strays(plan, spec, log, role, final)
        raise
    recorder.ended(record, final)
    await _end_strays(plan, spec, log, role, final)
    return final


async def _end_strays(
    plan: AttemptPlan, spec: RunSpec, log: _Log, role: str, info: RunInfo
) -> None:
    """End what a local run left running outside its process group (:mod:`strays`), when
    anything still has the attempt's log open, and always after a run that was cut short: its
    clean-up did not run (a test fixture's server, its output elsewhere, whose test run was
    killed at its timeout), and the next attempt would find the port taken. Say so in the log.

    A run that exited by itself, even failing, had its clean-up: what it left with its output
    elsewhere (a build server such as Gradle's, which another attempt running meanwhile may
    be using) is ended when the daemon stops."""
    marker = spec.env.get(procs.LAUNCH_VAR)
    if plan.remote is not None or marker is None or not procs.ENVIRON_READABLE:
        return
    if not info.cut_short and strays.held_elsewhere(log.fd) is False:
        return
    ended = await anyio.to_thread.run_sync(strays.end, marker.__eq__, plan.kill_grace)
    if ended:
        name = plan.what if role == "run" else role.replace("verify", "verification command")
        pids = ("pids " if len(ended) > 1 else "pid ") + ", ".join(map(str, ended))
        log.write(f"--- ended what the {name} left running: {pids}\n")


async def run_attempt(
    plan: AttemptPlan,
    executor: Executor,
    recorder: ProcessRecorder,
    reattach: frozenset[str] = frozenset(),
    gate: Gate | None = None,
) -> AttemptResult:
    """Run one attempt to its verdict. Cancelling it ends its processes, then re-raises.

    ``reattach``: resuming an attempt after a daemon restart, the ids of the runs it had
    submitted (attached to, never started again). ``gate``: checks a successful run's changes
    before verification.
    """
    log = _Log(plan.log_path)
    resuming = bool(reattach)
    try:
        log.header(f"=== {plan.key} attempt {plan.number} ===\n", resuming)
        for line in plan.notes:
            log.header(f"{line}\n", resuming)
        return await _decide(plan, executor, recorder, log, reattach, gate)
    finally:
        oversized = log.size() > plan.log_max_bytes
        log.close()
        if oversized:
            trim_log(log.path, plan.log_max_bytes)


async def _decide(
    plan: AttemptPlan,
    executor: Executor,
    recorder: ProcessRecorder,
    log: _Log,
    reattach: frozenset[str],
    gate: Gate | None,
) -> AttemptResult:
    limit = plan.log_max_bytes
    resuming = bool(reattach)
    if gate is not None and gate.verified is not None:
        # Said in the verdict's reason too: the journal, the terminal, the board and the
        # notifications tell a PASS recorded from its commit from one that ran just now.
        said = (
            f"verified and committed as {gate.verified[:12]} before the daemon stopped;"
            " recorded now, not run again"
        )
        log.write(f"--- PASS: {said}\n")
        return AttemptResult(Verdict.PASS, said, 0)
    if plan.blocked is not None:
        log.write(f"--- BLOCKED: {plan.blocked}\n")
        return AttemptResult(Verdict.BLOCKED, plan.blocked, None, plan.blocked)
    if plan.run_argv is None:
        reason = plan.run_error or f"no {plan.what} to run"
        log.write(f"cannot run: {reason}\n")
        return AttemptResult(Verdict.FAIL, reason, None, _failure(reason, b"", plan.failure_bytes))
    start = log.header(f"$ {shlex.join(plan.run_argv)}\n", resuming)
    base = plan.remote.checkout if plan.remote is not None else None
    checkout = Checkout(base.repo, base.ref, push=True) if base is not None else None
    info = await _run(
        plan, executor, recorder, log, "run", plan.run_argv, plan.timeout, reattach, checkout
    )
    output = log.section(start, limit)
    report = agentoutput.read(plan.output_format, output)
    if report.usage is not None:
        log.write(f"--- {plan.what} used {report.usage.describe()}\n")
    result = _after_run(plan, info, output, report, log)
    branch: str | None = None
    if result is None and base is not None:
        try:
            branch = await _fetch_result(plan, info)
        except runbranch.RunBranchError as error:
            reason = str(error)
            log.write(f"--- {reason}\n")
            result = AttemptResult(
                Verdict.FAIL, reason, 0, _failure(reason, b"", plan.failure_bytes)
            )
        checkout = Checkout(base.repo, info.commit or base.ref)
    elif result is None and gate is not None:
        result = await gate.after_run(log.line, plan.what)
    if result is None:
        result = await _verify(plan, executor, recorder, log, reattach, checkout)
        if result.verdict is Verdict.PASS and base is not None:
            result = replace(result, branch=branch, commit=info.commit)
    return replace(result, usage=report.usage)


def _after_run(
    plan: AttemptPlan, info: RunInfo, output: bytes, report: agentoutput.Report, log: _Log
) -> AttemptResult | None:
    """The verdict the run itself decides (usage limit, blocked, failed, no promise), if any."""
    if plan.usage_limit and (not info.succeeded or report.is_error):
        message = agentoutput.limit_message(report, output, plan.usage_limit)
        if message is not None:
            reason = f"the {plan.what} reported its usage limit: {message}"
            log.write(f"--- {reason}\n")
            return AttemptResult(
                Verdict.FAIL, reason, info.exit_code, reason + "\n", usage_limit=message
            )
    text = report.text
    blocked = _BLOCKED.findall(text) if b"<blocked>" in text else []
    if blocked and info.state in (RunState.EXITED, RunState.TIMED_OUT):
        reason = " ".join(blocked[-1].decode("utf-8", "replace").split()) or "blocked"
        return AttemptResult(Verdict.BLOCKED, reason, info.exit_code, reason)
    if not info.succeeded or (report.is_error and report.structured):
        reason = _ended_reason(info, plan.what, plan.timeout)
        if info.succeeded:
            reason = f"the {plan.what} reported an error"
        log.write(f"--- {reason}\n")
        return AttemptResult(
            Verdict.FAIL, reason, info.exit_code, _failure(reason, output, plan.failure_bytes)
        )
    if plan.promise and promise_tag(plan.promise).encode() not in text:
        reason = f"the {plan.what} exited 0 but did not print {promise_tag(plan.promise)}"
        log.write(f"--- {reason}\n")
        return AttemptResult(Verdict.FAIL, reason, 0, _failure(reason, output, plan.failure_bytes))
    return None


async def _verify(
    plan: AttemptPlan,
    executor: Executor,
    recorder: ProcessRecorder,
    log: _Log,
    reattach: frozenset[str],
    checkout: Checkout | None,
) -> AttemptResult:
    limit = plan.log_max_bytes
    resuming = bool(reattach)
    total = len(plan.verify)
    for number, command in enumerate(plan.verify, start=1):
        text = command_text(command)
        start = log.header(f"=== verify {number}/{total}: {text} ===\n", resuming)
        role = f"verify {number}"
        vinfo = await _run(
            plan,
            executor,
            recorder,
            log,
            role,
            command_argv(command),
            plan.verify_timeout,
            reattach,
            checkout,
        )
        empty = None
        if plan.no_tests is not None and vinfo.state is RunState.EXITED:
            empty = plan.no_tests.found(log.section(start, limit))
        if vinfo.succeeded and empty is None:
            continue
        if empty is not None:
            ended = f"ran no tests ({empty!r})"
        else:
            ended = _ended_reason(vinfo, "verification", plan.verify_timeout).removeprefix(
                "the verification "
            )
        reason = f"verify {number}/{total} `{text}` {ended}"
        log.write(f"--- {reason}\n")
        output = log.section(start, limit)
        return AttemptResult(Verdict.FAIL, reason, 0, _failure(reason, output, plan.failure_bytes))
    log.write(f"--- PASS ({total} verification command{'s' if total != 1 else ''})\n")
    return AttemptResult(Verdict.PASS, None, 0)


async def _fetch_result(plan: AttemptPlan, info: RunInfo) -> str:
    """Git workspace: fetch the branch the run pushed into the daemon's repository."""
    remote = plan.remote
    assert remote is not None
    assert remote.checkout is not None
    if info.branch is None or info.commit is None:
        raise runbranch.RunBranchError(f"the {plan.what} exited 0 but pushed no result")
    if remote.fetch_into is None:
        return info.branch
    await runbranch.fetch(remote.fetch_into, remote.checkout.repo, info.branch, info.commit)
    return info.branch


def write_failure_file(path: str, text: str) -> None:
    """The previous failure output, for ``ORCHESTRATORD_FAILURE_FILE``; no failure, no file."""
    try:
        if not text:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        raise unwritable(path, error) from error
