"""Where each key of a TOML text is: line numbers for messages about a config file.

``tomllib`` gives values, not positions. :func:`key_lines` finds the line of every table header
and every ``key = value`` by its dotted name (``defaults.timeout``, ``agents.claude.argv``),
so that errors and ``config show`` can say ``FILE:LINE``. It reads only as much TOML as that
needs: tables, dotted and quoted keys, and enough of strings, comments and multi-line arrays
not to mistake their contents for keys.
"""

from __future__ import annotations

import re
import tomllib

_BARE = r"[A-Za-z0-9_-]+"
_KEY = rf"""(?:{_BARE}|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_TABLE = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY)


def split_key(dotted: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ``("a", "b.c", "d")``."""
    parts: list[str] = []
    for match in _PART.finditer(dotted):
        part = match.group()
        if part[0] in "\"'":
            part = tomllib.loads(f"k = {part}")["k"]
        parts.append(part)
    return tuple(parts)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The 1-based line of every table and key, by its path (the first one wins)."""
    out: dict[tuple[str, ...], int] = {}
    prefix: tuple[str, ...] = ()
    depth = 0
    multiline: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if depth == 0 and multiline is None:
            table = _TABLE.match(line)
            if table:
                prefix = split_key(table.group(1))
                out.setdefault(prefix, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                out.setdefault(prefix + split_key(assign.group(1)), number)
        depth, multiline = _scan(line, depth, multiline)
    return out


def line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """The line of ``path``, else of the nearest enclosing table or key that has one."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None


def _scan(line: str, depth: int, multiline: str | None) -> tuple[int, str | None]:
    """Bracket depth and open multi-line string after ``line``."""
    i, n = 0, len(line)
    while i < n:
        if multiline is not None:
            end = line.find(multiline, i)
            if end < 0:
                return depth, multiline
            i, multiline = end + 3, None
            continue
        char = line[i]
        if line.startswith(('"""', "'''"), i):
            multiline = line[i : i + 3]
            i += 3
        elif char == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        elif char == "'":
            end = line.find("'", i + 1)
            i = n if end < 0 else end + 1
        elif char == "#":
            break
        else:
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            i += 1
    return depth, multiline
