"""Start-up after a crash: end what the dead daemon left running, and requeue its attempts.

The store records every child process (pid, process group, start time, boot id) before the
daemon waits on it, and every attempt before it starts. A daemon killed at any moment is
followed by one that ends the leftover process groups (only processes provably started by the
dead daemon: same boot, same group, started no earlier than the recorded start), records the
attempts that were running as interrupted, and puts their tasks back to pending at the same
iteration. Completed tasks stay completed: nothing recorded is lost, nothing is invented.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from . import procs
from .model import Status, TaskKey
from .states import TaskState
from .store import Store

log = structlog.get_logger("orchestratord")

INTERRUPTED = "the daemon stopped (or was killed) during this attempt"


@dataclass(frozen=True, slots=True)
class Recovered:
    processes_ended: tuple[int, ...]
    attempts_interrupted: tuple[int, ...]
    tasks_requeued: tuple[TaskKey, ...]


def recover(store: Store, grace: float) -> Recovered:
    """Synchronous (it may wait up to ``grace`` for leftovers): run it in a worker thread."""
    ended: list[int] = []
    for proc in store.open_processes():
        if proc.pgid is not None:
            ended.extend(procs.end_leftovers(proc.pgid, proc.start_ticks, proc.boot_id, grace))
        store.end_process(proc.id, None)
    attempts = store.running_attempts()
    resets: dict[TaskKey, TaskState] = {}
    for key, state in store.load_tasks().items():
        if state.status is Status.IN_PROGRESS:
            resets[key] = state.with_owned(status=Status.PENDING)
    if attempts or resets:
        store.interrupt_attempts([a.id for a in attempts], resets, INTERRUPTED)
    result = Recovered(tuple(ended), tuple(a.id for a in attempts), tuple(resets))
    if ended or attempts or resets:
        log.warning(
            "recovered after an unclean stop",
            processes_ended=len(ended),
            attempts_interrupted=len(attempts),
            tasks_requeued=len(resets),
        )
    return result
