"""The one error hierarchy of orchestratord.

Every exception the package raises on purpose derives from :class:`OrchestratorError`. Messages
say what is wrong, where, and what to do about it. A task that fails is *not* an exception: it
is data recorded in the store. Exceptions are for things a caller must handle or report.
"""

from __future__ import annotations

import errno


class OrchestratorError(Exception):
    """Base of every error raised on purpose by orchestratord."""

    exit_code = 1


class UsageError(OrchestratorError):
    """The command line or its arguments are wrong (exit status 2)."""

    exit_code = 2


class ConfigError(OrchestratorError):
    """The configuration file, environment or flags hold an invalid setting."""

    exit_code = 2


class QueueFileError(OrchestratorError):
    """A queue file cannot be used; ``problems`` lists every reason."""

    def __init__(self, message: str, problems: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class RefError(OrchestratorError):
    """A task ref names no task, or names more than one."""


class StateError(OrchestratorError):
    """The state directory or its database cannot be used."""


def state_stops(problem: str, fix: str) -> StateError:
    """The error that stops the daemon when its state cannot be written: ``problem`` (which
    file, and why), ``fix`` (what to do), and what the next start does."""
    return StateError(
        f"{problem}: {fix}, then start the daemon again. What was recorded before is kept;"
        " attempts cut short run again."
    )


def unwritable(path: str, error: OSError) -> StateError:
    """:func:`state_stops` for a file of the state directory that cannot be written (the
    lock, an attempt's log, the failure output for the next attempt)."""
    full = error.errno == errno.ENOSPC
    fix = "free space on its disk" if full else "check its disk and permissions"
    return state_stops(f"{path}: cannot write ({error.strerror or error})", fix)


class AlreadyRunningError(StateError):
    """Another daemon holds the state directory."""


class InvalidTransitionError(OrchestratorError):
    """A task state change that the state machine does not allow."""


class ExecutorError(OrchestratorError):
    """An executor could not start, watch or stop a run."""


class ControlError(OrchestratorError):
    """The control API refused a request or could not be reached."""


class DaemonNotRunningError(ControlError):
    """A command that changes things needs a running daemon, and none holds the state dir."""

    exit_code = 3


class DaemonUnreachableError(ControlError):
    """A daemon holds the state dir but its control API does not answer."""


class GitError(OrchestratorError):
    """A git command failed, or a repository cannot be used the way the config asks."""
