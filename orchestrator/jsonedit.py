"""Format-preserving edits of hand-edited JSON queue files.

This module owns the text of queue files as users wrote them. Users keep queue files in git and
edit them by hand, so when the daemon writes a task's ``status`` or the ``summary`` back, only the
bytes of those values may change: indentation, blank lines, one-line arrays, CRLF line ends, the
final newline, a BOM and raw or escaped non-ASCII all stay as they were.

* :func:`detect_style` reads a file's formatting conventions into a :class:`Style`.
* :func:`dumps` serializes a whole document in a style (new files, and the fallback).
* :func:`apply_edits` sets values at paths by splicing new text into the old text. It walks only
  the containers on the edit paths and skips every other value with the C scanner of ``json``.
  A safety net parses the spliced text and compares it with the expected document; on any
  difference it returns a full :func:`dumps` of the expected document instead.
* :func:`splice_members` is :func:`apply_edits` without that fallback (None instead), for the
  members of one object of a larger text; :func:`outline` finds the members of the top-level
  object and the elements of one of its arrays, so that a caller can edit those values one by
  one.

Everything here is pure: strings in, strings out, no file I/O.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias, cast

import orjson

__all__ = [
    "JSONValue",
    "Outline",
    "Path",
    "Style",
    "apply_edits",
    "detect_style",
    "dumps",
    "outline",
    "splice_members",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
Path: TypeAlias = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Style:
    """The formatting conventions of one JSON file.

    ``indent`` is one indentation unit as found in the file (``"  "``, ``" "``, ``"    "``,
    ``"\\t"``), or ``""`` for a file on a single line. ``newline`` is ``"\\n"`` or ``"\\r\\n"``.
    ``ensure_ascii`` says new non-ASCII text is written as ``\\uXXXX`` escapes. ``inline_arrays``
    says non-empty arrays of scalars are written on one line (``["a", "b"]``).
    """

    indent: str
    newline: str
    final_newline: bool
    ensure_ascii: bool
    inline_arrays: bool


_BOM = "\ufeff"
# The end of the whitespace at an index (the pattern always matches, hence the cast).
_Matcher: TypeAlias = Callable[[str, int], "re.Match[str]"]
_skip_ws = cast(_Matcher, re.compile(r"[ \t\n\r]*").match)
# After ``{``: the whitespace up to the first key (group 1 is empty and marks where it starts).
_after_open = cast(_Matcher, re.compile(r"()[ \t\n\r]*").match)
# After a member or element: the comma or closing bracket (group 1; the match fails on anything
# else) and, after a comma, the whitespace up to the next key or element.
_after_member = cast(_Matcher, re.compile(r"[ \t\n\r]*(?:(,)[ \t\n\r]*|(\}))").match)
_after_element = cast(_Matcher, re.compile(r"[ \t\n\r]*(?:(,)[ \t\n\r]*|(\]))").match)
# A key without escapes, the colon and the whitespace up to the value; keys with escapes take
# the slow path through the scanner.
_SIMPLE_KEY = re.compile(r'"([^"\\]*)"[ \t\n\r]*:[ \t\n\r]*')
# The leading whitespace of every line that starts a member or an element (not a closer).
_MEMBER_INDENT = re.compile(r"^([ \t]+)[^ \t\r\n\]}]", re.MULTILINE)
# A run of backslashes, "u" and four hex digits: a \uXXXX escape when the run is odd.
_U_ESCAPE = re.compile(r"(\\+)u([0-9a-fA-F]{4})")
_STRING = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_SCALAR = rf"(?:{_STRING}|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)"
_STRING_PATTERN = re.compile(_STRING)
# A non-empty array of scalars (in a text whose strings are matched apart first, so that
# brackets inside them are never taken for arrays).
_SCALAR_ARRAY = re.compile(rf"\[[ \t\n\r]*(?:{_SCALAR}[ \t\n\r]*,[ \t\n\r]*)*{_SCALAR}[ \t\n\r]*\]")
# A member whose value holds no object or array with members (most members of a task): its key
# (group 1, without escapes), its value (group 2), and the comma (group 3) or the closing brace
# (group 4) after it, in one match. Other members take the slow path through the scanner.
_FLAT_VALUE = (
    rf"{_SCALAR}|\[[ \t\n\r]*(?:{_SCALAR}[ \t\n\r]*(?:,[ \t\n\r]*{_SCALAR}[ \t\n\r]*)*)?\]"
    r"|\{[ \t\n\r]*\}"
)
_FLAT_MEMBER = re.compile(
    rf'"([^"\\]*)"[ \t\n\r]*:[ \t\n\r]*({_FLAT_VALUE})[ \t\n\r]*(?:(,)[ \t\n\r]*|(\}}))'
)
# Numbers orjson formats differently from json.dumps (``1e-7`` against ``1e-07``, ``0.00001``
# against ``1e-05``). A hit inside a string only costs the slower json.dumps path.
_ORJSON_FLOAT_DRIFT = re.compile(rb"\de-|0\.0000\d")

# json's C scanner: returns (value, end) for the value that starts at an index.
_scan_value: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class _LayoutError(Exception):
    """The text has a layout the splicer does not handle; the caller falls back to dumps."""


# --------------------------------------------------------------------------------------------
# Style detection and whole-document serialization


def detect_style(text: str) -> Style:
    """Detect the formatting conventions of ``text`` (a JSON document, maybe with a BOM).

    * ``indent``: the shortest non-empty leading whitespace of the lines that start a member or
      an element; ``""`` when no line is indented (a single-line file).
    * ``newline``: from the first line break; ``"\\n"`` when there is none.
    * ``final_newline``: the text ends with a line break.
    * ``ensure_ascii``: True only when the text has no raw non-ASCII character *and* at least one
      ``\\uXXXX`` escape of a code point >= 0x7F (``json.dumps`` escapes DEL too, and only with
      ``ensure_ascii``), i.e. only when the file shows that it escapes. Pure ASCII text without
      such escapes gives False: nothing in it tells, and raw UTF-8 is what a person editing the
      file would type. (``json.dumps`` escapes by default, but that only matters for new
      non-ASCII strings; both spellings parse to the same document.)
    * ``inline_arrays``: among the non-empty arrays whose elements are all scalars, those on one
      line outnumber those spread over several lines.
    """
    body = text.removeprefix(_BOM)
    first_break = body.find("\n")
    crlf = first_break > 0 and body[first_break - 1] == "\r"
    return Style(
        indent=_indent_unit(body),
        newline="\r\n" if crlf else "\n",
        final_newline=body.endswith("\n"),
        ensure_ascii=_escapes_non_ascii(body),
        inline_arrays=_mostly_inline_arrays(body),
    )


def _escapes_non_ascii(body: str) -> bool:
    if not body.isascii() or "\\u" not in body:
        return False
    return any(
        len(backslashes) % 2 == 1 and int(code, 16) >= 0x7F
        for backslashes, code in _U_ESCAPE.findall(body)
    )


def _indent_unit(body: str) -> str:
    """The shortest indentation of a line that starts a member or an element, found by trying
    the widths below that of the first such line (a scan per width, no list of every line)."""
    first = _MEMBER_INDENT.search(body)
    if first is None:
        return ""
    lines = "\n" + body
    for width in range(1, len(first.group(1))):
        shorter = _indent_of_width(width).search(lines)
        if shorter is not None:
            return shorter.group(1)
    return first.group(1)


@functools.cache
def _indent_of_width(width: int) -> re.Pattern[str]:
    return re.compile(rf"\n([ \t]{{{width}}})[^ \t\r\n\]}}]")


def _mostly_inline_arrays(body: str) -> bool:
    # Strings become "": what is left of an array of scalars shows whether it is on one line
    # (strings in JSON hold no line break), and brackets in strings are gone.
    arrays = _SCALAR_ARRAY.findall(_STRING_PATTERN.sub('""', body))
    one_line = sum(1 for found in arrays if "\n" not in found)
    return one_line > len(arrays) - one_line


def dumps(doc: JSONValue, style: Style) -> str:
    """Serialize ``doc`` completely in ``style``.

    Two-space indentation without ``ensure_ascii`` goes through orjson (fast); everything else
    through ``json.dumps``; both give the text ``json.dumps(doc, indent=...)`` gives. With
    ``style.inline_arrays`` the arrays of scalars are written on one line. An empty indent gives
    a single line with ``", "`` and ``": "`` separators.
    """
    if not style.indent:
        out = json.dumps(doc, ensure_ascii=style.ensure_ascii, allow_nan=False)
    elif style.inline_arrays:
        out = _pretty(doc, style, "")
    else:
        out = _dumps_indented(doc, style)
    if style.newline != "\n":
        out = out.replace("\n", style.newline)
    return out + style.newline if style.final_newline else out


def _dumps_indented(doc: JSONValue, style: Style) -> str:
    if style.indent == "  " and not style.ensure_ascii:
        raw = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        if not _ORJSON_FLOAT_DRIFT.search(raw):
            return raw.decode()
    return json.dumps(doc, indent=style.indent, ensure_ascii=style.ensure_ascii, allow_nan=False)


def _compact(value: JSONValue, style: Style) -> str:
    """One line, with ``", "`` and ``": "`` separators."""
    plain = _plain(value)
    if plain is not None:
        return plain
    return json.dumps(value, ensure_ascii=style.ensure_ascii, allow_nan=False)


def _pretty(value: JSONValue, style: Style, base: str, *, expand: bool = False) -> str:
    """Multi-line text for ``value``; nested lines are indented from ``base`` (the indentation of
    the line the value starts on) and the closing bracket is aligned with ``base``.

    Objects always spread over lines; arrays of scalars stay on one line when the style says so
    (``expand`` forces the outermost array over several lines). Line breaks are ``"\\n"``.
    """
    inner = base + style.indent
    if isinstance(value, dict) and value:
        members = [
            f"{inner}{_compact(k, style)}: {_pretty(v, style, inner)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(members) + "\n" + base + "}"
    if isinstance(value, list) and value:
        if not expand and style.inline_arrays and not any(_is_container(v) for v in value):
            return _compact(value, style)
        elements = [inner + _pretty(v, style, inner) for v in value]
        return "[\n" + ",\n".join(elements) + "\n" + base + "]"
    return _compact(value, style)


def _is_container(value: JSONValue) -> bool:
    return isinstance(value, dict | list)


# --------------------------------------------------------------------------------------------
# The expected document: the parsed text with the edits applied


def _parse(body: str) -> JSONValue:
    try:
        doc: JSONValue = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"apply_edits: the text is not valid JSON: {exc}") from exc
    return doc


def _clean(value: JSONValue, path: Path) -> JSONValue:
    """A private copy of an edit's value, checked to be JSON that survives a round trip."""
    kind = type(value)
    if value is None or kind is bool or (kind is str and value.isascii()):  # type: ignore[union-attr]
        return value  # immutable, and written as it is
    if kind is int and -(2**63) <= value < 2**64:  # type: ignore[operator]
        return value
    _check_value(value, path)
    try:
        copy: JSONValue = orjson.loads(orjson.dumps(value))
    except TypeError as exc:  # surrogates, integers beyond 64 bits
        raise ValueError(f"edit at {path!r}: value cannot be written as JSON: {exc}") from exc
    return copy


