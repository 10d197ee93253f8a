"""What a run left running outside its process group: found by its launch marker and ended.

Every child starts in a session of its own, and when it exits the executor ends what is left
in its process group. A process that started a session of its own is not in that group: a
``setsid`` in a command, a server that daemonizes, a test fixture started with
``start_new_session`` whose test run was killed at its timeout. Left alone it would live on
all night, holding its port, so that every later attempt fails with "address already in use".

Such a *stray* still carries its attempt's launch marker (:data:`procs.LAUNCH_VAR`, in the
environment of every child, inherited by everything it starts), and usually the run's log
file as its output. So, on Linux:

* After each local run that was cut short (its clean-up did not run), and after one that
  exited by itself when :func:`held_elsewhere` says that another process still has
  the attempt's log file open (a write lease can only be taken on a file nobody else has
  open: three ``fcntl`` calls), the processes carrying the attempt's marker are looked for in
  ``/proc`` and their groups ended (SIGTERM, the grace period, SIGKILL) before the attempt
  goes on.
* When the daemon stops, whatever still carries one of its markers is ended: strays of runs
  that exited by themselves and closed their output are found there.
* A daemon that starts ends whatever carries a marker of its state directory: the strays of a
  predecessor that was killed.

A process meant to outlive its attempt leaves the marker out of its environment
(``env -u ORCHESTRATORD_LAUNCH server &``), or is started by a service manager.
"""

from __future__ import annotations

import errno
import fcntl
import signal
from collections.abc import Callable, Collection

from . import procs

Match = Callable[[str], bool]
"""Which launch markers to end the processes of."""


def held_elsewhere(fd: int) -> bool | None:
    """Whether another open file description of ``fd``'s file exists, in any process (Linux,
    a file this process owns, ``fd`` open for writing): the kernel grants a write lease only
    on a file nobody else has open. None when it cannot tell (no leases here).

    The lease is released at once. A process opening the file in between makes the kernel
    signal the lease holder, with SIGIO unless told otherwise, and SIGIO ends a process that
    does not handle it: so the signal is set to SIGURG, which is ignored by default.
    """
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except (OSError, AttributeError) as error:  # AttributeError: no leases on this system
        return True if isinstance(error, OSError) and error.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def end(match: Match, grace: float, done: Collection[int] = ()) -> list[int]:
    """End the process groups holding a process whose launch marker ``match`` accepts (SIGTERM
    to all, one ``grace`` period for all, SIGKILL); return the pids ended. ``done``: groups
    ended already. Blocking: call it from a worker thread."""
    boot = procs.boot_id()
    found = [(g, first, boot) for g, first in procs.find_marked(match).items() if g not in done]
    ended = procs.end_recorded(found, grace) if found else {}
    return sorted(pid for pids in ended.values() for pid in pids)


def of_daemon(store_id: str, daemon_pid: int, keep: Collection[int] = ()) -> Match:
    """Every marker a daemon gave its children (see :func:`procs.launch_marker`), but those
    of the attempts ``keep`` (left running on a cluster)."""

    def match(marker: str) -> bool:
        parts = procs.marker_parts(marker)
        return parts is not None and parts[:2] == (store_id, daemon_pid) and parts[2] not in keep

    return match


def of_store(store_id: str, keep: Collection[int] = ()) -> Match:
    """Every marker of a state directory given by a daemon that is gone, but those of the
    attempts ``keep`` (left running on a cluster, for the daemon to attach to again).

    A marker whose daemon is alive belongs to another daemon on a copy of the state directory
    (the lock keeps a second one off this one): its children are left alone.
    """
    alive: dict[int, bool] = {}

    def match(marker: str) -> bool:
        parts = procs.marker_parts(marker)
        if parts is None or parts[0] != store_id or parts[2] in keep:
            return False
        pid = parts[1]
        if pid not in alive:
            alive[pid] = procs.alive(pid)
        return not alive[pid]

    return match
