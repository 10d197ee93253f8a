"""Start-up after a crash: end what the dead daemon left running, and requeue its attempts.

The store records every attempt before it starts, and every child process (pid, process
group, start time, boot id) before the daemon waits on it; on Linux a local child's record
goes into the next commit instead (another task's transition, a write-back, or one of its own
after ``daemon.RECORD_DELAY``), and its environment carries its attempt's launch marker
(:func:`procs.launch_marker`).
A daemon killed at any moment is followed by one that ends the leftover process groups (only
processes provably started by the dead daemon: same boot, same group, started no earlier than
the recorded start; or, unrecorded, in a group where a process carries the marker of an attempt
the store shows running, even after the group's leader ended; and the strays of any of its
attempts, :mod:`orchestrator.strays`), records the attempts that were running as
interrupted, and puts their tasks back to pending at the same iteration. Completed tasks stay
completed: nothing recorded is lost, nothing is invented.

Attempts with remote runs (Ray jobs) are left running, with their tasks in progress: their
jobs outlive the daemon, and the daemon re-attaches to them once it runs
(:mod:`orchestrator.placement`), which decides then whether they are still there.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from . import procs, strays
from .attempt import note_interrupted
from .model import Status, TaskKey
from .states import Event, TaskState, transition
from .store import AttemptRow, Store

log = structlog.get_logger("orchestratord")

INTERRUPTED = "the daemon stopped (or was killed) during this attempt"
STOPPED = "the daemon stopped during the attempt"
"""The reason of an attempt cut short by its daemon's orderly stop (no order for its task)."""
STOPPING = "the daemon is stopping"
"""The reason of an attempt the orderly stop ended at the end of its grace period."""
DAEMON_ENDS = (INTERRUPTED, STOPPED, STOPPING)
"""The reasons of an attempt cut short by its daemon's end, not by an order."""


@dataclass(frozen=True, slots=True)
class Recovered:
    processes_ended: tuple[int, ...]
    attempts_interrupted: tuple[int, ...]
    tasks_requeued: tuple[TaskKey, ...]
    attempts_remote: tuple[int, ...] = ()
    """Attempts left running for the daemon to re-attach to (they have remote runs)."""
    states: Mapping[TaskKey, TaskState] = field(default_factory=dict)
    """Every task's state in the store after recovery (what the daemon starts from)."""


def _unrecorded(
    store: Store,
    attempts: Iterable[AttemptRow],
    done: Collection[int],
    grace: float,
    keep: Collection[int],
) -> list[int]:
    """End what dead daemons' children left running that has no record (Linux), each found by
    its launch marker: the children of the local ``attempts`` (running when the daemon died: a
    record can wait for the next commit, and the daemon may have died first), and the strays
    of any attempt (:mod:`orchestrator.strays`), but those of the attempts ``keep`` (remote,
    attached to again). ``done``: groups ended already by their record (a group whose record
    did not prove it ours is looked for again here)."""
    markers = {procs.launch_marker(store.store_id, a.daemon_pid, a.id) for a in attempts}
    stray = strays.of_store(store.store_id, keep)
    return strays.end(lambda marker: marker in markers or stray(marker), grace, done)


def recover(store: Store, grace: float) -> Recovered:
    """Synchronous (it may wait up to ``grace`` for leftovers): run it in a worker thread."""
    remote = store.remote_attempts()
    local = [proc for proc in store.open_processes() if proc.executor == "local"]  # (else remote)
    # Every group at once, sharing one grace period (not one per group: many that ignore
    # SIGTERM would hold the start-up for minutes). A group refused (its start is not the
    # record's) is left to the markers.
    recorded = [(p.pgid, p.start_ticks, p.boot_id) for p in local if p.pgid is not None]
    gone = procs.end_recorded(recorded, grace)
    seen = set(gone)
    ended = sorted(pid for pids in gone.values() for pid in pids)
    for proc in local:
        store.end_process(proc.id, None)
    running = store.running_attempts()
    attempts = [a for a in running if a.id not in remote]
    ended.extend(_unrecorded(store, attempts, seen, grace, remote))
    kept = {a.key for a in running if a.id in remote}
    states = store.load_tasks()
    resets = {
        key: state.with_owned(status=transition(state.status, Event.INTERRUPT))
        for key, state in states.items()
        if state.status is Status.IN_PROGRESS and key not in kept
    }
    if attempts or resets:
        store.interrupt_attempts([a.id for a in attempts], resets, INTERRUPTED)
        for attempt in attempts:
            note_interrupted(attempt.log_path, INTERRUPTED)
        states.update(resets)
    result = Recovered(
        tuple(ended),
        tuple(a.id for a in attempts),
        tuple(resets),
        tuple(sorted(remote)),
        states,
    )
    if ended or attempts or resets:
        log.warning(
            "recovered after an unclean stop",
            processes_ended=len(ended),
            attempts_interrupted=len(attempts),
            tasks_requeued=len(resets),
        )
    return result