def _check_value(value: object, path: Path) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"edit at {path!r}: {value!r} is not a JSON number")
    if isinstance(value, list):
        for item in value:
            _check_value(item, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"edit at {path!r}: object key {key!r} is not a string")
            _check_value(item, path)
    elif value is not None and not isinstance(value, bool | int | float | str):
        raise TypeError(f"edit at {path!r}: {type(value).__name__} is not a JSON value")


def _step(container: JSONValue, step: str | int, path: Path) -> JSONValue:
    """The member or element ``step`` of ``container``; ``path`` names the edit for messages."""
    if isinstance(container, dict) and isinstance(step, str):
        if step not in container:
            raise KeyError(f"edit at {path!r}: no key {step!r}")
        return container[step]
    if isinstance(container, list) and isinstance(step, int) and not isinstance(step, bool):
        if not 0 <= step < len(container):
            raise IndexError(f"edit at {path!r}: index {step} is out of range")
        return container[step]
    raise KeyError(f"edit at {path!r}: {step!r} does not address a member of a {_kind(container)}")


def _kind(value: JSONValue) -> str:
    if isinstance(value, dict):
        return "JSON object"
    return "JSON array" if isinstance(value, list) else "JSON scalar"


def _lookup(doc: JSONValue, steps: Path, path: Path | None = None) -> JSONValue:
    """The value at ``steps``; errors name ``path`` (the whole edit path) when given."""
    for step in steps:
        doc = _step(doc, step, path or steps)
    return doc


