"""A real ``orchestratord start`` in a child process, for signal and crash tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

DEADLINE = 20.0
SERVICE_MANAGER_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""Never inherited from the test run: a daemon under test must not talk to a real manager."""


def wait_for(what: Callable[[], bool], timeout: float = DEADLINE, step: float = 0.02) -> None:
    """Wait for a fact outside this process (a file, a pid); fail after ``timeout``."""
    end = time.monotonic() + timeout
    while not what():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def daemon(
    tracks: Path,
    state: Path,
    *args: str,
    log: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    **settings: str,
) -> subprocess.Popen[bytes]:
    """Start a daemon; ``settings`` become ``ORCHESTRATORD_*`` variables (graces default to 1 s).

    ``extra_env`` is added to its environment as it is (``NOTIFY_SOCKET``, ...).
    """
    env = clean_env()
    env.update({"ORCHESTRATORD_SHUTDOWN_GRACE": "1", "ORCHESTRATORD_KILL_GRACE": "1"})
    env.update({f"ORCHESTRATORD_{k.upper()}": v for k, v in settings.items()})
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "orchestrator", "start", "--tracks", str(tracks)]
    argv += ["--state-dir", str(state), "--no-progress", "--log-format", "json", *args]
    with open(log or state.parent / "daemon.log", "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def kill_when(tracks: Path, state: Path, ready: Callable[[], bool]) -> None:
    """Start a daemon and SIGKILL it once ``ready()`` (what it started is left behind)."""
    proc = daemon(tracks, state)
    try:
        wait_for(ready)
    finally:
        proc.kill()
        proc.wait(10)


def stop(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = DEADLINE
) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout)


def start_once(
    tracks: Path, state: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``orchestratord start --once`` as a child process, run to its end."""
    argv = [sys.executable, "-m", "orchestrator", "start", "--once", "--no-progress"]
    argv += ["--tracks", str(tracks), "--state-dir", str(state), *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=clean_env()
    )


def clean_env() -> dict[str, str]:
    """This test run's environment without settings or a service manager for the child."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ORCHESTRATORD_") and k not in SERVICE_MANAGER_ENV
    }


@contextlib.contextmanager
def ctrl_c_reaches_children() -> Iterator[None]:
    """Children started inside have SIGINT at its default, as a command run in a terminal.

    A test run started in the background by a shell without job control (``make test &``,
    ``nohup``) ignores SIGINT, and a child inherits an ignored signal: a Python child then
    never raises KeyboardInterrupt and a test that presses Ctrl-C on it waits in vain. A
    signal with a handler is back at its default in a child, so one is set for the while.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
