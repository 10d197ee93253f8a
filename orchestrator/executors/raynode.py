"""The node side of a Ray run: the wrapper a job's entrypoint runs on the node.

It is shipped inside the job's entrypoint (compressed source, see
:mod:`orchestrator.executors.rayjob`), so nodes need only Python 3.9+ and, for git
workspaces, ``git``; never orchestratord itself. Standard library only.

What it does, in order:

1. waits (at most 2 s) until Ray has written its own "Running entrypoint" line to the job's
   log, then writes the *start marker*; everything after it is the run's output;
2. prepares the workspace: the shared ``cwd`` as is, or a fresh git checkout of a repository
   at a ref (``cwd`` is then relative to the checkout);
3. runs the command as ``timeout -k GRACE TIMEOUT argv...`` (GNU coreutils), which puts the
   command in a process group of its own, ends the group with SIGTERM at the timeout and with
   SIGKILL ``GRACE`` seconds later; ``timeout`` itself gets SIGTERM if this wrapper dies
   (``PR_SET_PDEATHSIG``), so nothing outlives a killed wrapper by more than the grace;
4. copies the output through, as valid UTF-8 (Ray's log endpoint fails on anything else), up to
   ``cap`` bytes, then keeps only the last ``cap`` bytes and writes them at the end;
5. on SIGTERM (``ray job stop``) or when its parent dies: SIGTERM to the command's group,
   SIGKILL after the grace; when the command exits, whatever it left in its group gets SIGTERM;
6. with a git workspace and ``push``: commits what changed and pushes it to the branch named
   after the run;
7. writes the *end marker* with the outcome (state, exit status, reason, commit) and exits with
   the command's status.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Any

START = "\x1eorchestratord start"
END = "\x1eorchestratord end"
BANNER = "Running entrypoint for job"
"""The line Ray writes to a job's log when it starts the entrypoint (awaited, best effort)."""
BANNER_WAIT = 2.0
TICK = 0.1
RAY_VARIABLES = ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR", "PYTHONUNBUFFERED")
"""Set by Ray for the job driver; not passed on to the command in ``overlay`` mode."""


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(1, view)
        except InterruptedError:
            continue
        view = view[written:]


class _Output:
    """The command's output on its way to the job log: valid UTF-8, streamed up to a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.streamed = 0
        self.dropped = 0
        self.tail = bytearray()
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes, final: bool = False) -> None:
        clean = self.decoder.decode(data, final).encode("utf-8")
        room = self.cap - self.streamed
        if clean and room > 0:
            cut = min(room, len(clean))
            while 0 < cut < len(clean) and (clean[cut] & 0xC0) == 0x80:
                cut -= 1  # never cut a character in two
            _write(clean[:cut])
            self.streamed += cut
            clean = clean[cut:]
            if clean:  # the cap is reached: from now on only the tail is kept
                self.streamed = self.cap
        if clean:
            self.tail += clean
            cut = len(self.tail) - self.cap
            if cut > 0:
                while cut < len(self.tail) and (self.tail[cut] & 0xC0) == 0x80:
                    cut += 1
                self.dropped += cut
                del self.tail[:cut]

    def close(self) -> None:
        self.feed(b"", final=True)
        if self.tail:
            if self.dropped:
                note = f"\n[... {self.dropped} bytes of output dropped on the node ...]\n"
                _write(note.encode())
            _write(bytes(self.tail))


def _marker(kind: str, nonce: str, data: dict[str, Any]) -> None:
    _write(f"{kind} {nonce} {json.dumps(data, separators=(',', ':'))}\n".encode())


def _await_banner(job: str) -> None:
    """Let Ray's own line about the job reach the log before the run's output does."""
    try:
        path = os.readlink("/proc/self/fd/1")
    except OSError:
        return
    needle = f"{BANNER} {job}:".encode()
    deadline = time.monotonic() + BANNER_WAIT
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as log:
                if needle in log.read():
                    return
        except OSError:
            return
        time.sleep(0.01)


def _git(args: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def _git_error(what: str, result: subprocess.CompletedProcess[str]) -> str:
    detail = " ".join((result.stderr or result.stdout or "").split())[-400:]
    return f"{what}: git exited with status {result.returncode}: {detail}"


def _checkout(checkout: dict[str, Any], root: str, job: str) -> tuple[str | None, str | None]:
    """A fresh checkout of the run's repository at its ref: (directory, error)."""
    if shutil.which("git") is None:
        return None, "git workspace: `git` is not installed on this node"
    os.makedirs(root, exist_ok=True)
    directory = os.path.join(root, job)
    shutil.rmtree(directory, ignore_errors=True)
    repo, ref = checkout["repo"], checkout["ref"]
    result = _git(["clone", "--quiet", "--no-checkout", repo, directory])
    if result.returncode != 0:
        return None, _git_error(f"git workspace: cannot clone {repo}", result)
    result = _git(["fetch", "--quiet", "origin", ref], cwd=directory)
    if result.returncode != 0:
        error = _git_error(f"git workspace: {repo} has no ref {ref!r} (push it first)", result)
        return None, error
    result = _git(["checkout", "--quiet", "--detach", "FETCH_HEAD"], cwd=directory)
    if result.returncode != 0:
        return None, _git_error(f"git workspace: cannot check out {ref!r}", result)
    return directory, None