@dataclass(slots=True)
class _Plan:
    """The expected document: the parsed text with the edits applied, in order."""

    doc: JSONValue
    paths: list[Path] = field(default_factory=list)
    growing: set[Path] = field(default_factory=set)  # objects that got new keys

    def set(self, path: Path, value: JSONValue, before: str | None) -> None:
        """Set ``value`` at ``path``. A key the parent object lacks is added at the end, or just
        before ``before`` when the parent has that key."""
        self.paths.append(path)
        if not path:
            self.doc = value
            return
        parent = _lookup(self.doc, path[:-1], path)
        last = path[-1]
        if not isinstance(parent, dict) or not isinstance(last, str):
            _step(parent, last, path)  # raises KeyError or IndexError naming the path
            if isinstance(parent, list) and isinstance(last, int):
                parent[last] = value
        elif last in parent:
            parent[last] = value
        elif before is None or before not in parent:
            self.growing.add(path[:-1])
            parent[last] = value
        else:
            self.growing.add(path[:-1])
            members = list(parent.items())
            parent.clear()
            for key, item in members:
                if key == before:
                    parent[last] = value
                parent[key] = item


# --------------------------------------------------------------------------------------------
# Walking the text along the edit paths

# The edit paths as a tree: a step maps to the subtree below it, or to None at an edited value.
_Tree: TypeAlias = dict[str | int, "_Tree | None"]


