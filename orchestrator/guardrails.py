"""Checks on what an attempt produced: forbidden patterns in added lines, and empty test runs.

Guardrails are regular expressions (``[guardrails] patterns``) looked for in the lines an
attempt *added* to changed and new files, read from ``git diff -U0``: a hit (``# type: ignore``,
``.only(``, ``eslint-disable``, ...) makes the attempt BLOCKED, with the file, the line number
and the pattern as evidence. A line carrying the exemption marker (default
``orchestratord: allow``) is exempt, and so are files matching ``ignore_paths``.

A verification command whose output says that no test ran ("no tests ran", "Ran 0 tests", ...,
``no_tests_patterns``) makes the attempt FAIL even when it exited 0.

Pure.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_ESCAPES = {"a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r"}
MAX_HITS = 20


@dataclass(frozen=True, slots=True)
class AddedLine:
    path: str
    number: int
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    path: str
    number: int
    pattern: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.number}: {self.text.strip()[:120]!r} matches {self.pattern!r}"


def unquote(path: str) -> str:
    """A path as git prints it in a diff header: C-quoted when it holds unusual bytes."""
    if not (path.startswith('"') and path.endswith('"')):
        return path
    body = path[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567" and i + 3 < len(body):
                out.append(int(body[i + 1 : i + 4], 8))
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += char.encode()
        i += 1
    return out.decode("utf-8", "replace")


def _new_path(line: str) -> str | None:
    """The file of a ``+++`` header; None for ``/dev/null`` (a deleted file)."""
    name = line[4:].rstrip("\n")
    if name == "/dev/null":
        return None
    name = unquote(name)
    return name[2:] if name.startswith("b/") else name


def added_lines(diff: str) -> Iterator[AddedLine]:
    """The added lines of a unified diff (any context size), with their new line numbers."""
    path: str | None = None
    old_left = new_left = 0
    number = 0
    in_header = False
    for line in diff.split("\n"):
        if old_left > 0 or new_left > 0:
            if line.startswith("+"):
                if path is not None:
                    yield AddedLine(path, number, line[1:])
                number += 1
                new_left -= 1
            elif line.startswith("-"):
                old_left -= 1
            elif line.startswith(" "):
                number += 1
                old_left -= 1
                new_left -= 1
            continue  # "\ No newline at end of file", or the end
        if line.startswith("diff --git "):
            in_header, path = True, None
        elif in_header and line.startswith("+++ "):
            path = _new_path(line)
        elif match := _HUNK.match(line):
            in_header = False
            old_left = int(match.group(1)) if match.group(1) is not None else 1
            number = int(match.group(2))
            new_left = int(match.group(3)) if match.group(3) is not None else 1


@dataclass(frozen=True, slots=True)
class Guardrails:
    patterns: tuple[re.Pattern[str], ...]
    exempt_marker: str = ""
    ignore_paths: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, patterns: Sequence[str], exempt_marker: str = "", ignore_paths: Sequence[str] = ()
    ) -> Guardrails:
        return cls(tuple(re.compile(p) for p in patterns), exempt_marker, tuple(ignore_paths))

    def ignored(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, glob) for glob in self.ignore_paths)

    def scan(self, diff: str) -> list[Hit]:
        """Every hit in the added lines of ``diff`` (at most :data:`MAX_HITS`)."""
        if not self.patterns:
            return []
        hits: list[Hit] = []
        for added in added_lines(diff):
            if self.exempt_marker and self.exempt_marker in added.text:
                continue
            if self.ignored(added.path):
                continue
            for pattern in self.patterns:
                if pattern.search(added.text):
                    hits.append(Hit(added.path, added.number, pattern.pattern, added.text))
                    break
            if len(hits) >= MAX_HITS:
                break
        return hits


def evidence(hits: Sequence[Hit]) -> str:
    """The reason of a BLOCKED verdict: the first hit, and how many more."""
    first = hits[0]
    more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
    return f"guardrail: {first}{more}"


@dataclass(frozen=True, slots=True)
class NoTests:
    """Recognises the output of a test run that ran no test."""

    patterns: tuple[re.Pattern[bytes], ...]

    @classmethod
    def build(cls, patterns: Sequence[str]) -> NoTests:
        return cls(tuple(re.compile(p.encode(), re.MULTILINE) for p in patterns))

    def found(self, output: bytes) -> str | None:
        """The text that says no test ran, if the output says so."""
        for pattern in self.patterns:
            match = pattern.search(output)
            if match:
                return match.group(0).decode("utf-8", "replace").strip()
        return None