def _publish(directory: str, branch: str, job: str) -> tuple[str | None, str | None]:
    """Commit what the run changed and push it to ``branch``: (commit, error)."""
    identity = ["-c", "user.name=orchestratord", "-c", "user.email=orchestratord@localhost"]
    steps = [
        (["add", "-A"], "cannot stage the run's changes"),
        (
            [*identity, "commit", "--quiet", "--allow-empty", "-m", f"orchestratord run {job}"],
            "cannot commit the run's changes",
        ),
        (
            ["push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}"],
            f"cannot push the run's result to branch {branch}",
        ),
    ]
    for args, what in steps:
        result = _git(args, cwd=directory)
        if result.returncode != 0:
            return None, _git_error(what, result)
    result = _git(["rev-parse", "HEAD"], cwd=directory)
    if result.returncode != 0:
        return None, _git_error("cannot read the pushed commit", result)
    return result.stdout.strip(), None


def _why_not(argv: list[str], cwd: str, path: str) -> str | None:
    """Why the command cannot start, in the words the local executor uses; None if it can."""
    if not argv:
        return "no command given (argv is empty)"
    if not os.path.isdir(cwd):
        return f"working directory not found: {cwd}"
    command = argv[0]
    if os.sep not in command:
        if shutil.which(command, path=path) is None:
            return f"command not found: {command!r} (searched PATH={path})"
        return None
    target = os.path.join(cwd, command)
    if not os.path.exists(target):
        return f"command not found: {command!r}"
    if not os.path.isfile(target) or not os.access(target, os.X_OK):
        return f"not executable: {command!r}"
    return None


