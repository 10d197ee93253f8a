"""Where the task objects and ``summary`` lie in a queue file as the daemon last wrote it.

The write-back rewrites a file about twice a second per busy track, each time for a few of its
tasks. A :class:`Layout` lets such a write cost what changed: it holds the byte offsets of
every task object and of the ``summary`` member, so a task is read by parsing its own bytes,
and a write re-renders only the changed task objects (each spliced by ``jsonedit`` as it would
be in place, and checked by parsing it) and joins them with the bytes around them. The
offsets after a write follow from the lengths of the new pieces.

A layout describes exact bytes: it is only used with the bytes it was made from, or made by
:meth:`Layout.render` (the caller checks that the file still has them). Files with a key twice
at the top, or task entries that are not objects, have no layout (they take the full path).

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import jsonedit

# The indentation at the start of a line (the pattern always matches).
_LEADING = re.compile(rb"[ \t]*")

TaskEdits = tuple[dict[str, Any], Mapping[str, Any]]
"""A task object as parsed from the file, and the members to set in it (key -> value)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Byte offsets in one version of a queue file (the lists are never changed)."""

    spans: list[int]
    """Where each task object of the task list starts (its ``{``) and ends (after its ``}``):
    task ``i`` is ``data[spans[2 * i] : spans[2 * i + 1]]``."""
    summary: tuple[int, int, int] | None
    """The ``summary`` member: where its key starts, where its value starts and ends."""
    summary_value: Any
    """The value of ``summary`` (None without one)."""
    paused: bool
    """Whether the file says ``track.paused``."""

    @classmethod
    def of(cls, data: bytes, list_key: str) -> Layout | None:
        """The layout of ``data`` (a queue file, UTF-8) whose tasks are under ``list_key``."""
        text = data.decode("utf-8")
        outline = jsonedit.outline(text, list_key)
        if outline is None:
            return None
        spots = [n for span in outline.elements for n in span]
        summary = outline.members.get("summary")
        if summary is not None:
            spots.extend(summary)
        if len(text) != len(data):  # not ASCII: character indexes to byte offsets
            spots = _byte_offsets(text, spots)
        count = 2 * len(outline.elements)
        spans = spots[:count]
        if any(data[at] != ord("{") for at in spans[::2]):
            return None
        where = (spots[-3], spots[-2], spots[-1]) if summary is not None else None
        value = orjson.loads(data[where[1] : where[2]]) if where is not None else None
        track = outline.members.get("track")
        section = orjson.loads(text[track[1] : track[2]]) if track is not None else None
        paused = bool(section.get("paused")) if isinstance(section, dict) else False
        return cls(spans, where, value, paused)

    def task(self, data: bytes, index: int) -> Any:
        """The task object at ``index``, parsed from its own bytes."""
        return orjson.loads(memoryview(data)[self.spans[2 * index] : self.spans[2 * index + 1]])

    def render(
        self,
        data: bytes,
        tasks: Mapping[int, TaskEdits],
        summary: Any,
        style: jsonedit.Style,
    ) -> tuple[bytes, Layout] | None:
        """``data`` with members set in task objects (index -> edits) and ``summary`` replaced
        (None: kept), and the layout of the result; None when a piece needs more than a splice
        (a full rewrite of the file is then the answer).

        Each piece gets exactly the text ``jsonedit.apply_edits`` gives it in the whole file:
        it is spliced with the indentation of its first line in front of it, the splice is
        checked by parsing the piece, and ``style`` is the file's.
        """
        cuts: list[tuple[int, int, bytes]] = []
        for index, (parsed, members) in tasks.items():
            start, end = self.spans[2 * index], self.spans[2 * index + 1]
            indent = _indent(data, start)
            text = indent + data[start:end].decode("utf-8")
            spliced = jsonedit.splice_members(
                text, members, start=len(indent), style=style, parsed=parsed
            )
            if spliced is None:
                return None
            if spliced != text:
                cuts.append((start, end, spliced[len(indent) :].encode("utf-8")))
        summary_value = self.summary_value
        if summary is not None:
            if self.summary is None:
                return None
            key_at, _, end = self.summary
            indent = _indent(data, key_at)
            # The member alone, as an object: the splice sees its key, as in the whole file.
            text = indent + "{" + data[key_at:end].decode("utf-8") + "}"
            parsed = {"summary": summary_value}
            spliced = jsonedit.splice_members(
                text, {"summary": summary}, start=len(indent), style=style, parsed=parsed
            )
            if spliced is None:
                return None
            if spliced != text:
                cuts.append((key_at, end, spliced[len(indent) + 1 : -1].encode("utf-8")))
            summary_value = parsed["summary"]
        cuts.sort(key=lambda cut: cut[0])
        return _join(data, cuts), self._moved(cuts, summary_value)

    def _moved(self, cuts: list[tuple[int, int, bytes]], summary_value: Any) -> Layout:
        """The layout once ``cuts`` (in order) replaced their bytes: every offset moves by the
        growth of each cut that ends at or before it."""
        moves = [(end, len(new) - (end - start)) for start, end, new in cuts]
        summary = self.summary
        if summary is not None:
            key_at, value_at, end = _moved(list(summary), moves)
            summary = (key_at, value_at, end)
        return Layout(_moved(self.spans, moves), summary, summary_value, self.paused)


def _moved(offsets: list[int], moves: list[tuple[int, int]]) -> list[int]:
    """``offsets`` (ascending), each moved by the growth of every move that ends at or before
    it; ``moves`` are (end, growth), in order."""
    if not moves:
        return offsets
    first = bisect_left(offsets, moves[0][0])
    shifts: list[int] = []
    done, shift = first, 0
    for end, growth in moves:
        upto = bisect_left(offsets, end, done)
        shifts += [shift] * (upto - done)
        done, shift = upto, shift + growth
    shifts += [shift] * (len(offsets) - done)
    return offsets[:first] + list(map(operator.add, offsets[first:], shifts))


def _join(data: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    done = 0
    for start, end, new in cuts:
        pieces += (view[done:start], new)
        done = end
    pieces.append(view[done:])
    return b"".join(pieces)


def _indent(data: bytes, at: int) -> str:
    """The indentation of the line that holds byte ``at``."""
    line = data.rfind(b"\n", 0, at) + 1
    found = _LEADING.match(data, line, at)
    return data[line : found.end()].decode("ascii") if found else ""


def _byte_offsets(text: str, spots: list[int]) -> list[int]:
    """Character indexes of ``text`` as offsets in its UTF-8 encoding."""
    offsets: dict[int, int] = {}
    done = offset = 0
    for at in sorted(set(spots)):
        offset += len(text[done:at].encode("utf-8"))
        offsets[at] = offset
        done = at
    return [offsets[at] for at in spots]
