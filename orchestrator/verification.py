"""What a task's attempt is verified against, and a fingerprint of it.

An attempt passes when its run printed the completion promise (if the task has one), nothing it
added hits a guardrail, and every verification command (the task's ``verify``, else its
track's, else the config's) passed having run some test (the no-tests patterns). The
fingerprint keeps a short digest of each of those parts, so that a PASS committed before the
daemon was killed is recorded from its commit only when the task still asks for the same
(:mod:`gitattempt`), and the attempt's log can say which part changed when it does not.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

from .guardrails import Guardrails, NoTests
from .model import Command, TaskDef, TrackSettings

PARTS = {
    "verify": "the verification commands",
    "promise": "the completion promise",
    "guardrails": "the guardrails",
    "no_tests": "the no-tests patterns",
}
"""The parts of a fingerprint, in its order, and how a log names them."""


def commands(
    task: TaskDef, track: TrackSettings, defaults: Sequence[str | Sequence[str]]
) -> tuple[Command, ...]:
    """The verification commands of ``task``: its own, else its track's, else ``defaults``
    (the config's ``defaults.verify``)."""
    if task.verify is not None:
        return task.verify
    if track.verify is not None:
        return track.verify
    return tuple(c if isinstance(c, str) else tuple(c) for c in defaults)


def _digest(value: object) -> str:
    return hashlib.sha256(orjson.dumps(value)).hexdigest()[:16]


def fingerprint(
    verify: Sequence[Command],
    promise: str | None,
    guardrails: Guardrails,
    no_tests: NoTests | None,
) -> str:
    """``verify:DIGEST promise:DIGEST guardrails:DIGEST no_tests:DIGEST``."""
    values: dict[str, object] = {
        "verify": [c if isinstance(c, str) else list(c) for c in verify],
        "promise": promise,
        "guardrails": [
            [p.pattern for p in guardrails.patterns],
            guardrails.exempt_marker,
            list(guardrails.ignore_paths),
        ],
        "no_tests": [p.pattern.decode("utf-8", "replace") for p in no_tests.patterns]
        if no_tests is not None
        else None,
    }
    return " ".join(f"{name}:{_digest(values[name])}" for name in PARTS)


def changed(recorded: str, now: str) -> list[str]:
    """The parts that differ between two fingerprints, as a log names them (every part, for a
    fingerprint that cannot be read)."""
    before = dict(part.partition(":")[::2] for part in recorded.split())
    after = dict(part.partition(":")[::2] for part in now.split())
    return [words for name, words in PARTS.items() if before.get(name) != after.get(name)]