class _Member(NamedTuple):
    """One member of an object in the text: ``gap`` is where the whitespace before its key
    starts (just after ``{`` or ``,``)."""

    key: str
    gap: int
    key_start: int
    key_end: int
    value_start: int
    value_end: int


@dataclass(slots=True)
class _Object:
    """An object on an edit path. ``members`` is complete only for objects that grow."""

    open: int
    close: int = -1
    members: list[_Member] = field(default_factory=list)


class _Value(NamedTuple):
    """An edited value in the text: its span, its parsed old value, and where its line's
    indentation is read (the key for a member, the value itself for an element)."""

    line_at: int
    start: int
    end: int
    old: Any


@dataclass(slots=True)
class _Walk:
    """The spans found by walking ``text`` along a tree of paths.

    Objects whose paths are in ``growing`` get new keys, so all their members are recorded;
    in the others the walk stops at the last key the tree asks for (the end of the object comes
    from one call of the C scanner).
    """

    text: str
    growing: set[Path]
    objects: dict[Path, _Object] = field(default_factory=dict)
    values: dict[Path, _Value] = field(default_factory=dict)

    def container(self, start: int, tree: _Tree, path: Path, *, need_end: bool = True) -> int:
        """Walk the object or array at ``start``; return the index just after it (-1 when the
        caller said it does not need it and the walk stopped early)."""
        opener = self.text[start]
        if opener == "{":
            return self.object(start, tree, path, need_end)
        if opener == "[":
            return self.array(start, tree, path)
        raise _LayoutError(f"expected an object or array at {path!r}")

    def member(self, line_at: int, start: int, subtree: _Tree | None, sub: Path) -> int:
        """Walk the container at ``start``, or record the edited value there; return its end."""
        if subtree is not None:
            return self.container(start, subtree, sub)
        old, end = _scan_value(self.text, start)
        self.values[sub] = _Value(line_at, start, end, old)
        return end

    def object(self, open_at: int, tree: _Tree, path: Path, need_end: bool = True) -> int:
        text = self.text
        obj = _Object(open_at)
        self.objects[path] = obj
        grows = path in self.growing
        wanted = len(tree)
        end = _scan_value(text, open_at)[1] if need_end and not grows else -1
        if not grows and self.flat_members(open_at, len(text) if end < 0 else end, tree, path):
            obj.close = end - 1
            return end
        gap = open_at + 1
        at = _skip_ws(text, gap).end()
        while wanted or grows:
            if text[at] == "}":
                obj.close = at
                return at + 1
            flat = _FLAT_MEMBER.match(text, at)
            if flat is not None:
                # The common case, in one match: key, value, and what follows.
                key, key_end, value_start = flat.group(1), flat.end(1) + 1, flat.start(2)
                value_end = flat.end(2)
                if key in tree:
                    wanted -= 1
                    self.member(at, value_start, tree[key], (*path, key))
                comma, next_gap, next_at = flat.group(3), flat.end(3), flat.end()
                closer, after = flat.start(4), flat.end(4)
            else:
                key, key_end, value_start = self.key(at)
                if key in tree:
                    wanted -= 1
                    value_end = self.member(at, value_start, tree[key], (*path, key))
                else:
                    value_end = _scan_value(text, value_start)[1]
                separator = _after_member(text, value_end)
                comma, next_gap, next_at = separator.group(1), separator.end(1), separator.end()
                closer, after = separator.start(2), separator.end(2)
            if grows:
                obj.members.append(_Member(key, gap, at, key_end, value_start, value_end))
            if comma is None:
                obj.close = closer
                return after
            gap, at = next_gap, next_at
        obj.close = end - 1
        return end

    def flat_members(self, open_at: int, stop: int, tree: _Tree, path: Path) -> bool:
        """Find the edited members ``tree`` of the object at ``open_at`` (which ends before
        ``stop``) by their keys alone (:func:`_find_key`), without walking the members before
        them, when the object holds no other object (its text has no other ``{``, not even in a
        string); False when it cannot be done that way."""
        text = self.text
        if text.find("{", open_at + 1, stop) != -1:
            return False
        found: list[Path] = []
        for key, subtree in tree.items():
            spot = _find_key(text, open_at, stop, key) if isinstance(key, str) else None
            if subtree is not None or spot is None:
                break  # not there (or spelled with escapes): the walk finds out
            at, value_start = spot
            old, end = _scan_value(text, value_start)
            sub = (*path, key)
            self.values[sub] = _Value(at, value_start, end, old)
            found.append(sub)
        else:
            return True
        for sub in found:
            del self.values[sub]
        return False

    def key(self, at: int) -> tuple[str, int, int]:
        """The key starting at ``at``, the index after its closing quote, and the value start."""
        simple = _SIMPLE_KEY.match(self.text, at)
        if simple:
            return simple.group(1), simple.end(1) + 1, simple.end()
        key, key_end = _scan_value(self.text, at)
        colon = _skip_ws(self.text, key_end).end()
        if not isinstance(key, str) or self.text[colon] != ":":
            raise _LayoutError(f"expected a key at index {at}")
        return key, key_end, _skip_ws(self.text, colon + 1).end()

    def array(self, open_at: int, tree: _Tree, path: Path) -> int:
        text = self.text
        at = _skip_ws(text, open_at + 1).end()
        if text[at] == "]":
            return at + 1
        index = 0
        while True:
            if index in tree:
                end = self.member(at, at, tree[index], (*path, index))
            else:
                end = _scan_value(text, at)[1]
            separator = _after_element(text, end)
            if separator.group(1) != ",":
                return separator.end(2)
            at = separator.end()
            index += 1


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """The edited paths that are not inside another edited value."""
    edited = set(paths)
    return [p for p in edited if not any(p[:depth] in edited for depth in range(len(p)))]