def _set_parent_death_signal() -> None:
    """In the child, before exec: SIGTERM when the wrapper (its parent) dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415 - only where it is used, in the child

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Stop:
    """Requests to stop, from signals (``ray job stop``) or from the parent's death."""

    def __init__(self) -> None:
        self.requested = False
        self.orphaned = False
        self.parent = os.getppid()

    def handler(self, signum: int, frame: object) -> None:
        self.requested = True

    def check_parent(self) -> None:
        if os.getppid() != self.parent:
            self.requested = self.orphaned = True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _leader_exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its group id stays ours)."""
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return result is not None


def _supervise(
    proc: subprocess.Popen[bytes], reader: int, output: _Output, stop: _Stop, grace: float
) -> bool:
    """Copy output until the command and its group are done; True if a stop was requested."""
    pgid = proc.pid  # ``timeout`` leads a process group of its own
    kill_at: float | None = None
    drain_until: float | None = None
    stopped = False
    open_pipe = True
    while open_pipe:
        ready, _, _ = select.select([reader], [], [], TICK)
        if ready:
            try:
                data = os.read(reader, 1 << 16)
            except BlockingIOError:
                data = b"-"
            if not data:
                open_pipe = False
                continue
            if data != b"-":
                output.feed(data)
        now = time.monotonic()
        stop.check_parent()
        if stop.requested and not stopped:
            stopped = True
            _signal_group(pgid, signal.SIGTERM)
            kill_at = now + grace
        if drain_until is None and _leader_exited(proc.pid):
            # What the command left running in its group ends now (as on the daemon's host).
            _signal_group(pgid, signal.SIGTERM)
            drain_until = now + grace
        deadline = min(t for t in (kill_at, drain_until, float("inf")) if t is not None)
        if now >= deadline:
            _signal_group(pgid, signal.SIGKILL)
            if drain_until is not None:
                break
    with contextlib.suppress(OSError):  # what is left in the pipe
        while data := os.read(reader, 1 << 16):
            output.feed(data)
    proc.wait()
    return stopped or stop.requested


def _outcome(
    code: int, stop: _Stop, stopped: bool, timeout: float | None, elapsed: float
) -> dict[str, Any]:
    if stop.orphaned:
        reason = "the job's supervisor died (the wrapper's parent process is gone)"
        return {"state": "lost", "code": code, "reason": reason}
    if stopped:
        return {"state": "cancelled", "code": code, "reason": "cancelled"}
    timed_out = timeout is not None and elapsed >= timeout and code in (124, -signal.SIGKILL)
    if timed_out:
        assert timeout is not None
        return {"state": "timed_out", "code": code, "reason": f"timed out after {timeout:g} s"}
    return {"state": "exited", "code": code, "reason": None}


def run(payload: dict[str, Any]) -> int:
    nonce, job = payload["nonce"], payload["job"]
    stop = _Stop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop.handler)
    _await_banner(job)
    _marker(START, nonce, {"pid": os.getpid(), "node": socket.gethostname(), "t": time.time()})
    end: dict[str, Any] = {}
    directory: str | None = None
    try:
        end = _run(payload, stop)
        directory = end.pop("directory", None)
    except Exception as error:  # an outcome even then: a node-side failure, in the log
        _write(f"\norchestratord: the node-side wrapper failed: {error!r}\n".encode())
        end = {"state": "lost", "reason": f"the node-side wrapper failed: {error!r}"}
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        end.setdefault("state", "lost")
        end["t"] = time.time()
        _marker(END, nonce, end)
    code = end.get("code")
    if end["state"] == "failed_to_start":
        return 127
    if not isinstance(code, int):
        return 1
    return code if code >= 0 else 128 - code


def _failed(reason: str, directory: str | None = None) -> dict[str, Any]:
    _write(reason.encode("utf-8", "replace") + b"\n")
    return {"state": "failed_to_start", "code": None, "reason": reason, "directory": directory}


def _run(payload: dict[str, Any], stop: _Stop) -> dict[str, Any]:
    argv: list[str] = payload["argv"]
    env: dict[str, str] = dict(payload["env"])
    if payload.get("env_mode") == "overlay":
        base = {k: v for k, v in os.environ.items() if k not in RAY_VARIABLES}
        env = {**base, **env}
    cwd: str = payload["cwd"]
    checkout = payload.get("checkout")
    directory: str | None = None
    if checkout is not None:
        directory, error = _checkout(checkout, payload["work_root"], payload["job"])
        if error is not None:
            return _failed(error)
        assert directory is not None
        cwd = os.path.normpath(os.path.join(directory, cwd))
    if stop.requested:
        return {"state": "cancelled", "code": None, "reason": "cancelled", "directory": directory}
    reason = _why_not(argv, cwd, env.get("PATH", os.defpath))
    if reason is not None:
        return _failed(reason, directory)
    timeout_cmd = shutil.which("timeout")
    if timeout_cmd is None:
        return _failed("the node has no `timeout` command (GNU coreutils)", directory)
    timeout: float | None = payload.get("timeout")
    grace = float(payload.get("grace", 5.0))
    limit = f"{timeout:g}s" if timeout else "0"
    command = [timeout_cmd, "-k", f"{grace:g}s", limit, *argv]
    stdin_data = payload.get("stdin")
    with contextlib.ExitStack() as stack:
        shipped = payload.get("files") or {}
        if shipped:  # files of the daemon's host the environment names: copies here
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="orchestratord-"))
            for number, (name, content) in enumerate(sorted(shipped.items())):
                copy = os.path.join(folder, f"{number}-{os.path.basename(env.get(name, name))}")
                with open(copy, "wb") as handle:
                    handle.write(base64.b64decode(content))
                env[name] = copy
        stdin: Any = subprocess.DEVNULL
        if stdin_data is not None:
            stdin = stack.enter_context(tempfile.TemporaryFile())
            stdin.write(base64.b64decode(stdin_data))
            stdin.seek(0)
        reader, writer = os.pipe()
        os.set_blocking(reader, False)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=writer,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_parent_death_signal,  # noqa: PLW1509 - single-threaded
            )
        except OSError as problem:
            os.close(reader)
            os.close(writer)
            return _failed(f"cannot start {argv[0]!r}: {problem.strerror or problem}", directory)
        os.close(writer)
        launched = time.time()
        output = _Output(int(payload.get("cap", 1 << 20)))
        try:
            stopped = _supervise(proc, reader, output, stop, grace)
        finally:
            os.close(reader)
            output.close()
    code = proc.returncode
    end = _outcome(code, stop, stopped, timeout, time.monotonic() - started)
    end.update(directory=directory, started=launched)
    if directory is not None and checkout is not None and checkout.get("push") and not stopped:
        commit, error = _publish(directory, payload["branch"], payload["job"])
        if error is not None:
            _write(f"\norchestratord: {error}\n".encode("utf-8", "replace"))
            end.update(state="lost", reason=f"the run's result was not pushed: {error}")
        else:
            end.update(branch=payload["branch"], commit=commit)
    return end


def main(argv: list[str]) -> int:
    payload = json.loads(zlib.decompress(base64.b64decode(argv[-1])))
    return run(payload)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
