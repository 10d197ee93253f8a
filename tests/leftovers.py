"""Processes a test run left behind: found and ended when the run ends, and named.

Every process the tests start (daemons, and the children those start) inherits
:data:`MARK` from the test run's environment. A test that fails half-way (a daemon killed with
SIGKILL in its clean-up, a timeout) can leave a child running in its own session, forever if it
waits for a file in a temporary directory that pytest has removed since. At the end of the run
each such process group gets SIGKILL, and the run's summary lists what was left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

MARK = "ORCHD_TEST_RUN"
"""The environment variable that marks the processes of one test run."""


def mark_this_run() -> str:
    """Set :data:`MARK` for this run (and so for every process it starts); its value. A new
    one always: a test run started by another marks (and ends) only its own processes."""
    value = f"{os.getpid()}.{time.time_ns()}"
    os.environ[MARK] = value
    return value


def end_leftovers(value: str) -> list[str]:
    """SIGKILL the process groups of processes marked ``value`` (other than this process and
    its parents); a line for each process found."""
    wanted = f"{MARK}={value}".encode()
    own = {os.getpid(), os.getppid()}
    found: list[str] = []
    groups: set[int] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            groups.add(os.getpgid(int(entry.name)))
        except OSError:
            continue  # gone, or not ours to read
        found.append(f"pid {entry.name}: {command.strip()[:200]}")
    for group in groups - {os.getpgrp()}:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    return found