def _tree(paths: list[Path]) -> _Tree:
    root: _Tree = {}
    for path in paths:
        node = root
        for step in path[:-1]:
            child = node.get(step)
            if child is None:
                child = {}
                node[step] = child
            node = child
        node[path[-1]] = None
    return root


# --------------------------------------------------------------------------------------------
# New text for edited and inserted values

_Splice: TypeAlias = tuple[int, int, str]


def _line_indent(text: str, at: int) -> str:
    """The leading whitespace of the line that holds index ``at``."""
    line = text[text.rfind("\n", 0, at) + 1 : at]
    return line[: len(line) - len(line.lstrip(" \t"))]


def _with_newlines(rendered: str, style: Style) -> str:
    return rendered if style.newline == "\n" else rendered.replace("\n", style.newline)


def _replacement(new: JSONValue, old_text: str, base: str, style: Style) -> str:
    """Text for ``new`` in place of ``old_text``, on a line indented by ``base``.

    Scalars and empty containers are written compactly. A container replacing a one-line
    non-empty container stays on one line; one replacing a multi-line container spreads over
    lines; one replacing a scalar or an empty container follows the style (objects over lines,
    arrays of scalars on one line when ``style.inline_arrays``).
    """
    if not style.indent or not new or not _is_container(new):
        return _compact(new, style)
    old_filled = old_text[0] in "[{" and _skip_ws(old_text, 1).end() < len(old_text) - 1
    if old_filled and "\n" not in old_text:
        return _compact(new, style)
    return _with_newlines(_pretty(new, style, base, expand=old_filled), style)


def _plain(value: JSONValue) -> str | None:
    """The text of a scalar that is written the same in every style: not a string with
    characters that ``ensure_ascii`` escapes (non-ASCII and DEL)."""
    kind = type(value)
    if kind is str:
        text = cast(str, value)
        if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
            return f'"{text}"'  # nothing to escape: what json.dumps writes
    elif value is None:
        return "null"
    elif kind is bool:
        return "true" if value else "false"
    elif kind is int:
        return int.__repr__(cast(int, value))
    if _is_container(value) or (
        isinstance(value, str) and (not value.isascii() or "\x7f" in value)
    ):
        return None
    return json.dumps(value, allow_nan=False)


