"""Process groups of the daemon's children: signal them, list them, end what a dead daemon left.

Every child runs in its own session, so its process group id equals its pid. These helpers are
small and synchronous. :func:`end_leftovers` sleeps while it waits for a grace period: a
restarted daemon calls :func:`end_recorded` once for every recorded group, from a worker thread.

Identity on Linux is (boot id, pid, start ticks): a pid alone can be reused, but not within one
boot with an earlier start time. Elsewhere nothing can be proven about a recorded pid, so
:func:`end_leftovers` leaves everything alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ExecutorError

PROC = Path("/proc")
_LINUX = sys.platform.startswith("linux")
_POLL = 0.02
"""Seconds between checks while :func:`end_leftovers` waits for processes to go."""

LAUNCH_VAR = "ORCHESTRATORD_LAUNCH"
"""In the environment of every child the daemon starts: its :func:`launch_marker`."""
ENVIRON_READABLE = _LINUX and os.access(PROC / "self/environ", os.R_OK)
"""Whether :func:`find_launched` can read other processes' environments here."""


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` that this module uses."""

    pid: int
    state: str
    """One letter: ``R``, ``S``, ``D``, ``Z`` (zombie: ended, not yet reaped), ..."""
    pgid: int
    start_ticks: int
    """Start time after boot, in clock ticks (field 22)."""


def parse_stat(text: str) -> ProcStat | None:
    """Parse one ``/proc/PID/stat`` line; ``None`` when it is not one.

    The command name (field 2) is in parentheses and may itself contain spaces and
    parentheses, so the fixed fields are those after the *last* ``)``.
    """
    head, sep, tail = text.rpartition(")")
    if not sep:
        return None
    pid_text = head.partition(" (")[0].strip()
    fields = tail.split()
    # fields[0] is field 3 (state), fields[2] field 5 (pgrp), fields[19] field 22 (starttime).
    if len(fields) < 20 or not pid_text.isdigit():
        return None
    try:
        return ProcStat(
            pid=int(pid_text), state=fields[0], pgid=int(fields[2]), start_ticks=int(fields[19])
        )
    except ValueError:
        return None


def _read_stat(pid: int) -> ProcStat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return parse_stat(text)


def _check_pgid(pgid: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():
        raise ExecutorError(
            f"refusing to signal process group {pgid}: it is not a child's own group"
            " (a bug in the caller)"
        )


def terminate_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; ``False`` when it is gone or not ours.

    Raises :class:`~orchestrator.errors.ExecutorError` only for a pgid that can never be a
    child's group (``<= 1`` or the daemon's own group).
    """
    _check_pgid(pgid)
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (Linux); ``None`` when unknown or gone."""
    if not _LINUX:
        return None
    stat = _read_stat(pid)
    return None if stat is None else stat.start_ticks


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (perhaps another user's, or a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def boot_id() -> str | None:
    """This boot's id (Linux); ``None`` elsewhere."""
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def pids() -> list[int]:
    """Every process's id listed in ``/proc`` (Linux; none elsewhere)."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def _all_stats() -> list[ProcStat]:
    """Every process's ``/proc/PID/stat`` that could be read (Linux)."""
    return [stat for pid in pids() if (stat := _read_stat(pid))]


def _members_linux(pgid: int) -> list[ProcStat]:
    return [stat for stat in _all_stats() if stat.pgid == pgid and stat.state != "Z"]


def _members_ps(pgid: int) -> list[int]:
    try:
        listing = subprocess.run(
            ["ps", "-A", "-o", "pid=,pgid=,stat="],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    pids = []
    for line in listing.splitlines():
        parts = line.split()
        if (
            len(parts) >= 3
            and parts[0].isdigit()
            and parts[1].isdigit()
            and int(parts[1]) == pgid
            and not parts[2].startswith("Z")
        ):
            pids.append(int(parts[0]))
    return pids


def group_members(pgid: int) -> list[int]:
    """The live pids in process group ``pgid``, sorted.

    Zombies (ended, waiting for their parent to reap them) are not counted: they can no
    longer run, and signals do nothing to them.
    """
    if PROC.joinpath("self/stat").exists():
        return sorted(stat.pid for stat in _members_linux(pgid))
    return sorted(_members_ps(pgid))


def launch_marker(store_id: str, daemon_pid: int, attempt_id: int) -> str:
    """Which attempt started a child: of which store (state directory), from which daemon
    process. Unique on a machine while that daemon runs, and after it dies until its state
    directory is started again."""
    return f"{store_id}.{daemon_pid}.{attempt_id}"


def marker_parts(marker: str) -> tuple[str, int, int] | None:
    """The store id, daemon pid and attempt id of a :func:`launch_marker`; None for a value
    that is not one (a person may set the variable to anything)."""
    store_id, _, rest = marker.partition(".")
    pid, _, attempt = rest.partition(".")
    if not (store_id and pid.isdigit() and attempt.isdigit()):
        return None
    return store_id, int(pid), int(attempt)


def find_launched(markers: Collection[str]) -> dict[int, int]:
    """The process groups holding a live process whose environment holds one of ``markers``
    (Linux): group id -> the earliest start ticks among the group's processes.

    The daemon's children lead their own group (a new session each) and are started with
    :data:`LAUNCH_VAR` set to their attempt's :func:`launch_marker`, so a restarted daemon
    finds the children of its predecessor's running attempts even when no record of them
    was committed. Every process is looked at, not only group leaders: a leader that ended
    (reaped, or a zombie) leaves the rest of its group, whose processes inherited the marker.
    A group id cannot be reused while a process is in the group; the earliest start (the
    leader's, while it is there) is the ``not_before_ticks`` of :func:`end_leftovers`, which
    tells a group that ended and whose id was reused since. Processes of other users
    (unreadable) are skipped.
    """
    wanted = frozenset(markers)
    return find_marked(wanted.__contains__) if wanted else {}


def find_marked(match: Callable[[str], bool]) -> dict[int, int]:
    """As :func:`find_launched`, for the processes whose marker ``match`` accepts (say, every
    marker of one daemon: see :mod:`orchestrator.strays`)."""
    if not ENVIRON_READABLE:
        return {}
    prefix = f"{LAUNCH_VAR}=".encode()
    stats = _all_stats()
    found: dict[int, int] = {}
    for stat in stats:
        if stat.state == "Z" or stat.pgid in found or stat.pgid <= 1:
            continue  # a zombie's environment is gone; a group already found
        try:
            environ = (PROC / str(stat.pid) / "environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(prefix):
                if match(entry[len(prefix) :].decode("utf-8", "replace")):
                    found[stat.pgid] = stat.start_ticks
                break
    for stat in stats:
        if stat.pgid in found:
            found[stat.pgid] = min(found[stat.pgid], stat.start_ticks)
    return found


def _still_there(stat: ProcStat) -> bool:
    now = _read_stat(stat.pid)
    return now is not None and now.start_ticks == stat.start_ticks and now.state != "Z"


def _signal_each(stats: list[ProcStat], sig: int) -> None:
    for stat in stats:
        if _still_there(stat):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(stat.pid, sig)


_BOOTTIME: int = getattr(time, "CLOCK_BOOTTIME", -1)
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if _LINUX and _BOOTTIME >= 0 else None
TICK_SLACK = 2
"""Clock ticks a recorded start time may differ from the kernel's (it is taken just after)."""


def start_ticks_now() -> int | None:
    """Now, in the clock ticks of ``/proc/PID/stat`` (time since boot): a child's start time.

    Taken right after spawning, it is the child's start time to within a tick, without
    reading ``/proc`` (which waits for the child's exec to finish: 0.2 ms a spawn here).
    """
    if _TICKS_PER_SECOND is None:
        return None
    return int(time.clock_gettime(_BOOTTIME) * _TICKS_PER_SECOND)


def end_leftovers(
    pgid: int, not_before_ticks: int | None, boot: str | None, grace: float
) -> list[int]:
    """End what is left of a recorded process group; return the pids that were ended.

    For a daemon that restarts after being killed: ``pgid``, ``not_before_ticks`` (the start
    ticks of the group's leader, :func:`start_ticks_now` right after it was spawned, within
    ``TICK_SLACK``) and ``boot`` are what
    the dead daemon recorded. Only processes provably started by that run are touched: on the
    same boot, in that group, started no earlier than ``not_before_ticks`` (when given). If
    the group's leader is still there but started at another time than recorded, its pid (and
    so the group id) was reused, and nothing is touched. The rest get SIGTERM, up to ``grace``
    seconds, then SIGKILL. With no boot id (recorded or current: not Linux), or a different
    one, nothing is provable and nothing is done. Blocking: call it from a thread.
    """
    return end_recorded([(pgid, not_before_ticks, boot)], grace).get(pgid, [])


def end_recorded(
    groups: Iterable[tuple[int, int | None, str | None]], grace: float
) -> dict[int, list[int]]:
    """As :func:`end_leftovers`, for the groups of several records at once (each its group id,
    ``not_before_ticks`` and boot id): all get SIGTERM, then share one grace period, so that
    ending many takes no longer than ending one. Group id -> the pids ended in it; a group
    where nothing was provably the record's is absent."""
    current = boot_id()
    if current is None:
        return {}
    stats: list[ProcStat] | None = None
    found: dict[int, dict[int, ProcStat]] = {}
    for pgid, first, boot in groups:
        if boot != current:
            continue
        stats = _all_stats() if stats is None else stats
        for stat in _ours(stats, pgid, first):
            found.setdefault(pgid, {})[stat.pid] = stat
    unique = {stat.pid: stat for members in found.values() for stat in members.values()}
    ours = list(unique.values())
    if not ours:
        return {}
    _signal_each(ours, signal.SIGTERM)
    deadline = time.monotonic() + max(grace, 0.0)
    left = [stat for stat in ours if _still_there(stat)]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL)
        left = [stat for stat in left if _still_there(stat)]
    _signal_each(left, signal.SIGKILL)
    return {pgid: sorted(members) for pgid, members in found.items()}


def _ours(stats: list[ProcStat], pgid: int, not_before_ticks: int | None) -> list[ProcStat]:
    """The live processes of group ``pgid`` in ``stats`` that provably belong to the recorded
    run (see :func:`end_leftovers`)."""
    if pgid <= 1 or pgid == os.getpgrp():
        return []
    members = [stat for stat in stats if stat.pgid == pgid and stat.state != "Z"]
    leader = next((stat for stat in members if stat.pid == pgid), None)
    if not_before_ticks is None:
        return members
    if leader is not None and abs(leader.start_ticks - not_before_ticks) > TICK_SLACK:
        return []  # the leader's pid, and so the group id, was reused
    floor = not_before_ticks - TICK_SLACK
    return [stat for stat in members if stat.start_ticks >= floor]
