"""Linux inotify on one directory, read from the event loop: no thread, no polling.

A daemon that waits all night must not wake up while nothing happens. watchfiles (used where
there is no inotify) polls its change queue every few milliseconds from a thread that takes the
GIL each time; on Linux the kernel's own queue is read when it becomes readable instead, so an
idle watch costs nothing.

Only what the watcher needs: the names of the entries of one directory that changed (created,
written, attributes changed, moved in or out, removed), and whether the directory itself went
away (then the watch is over and must be set up again).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCHED = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
"""The directory itself is no longer watched."""

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
_READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Events:
    """What one read of the queue found."""

    names: frozenset[str]
    """Entries of the directory that changed."""
    overflow: bool = False
    """The kernel's queue overflowed: changes were lost, look at everything."""
    gone: bool = False
    """The directory was removed, moved or unmounted: the watch has ended."""


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "inotify_init1") else None


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


class DirWatch:
    """An inotify watch on ``directory``; :meth:`fileno` becomes readable when it changed."""

    def __init__(self, directory: Path) -> None:
        if _LIBC is None:
            raise OSError("inotify is not available on this system")
        fd = int(_LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        wd = int(_LIBC.inotify_add_watch(fd, os.fsencode(directory), WATCHED | IN_ONLYDIR))
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            self._fd = -1
            raise OSError(err, f"cannot watch {directory}: {os.strerror(err)}")

    def fileno(self) -> int:
        return self._fd

    def read(self) -> Events:
        """Everything queued now (nothing when nothing is: the descriptor does not block)."""
        names: set[str] = set()
        overflow = gone = False
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            offset = 0
            while offset + _HEADER.size <= len(data):
                _, mask, _, length = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                raw = data[start : start + length].split(b"\0", 1)[0]
                offset = start + length
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                if mask & GONE:
                    gone = True
                if raw:
                    names.add(os.fsdecode(raw))
        return Events(frozenset(names), overflow, gone)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DirWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