def _fresh(value: JSONValue, style: Style, base: str | None) -> str:
    """Text for an inserted value; ``base`` is its line's indentation, None in a one-line
    object (where the value is written on one line too)."""
    if base is None or not style.indent:
        return _compact(value, style)
    return _with_newlines(_pretty(value, style, base), style)


def _gap(text: str, members: list[_Member], index: int) -> str:
    """The whitespace that separates member ``index`` from the member before it; for the first
    member, the separation used between members. An object with one member on one line has
    none to copy: a space, unless its colon has no space either (a compact file)."""
    if index == 0 and len(members) > 1:
        index = 1
    member = members[index]
    gap = text[member.gap : member.key_start]
    if index > 0 or "\n" in gap:
        return gap
    return " " if text[member.key_end : member.value_start].endswith(" ") else ""


@dataclass(frozen=True, slots=True)
class _Growth:
    """Adds to the object ``obj`` of ``text`` the keys of ``final`` (its new value) it lacks."""

    text: str
    obj: _Object
    final: dict[str, JSONValue]
    style: Style

    def splices(self) -> list[_Splice]:
        """Each missing key goes just before the next key the object has (in ``final``'s order),
        or after its last member."""
        if not self.obj.members:
            return [self.fill_empty()]
        index_of = {m.key: i for i, m in enumerate(self.obj.members)}
        splices: list[_Splice] = []
        pending: list[str] = []
        for key in self.final:
            if key not in index_of:
                pending.append(key)
            elif pending:
                splices.append(self.insert_before(index_of[key], pending))
                pending = []
        if pending:
            splices.append(self.insert_after_last(pending))
        return splices

    def fill_empty(self) -> _Splice:
        base = _line_indent(self.text, self.obj.open)
        rendered = _fresh(self.final, self.style, base)
        return (self.obj.open, self.obj.close + 1, rendered)

    def member_text(self, key: str, colon: str, base: str | None) -> str:
        return _compact(key, self.style) + colon + _fresh(self.final[key], self.style, base)

    def insert_before(self, index: int, keys: list[str]) -> _Splice:
        anchor = self.obj.members[index]
        gap = _gap(self.text, self.obj.members, index)
        colon = self.text[anchor.key_end : anchor.value_start]
        base = _line_indent(self.text, anchor.key_start) if "\n" in gap else None
        added = "".join(self.member_text(k, colon, base) + "," + gap for k in keys)
        return (anchor.key_start, anchor.key_start, added)

    def insert_after_last(self, keys: list[str]) -> _Splice:
        last = self.obj.members[-1]
        gap = _gap(self.text, self.obj.members, len(self.obj.members) - 1)
        colon = self.text[last.key_end : last.value_start]
        base = gap.rpartition("\n")[2] if "\n" in gap else None
        added = "".join("," + gap + self.member_text(k, colon, base) for k in keys)
        return (last.value_end, last.value_end, added)


# --------------------------------------------------------------------------------------------
# Splicing and the safety net


def _splice(text: str, start: int, plan: _Plan, style: Style | None = None) -> str:
    """``text`` with the values at the plan's paths replaced or inserted as in its document."""
    walk = _Walk(text, plan.growing)
    targets = _outermost(plan.paths)
    root = _skip_ws(text, start).end()
    if () in targets:
        old, end = _scan_value(text, root)
        walk.values[()] = _Value(root, root, end, old)
    else:
        walk.container(root, _tree(targets), (), need_end=False)
    splices: list[_Splice] = []
    grown: set[Path] = set()
    for path in targets:
        found = walk.values.get(path)
        if found is None:
            if path[:-1] not in walk.objects:
                raise _LayoutError(f"no object in the text for {path!r}")
            grown.add(path[:-1])
            continue
        new = _lookup(plan.doc, path)
        if _same_json(found.old, new):
            continue
        rendered = _plain(new)
        if rendered is None:
            style = style or detect_style(text)
            old_text = text[found.start : found.end]
            base = _line_indent(text, found.line_at)
            rendered = _replacement(new, old_text, base, style)
        splices.append((found.start, found.end, rendered))
    for path in grown:
        final = _lookup(plan.doc, path)
        if not isinstance(final, dict) or path not in plan.growing:
            raise _LayoutError(f"{path!r} is not an object that gets new keys")
        style = style or detect_style(text)
        splices.extend(_Growth(text, walk.objects[path], final, style).splices())
    return _join(text, splices)


