"""Starting a child process cheaply: libc ``posix_spawn`` through ctypes (Linux).

:func:`spawn` starts a command the way the local executor's :class:`subprocess.Popen` call
does: in ``cwd``, with exactly ``env``, stdin from one descriptor, stdout and stderr to
another, in a new session, with no other descriptor inherited, SIGPIPE and SIGXFSZ back to
their default action (Python ignores them; Popen restores them) and an empty signal mask. It
costs about half of Popen's CPU: the arrays are built in C layout directly and one libc call
does the rest (glibc clones with ``CLONE_VM | CLONE_VFORK``, so nothing is copied, and the
caller is suspended, without the GIL, until the child has exec'd).

What it needs beyond POSIX is what Popen's C helper does itself: changing directory
(``posix_spawn_file_actions_addchdir_np``: glibc 2.29, musl 1.1.24), closing every other
descriptor (``posix_spawn_file_actions_addclosefrom_np``: glibc 2.34) and a new session
(``POSIX_SPAWN_SETSID``: glibc 2.26). It is used on Linux only, where the flag values are
known. :data:`AVAILABLE` is false elsewhere and :data:`UNAVAILABLE` says why; callers then
use Popen.

:func:`spawn` never raises for a command that cannot start: it returns ``None`` whenever it
did not start the child (a command not found in the child's ``PATH``, text that cannot be
passed to the kernel as it is, a failed exec) and the caller tries Popen, whose outcome (a
child, or the exception the caller explains) is authoritative. So a failure costs one more
try and behaves exactly as Popen; a success runs the program Popen would have run: the first
regular executable file named ``argv[0]`` along the *child's* ``PATH`` (relative entries
taken from ``cwd``), or ``argv[0]`` itself when it contains a slash.

:class:`Child` reaps such a child the way Popen does (``poll``, ``wait``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import sys
import threading
from collections.abc import Mapping, Sequence

# posix_spawnattr_setflags values of glibc and musl (<spawn.h> on Linux).
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80
_RESTORED = (signal.SIGPIPE, signal.SIGXFSZ)
"""Signals Python ignores at start-up, set back to their default action in the child."""
_FIRST_CLOSED = 3
"""Every descriptor from this one up is closed in the child (0-2 are its stdio)."""

# Opaque libc structures, allocated larger than any libc makes them, 8-byte aligned.
_Opaque = ctypes.c_uint64 * 128
_Buffer = ctypes.Array[ctypes.c_uint64]
_SigSet = ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong)))
"""A ``sigset_t`` as Linux C libraries lay it out (1024 bits)."""


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """libc, with every function used here, or why it cannot be used."""
    if not sys.platform.startswith("linux"):
        return None, f"the posix_spawn flags of {sys.platform} are not known here"
    if sys.getfilesystemencoding() != "utf-8":
        return None, f"the file system encoding is {sys.getfilesystemencoding()}, not utf-8"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as error:
        return None, f"cannot load the C library: {error}"
    wanted = (
        "posix_spawn",
        "posix_spawnattr_init",
        "posix_spawnattr_setflags",
        "posix_spawnattr_setsigdefault",
        "posix_spawnattr_setsigmask",
        "posix_spawn_file_actions_init",
        "posix_spawn_file_actions_destroy",
        "posix_spawn_file_actions_adddup2",
        "posix_spawn_file_actions_addchdir_np",
        "posix_spawn_file_actions_addclosefrom_np",
        "sigemptyset",
        "sigaddset",
    )
    missing = [name for name in wanted if not hasattr(libc, name)]
    if missing:
        return None, f"the C library has no {', '.join(missing)}"
    return libc, None


def _ignored() -> int:
    """The signals this process ignores (the kernel's ``SigIgn`` mask; 0 if unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("SigIgn:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _internal(libc: ctypes.CDLL) -> int:
    """The C library's own signals (glibc: 32 and 33; ``sigaddset`` refuses them), as a mask."""
    probe = _SigSet()
    libc.sigemptyset(probe)
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    limit = min(signal.NSIG, len(probe) * bits + 1)
    return sum(1 << (sig - 1) for sig in range(1, limit) if libc.sigaddset(probe, sig) != 0)


def _attributes(libc: ctypes.CDLL, to_default: int) -> _Buffer | None:
    """Spawn attributes: a new session, an empty mask, SIGPIPE, SIGXFSZ and the signals of
    the mask ``to_default`` at their default action; ``None`` if the C library refuses."""
    attr = _Opaque()
    if libc.posix_spawnattr_init(attr):
        return None
    mask = to_default | sum(1 << (sig - 1) for sig in _RESTORED)
    default = _SigSet()  # zero-filled: empty, as is the mask below
    bits = ctypes.sizeof(ctypes.c_ulong) * 8  # the kernel's layout: bit n-1, unsigned longs
    for word in range(len(default)):
        default[word] = mask >> (word * bits) & ((1 << bits) - 1)
    empty = _SigSet()
    flags = ctypes.c_short(_SETSID | _SETSIGDEF | _SETSIGMASK)
    if (
        libc.posix_spawnattr_setflags(attr, flags)
        or libc.posix_spawnattr_setsigdefault(attr, default)
        or libc.posix_spawnattr_setsigmask(attr, empty)
    ):
        return None
    return attr


# The C library's own signals: its child code sets them to *ignored*, which lasts across
# exec. Popen leaves them as they are in this process, where nothing can set them to ignored
# (the C library refuses), only from ignored (inherited from a parent that used posix_spawn)
# to caught (when the C library first needs one). So while one of them is ignored here, each
# spawn looks again (``/proc/self/status``); once none is, never again. Reading it once would
# not do: glibc 2.36 catches 33 (SIGSETXID) when the first thread starts, after this module is
# loaded. It catches 32 (SIGCANCEL) only for pthread_cancel, so a daemon started by posix_spawn
# (``make`` does) looks again at every spawn, for about 20 us.
_libc, UNAVAILABLE = _load()
_INTERNAL = 0 if _libc is None else _internal(_libc)
_internal_ignored = _INTERNAL
"""Those of the C library's own signals this process ignored when last looked at (until
looked at: all of them, so that the first look happens)."""
_attrs: dict[int, _Buffer] = {}
"""Spawn attributes by the mask of the C library's signals to leave ignored."""


def _attributes_now() -> _Buffer | None:
    """The spawn attributes for the dispositions this process has now (see above)."""
    global _internal_ignored  # noqa: PLW0603 - a fact about this process, cached
    if _internal_ignored:
        _internal_ignored = _ignored() & _INTERNAL
    attr = _attrs.get(_internal_ignored)
    if attr is None and _libc is not None:
        attr = _attributes(_libc, _INTERNAL & ~_internal_ignored)
        if attr is not None:
            _attrs[_internal_ignored] = attr
    return attr


if _libc is not None:
    if _attributes_now() is None:
        UNAVAILABLE = "the C library refuses the spawn attributes (no POSIX_SPAWN_SETSID?)"
    _posix_spawn = _libc.posix_spawn
    _posix_spawn.argtypes = (
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    )
    _fa_init = _libc.posix_spawn_file_actions_init
    _fa_destroy = _libc.posix_spawn_file_actions_destroy
    _fa_dup2 = _libc.posix_spawn_file_actions_adddup2
    _fa_chdir = _libc.posix_spawn_file_actions_addchdir_np
    _fa_closefrom = _libc.posix_spawn_file_actions_addclosefrom_np


AVAILABLE = UNAVAILABLE is None
"""Whether :func:`spawn` can start anything here (else it always returns ``None``)."""


def find_program(command: str, env: Mapping[str, str], cwd: str) -> str | None:
    """The file to execute for ``command``, looked up like Popen (``None``: not found).

    Popen tries ``execve`` on each candidate along the child's ``PATH`` (``os.defpath``
    without one) after changing to ``cwd``, and runs the first that works. Here each
    candidate is checked with one ``stat`` (a regular file with an execute bit); a candidate
    that passes but does not exec makes :func:`spawn` fail, and Popen then decides. A
    ``command`` with a slash comes back as it is.
    """
    if os.sep in command:
        return command
    path = env.get("PATH")
    for directory in (os.defpath if path is None else path).split(os.pathsep):
        candidate = os.path.join(directory, command)
        try:
            info = os.stat(os.path.join(cwd, candidate))  # an absolute candidate stays as it is
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o111:
            return candidate
    return None


def _strings(items: Sequence[str]) -> ctypes.Array[ctypes.c_char_p] | None:
    """A NULL-terminated ``char *[]`` of ``items``; ``None`` if one holds a NUL or a lone
    surrogate (Popen passes the latter as raw bytes; let it)."""
    joined = "\0".join(items)
    if items and joined.count("\0") != len(items) - 1:
        return None
    try:  # one encoding of all of them, then cut apart: the items hold no NUL
        parts = joined.encode().split(b"\0") if items else []
    except UnicodeEncodeError:
        return None
    array = (ctypes.c_char_p * (len(items) + 1))()
    encoded: list[ctypes.c_char_p | bytes | None] = list(parts)
    array[: len(items)] = encoded
    return array


def spawn(
    argv: Sequence[str], cwd: str, env: Mapping[str, str], stdin_fd: int, out_fd: int
) -> int | None:
    """Start ``argv`` (see the module docstring); its pid, or ``None`` if it did not start.

    ``stdin_fd`` becomes the child's stdin, ``out_fd`` its stdout and stderr; both must be
    above 2 (a lower one would be overwritten while the three are set up). Safe to call from
    any thread.
    """
    if not AVAILABLE or not argv or min(stdin_fd, out_fd) < _FIRST_CLOSED:
        return None
    if "=" in "".join(env) or "\0" in cwd:
        return None  # Popen refuses these with a ValueError
    program = find_program(argv[0], env, cwd)
    args = _strings(argv)  # a NUL in argv[0], or in PATH (which envp holds), ends it here too
    envp = _strings(list(map("=".join, env.items())))
    if program is None or args is None or envp is None:
        return None
    try:
        where, path = cwd.encode(), program.encode()
    except UnicodeEncodeError:
        return None
    actions, kept = _file_actions(stdin_fd, out_fd, where)
    if actions is None:
        return None
    try:
        attr = _attributes_now()
        pid = ctypes.c_int()
        if attr is None or _posix_spawn(ctypes.byref(pid), path, actions, attr, args, envp):
            return None
        return pid.value
    finally:
        if not kept:
            _fa_destroy(actions)


_ACTIONS_KEPT = 256
"""File action sets kept for reuse, at most (never freed: a spawn in another thread may be
using one)."""
_actions: dict[tuple[int, int, bytes], _Buffer] = {}


def _file_actions(stdin_fd: int, out_fd: int, where: bytes) -> tuple[_Buffer | None, bool]:
    """The file actions of a spawn, and whether they are kept (else the caller frees them).

    They are the same for every spawn with the same descriptors and directory, and the
    descriptors' numbers come back (the kernel gives the lowest free one): building them costs
    six C calls, and glibc checks each descriptor against the process's limit with a system
    call. So the sets are kept, by what they hold, and used again.
    """
    key = (stdin_fd, out_fd, where)
    actions = _actions.get(key)
    if actions is not None:
        return actions, True
    actions = _Opaque()
    if _fa_init(actions) != 0:
        return None, False
    if (
        _fa_dup2(actions, stdin_fd, 0)
        or _fa_dup2(actions, out_fd, 1)
        or _fa_dup2(actions, out_fd, 2)
        or _fa_chdir(actions, where)
        or _fa_closefrom(actions, _FIRST_CLOSED)
    ):
        _fa_destroy(actions)
        return None, False
    if len(_actions) >= _ACTIONS_KEPT:
        return actions, False
    return actions, _actions.setdefault(key, actions) is actions  # another thread's first?


class Child:
    """A child started by :func:`spawn`, reaped as :class:`subprocess.Popen` reaps its own.

    ``poll`` never blocks (and answers ``None`` while a ``wait`` in another thread holds the
    child); ``wait`` blocks until the child is reaped. As in Popen, a child reaped by someone
    else (``ECHILD``) counts as exit status 0: its status is gone.
    """

    __slots__ = ("_lock", "pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def _reap(self, options: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                if self.returncode is None:
                    self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self) -> int:
        with self._lock:
            while self.returncode is None:
                self._reap(0)
            return self.returncode
