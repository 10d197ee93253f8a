"""Memory the daemon is done with: kept out of the collector's way, or given back.

Loading queue files is the daemon's largest burst of memory: every file's text, its parsed
JSON and its checked tasks exist at once, and most of it is garbage a moment later. Python
frees it, but the C library keeps what it freed in its heap for later, so the daemon's
resident size would stay at its start-up peak all night. :func:`settle` runs once start-up
or a reload is over.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS); looked up once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None
    if function is not None:
        function.argtypes = (ctypes.c_size_t,)
        function.restype = ctypes.c_int
    return function


def give_back() -> bool:
    """Return the free pages of the C library's heap to the system (glibc); say whether
    anything was given back. A few milliseconds after start-up with 20,000 tasks."""
    trim = _malloc_trim()
    return trim is not None and trim(0) == 1


def settle(*, keep: bool) -> None:
    """After a burst of work: collect the garbage and give its memory back to the system.

    ``keep``: what is alive now lives long (start-up). The daemon's data holds no reference
    cycles (reference counting frees what a reload replaces), so full collections scanning
    every task in force are pure cost: 40 ms with 1,000 tasks here, landing in the middle of
    a save being applied. ``gc.freeze`` takes them out of the collector's sight; reloads add
    little (a task read before is reused, see ``schema.TaskMemo``).
    """
    gc.collect()
    if keep:
        gc.freeze()
    give_back()