def _join(text: str, splices: list[_Splice]) -> str:
    splices.sort(key=lambda splice: (splice[0], splice[1]))
    pieces: list[str] = []
    done = 0
    for begin, end, new_text in splices:
        if begin < done:
            raise _LayoutError("overlapping edits")
        pieces += (text[done:begin], new_text)
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def _parses_to(text: str, start: int, want: bytes) -> bool:
    try:
        return orjson.dumps(orjson.loads(text[start:])) == want
    except orjson.JSONDecodeError:
        return False


def apply_edits(
    text: str,
    edits: Sequence[tuple[Path, JSONValue]],
    *,
    insert_before: Mapping[Path, str] | None = None,
    style: Style | None = None,
    parsed: JSONValue | None = None,
) -> str:
    """Set each edit's value at its path in the JSON ``text``, changing only those values' bytes.

    Edits apply in order. A path addresses object keys and array indexes; its parent must exist.
    A key the parent object lacks is inserted after the object's last member, or just before the
    key ``insert_before[parent_path]`` when the parent has it. Inserted members copy the layout of
    their siblings; new values are written as described in :func:`_replacement`. An edit whose
    value equals the current one changes nothing, and no edits return ``text`` itself.

    The spliced text is parsed and compared (key order included) with the expected document; if
    they differ or the layout surprised the splicer, the result is a full :func:`dumps` in the
    detected style instead. A leading BOM is kept either way.

    Raises ValueError when ``text`` is not JSON or a value is not JSON (NaN, infinity), TypeError
    for a value of a non-JSON type, KeyError for a missing parent or a step of the wrong kind,
    IndexError for an index out of range. ``style`` saves detecting it again when the caller
    knows it (:func:`detect_style` of this text or of an earlier version of it); ``parsed``
    saves parsing ``text`` again when the caller already has (and no longer needs) its parse:
    it is changed in place.
    """
    if not edits:
        return text
    start = 1 if text.startswith(_BOM) else 0
    plan = _plan(text, start, edits, insert_before, parsed)
    spliced = _checked_splice(text, start, plan, style)
    if spliced is not None:
        return spliced
    return text[:start] + dumps(plan.doc, style or detect_style(text))


def splice_members(
    text: str,
    members: Mapping[str, JSONValue],
    *,
    start: int,
    style: Style,
    parsed: dict[str, JSONValue],
) -> str | None:
    """:func:`apply_edits` setting the members ``members`` (key -> value) of the object that
    starts at ``start``, without its fallback; ``parsed`` is the object's parse (changed in
    place).

    ``text[:start]`` is not part of the object: it is kept as it is, and it gives the splicer
    the line that the object starts on (an object cut out of a larger text is passed with the
    indentation of its first line in front of it, and gets the same splices as in place).
    Returns the spliced text, or None when only a full rewrite would do (the safety net found a
    difference, or the layout surprised the splicer). Raises as :func:`apply_edits`.
    """
    quick = _flat_splice(text, start, parsed, members, style)
    if quick is not None:
        return quick
    edits: list[tuple[Path, JSONValue]] = [((key,), value) for key, value in members.items()]
    return _checked_splice(text, start, _plan(text, start, edits, None, parsed), style)


def _flat_splice(
    text: str,
    start: int,
    parsed: dict[str, JSONValue],
    members: Mapping[str, JSONValue],
    style: Style,
) -> str | None:
    """The common case of :func:`splice_members`, without a walk: values of members of an
    object that holds no other object. None when it does not apply, or when its result does
    not pass the safety net (the general path then has its say).

    It finds the same members as the walk (by :func:`_find_key`) and writes the same text for
    them. ``parsed`` is left as it was when it returns None.
    """
    values: dict[str, JSONValue] = {}
    for key, value in members.items():
        if key not in parsed:
            return None
        values[key] = _clean(value, (key,))
    root = _skip_ws(text, start).end()
    if text[root] != "{" or text.find("{", root + 1) != -1:
        return None
    splices: list[_Splice] = []
    for key, new in values.items():
        found = _find_key(text, root, len(text), key)
        if found is None:
            return None
        at, value_start = found
        old, end = _scan_value(text, value_start)
        if _same_json(old, new):
            continue
        rendered = _plain(new)
        if rendered is None:
            rendered = _replacement(new, text[value_start:end], _line_indent(text, at), style)
        splices.append((value_start, end, rendered))
    spliced = _join(text, splices)
    want = orjson.dumps({**parsed, **values})
    if not _parses_to(spliced, start, want):
        return None
    parsed.update(values)
    return spliced


