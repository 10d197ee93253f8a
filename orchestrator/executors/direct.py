"""Shell commands the shell would only start: what to exec instead, without the shell.

A string ``command`` runs as ``/bin/sh -c COMMAND``. When the string is one simple command (a
program and its arguments, separated by blanks, with nothing the shell would interpret: no
quotes, variables, globs, redirections, pipes, lists, comments or assignments, and not a shell
builtin or keyword), all the shell does is look the program up along ``PATH`` and run it with
those arguments. Starting the program directly gives it the same arguments, directory and
environment, and saves starting a shell: about 0.6 ms of CPU per run on a small machine, half
of what a run of ``/bin/true`` costs through the shell. ``make`` runs its recipes the same way.

What differs is the process around the program, as for an argv ``command``: it is the process
the daemon started (``bash -c`` execs it in place too, ``dash`` starts it as its child), and a
signal that ends it is reported as that signal (a shell exits 128 + its number instead).

The shell also sets and exports ``PWD``: the inherited value when that names the working
directory, else the directory's physical path. :func:`exec_env` does the same (it looks at
the file system for that each time, remembering only a directory's physical path while that
path names the directory). Anything that makes the direct start fail (the program not found,
not executable, or neither a binary nor a script with ``#!``) falls back to the shell, whose
error message and exit status (127, 126) the run then has, as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

SHELL = "/bin/sh"

_SPECIAL = re.compile(r"""[\n\r#;&|<>()$`\\"'*?\[\]~{}!]""")
"""Characters the shell may interpret (some only in some places: they are refused anywhere);
a command with any of them goes through the shell. So does one whose first word has ``=``
(an assignment)."""

_BLANKS = re.compile(r"[ \t]+")

SHELL_WORDS = frozenset(
    {
        # Keywords and special builtins of POSIX sh.
        "!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi", "for", "if", "in",
        "then", "until", "while", ".", ":", "break", "continue", "eval", "exec", "exit",
        "export", "readonly", "return", "set", "shift", "times", "trap", "unset",
        # Keywords of bash (``/bin/sh`` on some systems): ``time /bin/true`` is bash's
        # timing there, and /usr/bin/time's elsewhere.
        "coproc", "function", "select", "time",
        # Regular builtins of dash and bash that a program of the same name would not
        # replace (``echo``, ``test``, ``printf``... behave differently from /usr/bin's).
        "[", "alias", "bg", "bind", "builtin", "caller", "cd", "chdir", "command", "compgen",
        "complete", "compopt", "declare", "dirs", "disown", "echo", "enable", "false", "fc",
        "fg", "getopts", "hash", "help", "history", "jobs", "kill", "let", "local", "logout",
        "mapfile", "popd", "printf", "pushd", "pwd", "read", "readarray", "shopt", "source",
        "suspend", "test", "true", "type", "typeset", "ulimit", "umask", "unalias", "wait",
    }
)  # fmt: skip
"""First words the shell runs itself (a builtin) or reads as syntax: never exec'd directly."""


def exec_argv(argv: Sequence[str]) -> tuple[str, ...] | None:
    """For ``("/bin/sh", "-c", COMMAND)`` whose COMMAND the shell would only exec: the argv to
    exec in its place. None for anything else (run ``argv`` as it is)."""
    if len(argv) != 3 or argv[0] != SHELL or argv[1] != "-c":
        return None
    command = argv[2]
    if _SPECIAL.search(command) is not None:
        return None
    words = tuple(word for word in _BLANKS.split(command) if word)
    if not words or words[0] in SHELL_WORDS or "=" in words[0]:
        return None
    return words


def exec_env(env: Mapping[str, str], cwd: str, program: str) -> dict[str, str] | None:
    """The environment the shell would give ``program`` started in ``cwd``: ``env`` with the
    shell's ``PWD``. None (the start then goes through the shell) when ``cwd`` cannot be looked
    at (the shell reports it), or when with ``env`` the shell would do more than look
    ``program`` up along ``PATH``: without ``PATH`` (the shell's default path is not Python's),
    and where ``/bin/sh`` is bash, with a function of that name exported in ``env``, or with
    ``SHELLOPTS`` (``xtrace`` would print the command)."""
    if (
        "PATH" not in env
        or "SHELLOPTS" in env
        or any(name in env for name in (f"BASH_FUNC_{program}%%", f"BASH_FUNC_{program}()"))
    ):
        return None
    pwd = _shell_pwd(env.get("PWD"), cwd)
    if pwd is None:
        return None
    out = dict(env)
    out["PWD"] = pwd
    return out


_PHYSICAL_KEPT = 256
_physical: dict[str, str] = {}
"""Directory -> its physical path when last looked at (``os.path.realpath``: an ``lstat`` per
component, ten times what the rest costs)."""


def _shell_pwd(inherited: str | None, cwd: str) -> str | None:
    """What ``sh`` sets ``PWD`` to in ``cwd``: ``inherited`` if it is an absolute path naming
    the same directory, else the directory's physical path."""
    try:
        here = os.stat(cwd)
    except (OSError, ValueError):
        return None
    if inherited and os.path.isabs(inherited) and _names(inherited, here):
        return inherited
    physical = _physical.get(cwd)
    if physical is None or not _names(physical, here):
        physical = os.path.realpath(cwd)
        if len(_physical) >= _PHYSICAL_KEPT:
            _physical.clear()
        _physical[cwd] = physical
    return physical


def _names(path: str, here: os.stat_result) -> bool:
    """Whether ``path`` is the directory ``here`` (by device and inode)."""
    try:
        return os.path.samestat(os.stat(path), here)
    except (OSError, ValueError):
        return False