_SCALAR_TYPES = (str, int, bool, type(None))


def _same_json(old: JSONValue, new: JSONValue) -> bool:
    """Whether two values are the same JSON (types strictly: ``1`` is not ``true``)."""
    if type(old) in _SCALAR_TYPES and type(new) in _SCALAR_TYPES:
        return type(old) is type(new) and old == new  # without serializing them
    return orjson.dumps(old) == orjson.dumps(new)


def _plan(
    text: str,
    start: int,
    edits: Sequence[tuple[Path, JSONValue]],
    insert_before: Mapping[Path, str] | None,
    parsed: JSONValue | None,
) -> _Plan:
    plan = _Plan(parsed if parsed is not None else _parse(text[start:]))
    anchors = insert_before or {}
    for raw_path, value in edits:
        path = tuple(raw_path)
        plan.set(path, _clean(value, path), anchors.get(path[:-1]))
    return plan


def _checked_splice(text: str, start: int, plan: _Plan, style: Style | None) -> str | None:
    want = orjson.dumps(plan.doc)
    try:
        spliced = _splice(text, start, plan, style)
    except Exception:  # the safety net: whatever went wrong, a full rewrite is still correct
        return None
    return spliced if _parses_to(spliced, start, want) else None


def _find_key(text: str, open_at: int, stop: int, key: str) -> tuple[int, int] | None:
    """The first member ``key`` of the object at ``open_at`` (ending before ``stop``), found by
    its key alone, when the object holds no other object: where its key and value start. None
    when not found that way (spelled with escapes, or not there).

    Every key in such an object is one of its own members. A key is a string followed by a
    colon; the quote found before the key's letters is its opening quote when no backslash is
    before it (in valid JSON a quote after a backslash is escaped, and one that ends a string
    cannot be followed by a key's letters). The first such key is the member a walk finds,
    unless the same key is also spelled with escapes before it: the object then has the key
    twice, and this finds the later one, which parsers keep.
    """
    if '"' in key or "\\" in key:
        return None
    needle = f'"{key}"'
    at = text.find(needle, open_at + 1, stop)
    while at != -1:
        colon = _skip_ws(text, at + len(needle)).end()
        if text[colon] == ":" and text[at - 1] != "\\":
            return at, _skip_ws(text, colon + 1).end()
        at = text.find(needle, at + 1, stop)
    return None


# --------------------------------------------------------------------------------------------
# The outline of a queue file


class Outline(NamedTuple):
    """Where the members of a top-level object and the elements of one of its arrays are:
    ``members`` maps each key to the start of the key, the start and the end of its value;
    ``elements`` lists the start and end of each element of the array. Indexes in the text."""

    members: dict[str, tuple[int, int, int]]
    elements: list[tuple[int, int]]


def outline(text: str, array_key: str) -> Outline | None:
    """The outline of ``text`` (a JSON object, maybe after a BOM) and of its array
    ``array_key``; None when the text is not an object, has no such array, or has a key twice
    at the top (whichever occurrence a parser keeps, an edit could miss it)."""
    try:
        return _outline(text, array_key)
    except (_LayoutError, ValueError, IndexError, AttributeError):
        return None


def _outline(text: str, array_key: str) -> Outline | None:
    walk = _Walk(text, set())
    at = _skip_ws(text, 1 if text.startswith(_BOM) else 0).end()
    if text[at] != "{":
        return None
    members: dict[str, tuple[int, int, int]] = {}
    elements: list[tuple[int, int]] | None = None
    separator = _after_open(text, at + 1)
    while text[separator.end()] != "}":
        at = separator.end()
        key, _, value_start = walk.key(at)
        if key in members:
            return None
        if key == array_key and text[value_start] == "[":
            elements, value_end = _elements(text, value_start)
        else:
            value_end = _scan_value(text, value_start)[1]
        members[key] = (at, value_start, value_end)
        separator = _after_member(text, value_end)
        if separator.group(1) != ",":
            break
    return None if elements is None else Outline(members, elements)


def _elements(text: str, open_at: int) -> tuple[list[tuple[int, int]], int]:
    """The spans of the elements of the array at ``open_at``, and the index after it."""
    spans: list[tuple[int, int]] = []
    at = _skip_ws(text, open_at + 1).end()
    if text[at] == "]":
        return spans, at + 1
    while True:
        end = _scan_value(text, at)[1]
        spans.append((at, end))
        separator = _after_element(text, end)
        if separator.group(1) != ",":
            return spans, separator.end(2)
        at = separator.end()
