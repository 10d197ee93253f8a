"""Quick writes re-render task objects alone: the result must be the whole-file splice's.

For random queue documents in random layouts (indentation, tabs, CRLF, BOM, one-line and
compact files, inline arrays, keys of the user's own, ``summary`` before or after the tasks)
and random edits of random tasks (values replaced, members added, nested values) and of
``summary``, :meth:`Layout.render` gives byte for byte what ``jsonedit.apply_edits`` gives
for the whole file, and the layout it returns is the one found by reading the new bytes.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import jsonedit
from orchestrator.filelayout import Layout, TaskEdits

from .test_jsonedit import FORMATS, KEYS, SCALARS, VALUES, Format, Writer, queue_docs

BOM = "\ufeff"


@st.composite
def layouts(draw: st.DrawFn, doc: dict[str, Any]) -> str:
    """``doc`` as text: one member per line in a random style, or on one line."""
    kind = draw(st.sampled_from(["lines", "lines", "one-line", "compact", "indent"]))
    if kind == "lines":
        fmt: Format = draw(FORMATS)
        collapse = draw(st.lists(st.booleans(), min_size=1))
        text, _ = Writer(fmt, iter(collapse * 1000)).write(doc)
    elif kind == "one-line":
        text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    elif kind == "compact":
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
    else:
        indent = draw(st.sampled_from(["1", "2", "4", "\t"]))
        indent_arg: int | str = int(indent) if indent.isdigit() else indent
        text = json.dumps(doc, indent=indent_arg, ensure_ascii=draw(st.booleans()))
        if draw(st.booleans()):
            text = text.replace("\n", "\r\n")
    return (BOM if draw(st.booleans()) else "") + text


@st.composite
def task_edits(draw: st.DrawFn, doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Index -> members to set: existing keys (mostly to scalars, as the daemon does) or new."""
    tasks = doc["features"]
    out: dict[int, dict[str, Any]] = {}
    for index in draw(st.sets(st.integers(0, len(tasks) - 1), max_size=len(tasks))):
        keys = st.sampled_from(sorted(tasks[index])) | KEYS
        out[index] = draw(st.dictionaries(keys, SCALARS | VALUES, min_size=1, max_size=4))
    return out


def whole_file(text: str, edits: dict[int, dict[str, Any]], summary: Any) -> bytes:
    flat: list[tuple[jsonedit.Path, Any]] = [
        (("features", index, key), value)
        for index, members in edits.items()
        for key, value in members.items()
    ]
    if summary is not None:
        flat.append((("summary",), summary))
    style = jsonedit.detect_style(text)
    out = jsonedit.apply_edits(text, flat, insert_before={(): "features"}, style=style)
    return out.encode("utf-8")


def render(text: str, edits: dict[int, dict[str, Any]], summary: Any) -> tuple[bytes, Layout]:
    data = text.encode("utf-8")
    layout = Layout.of(data, "features")
    assert layout is not None
    tasks: dict[int, TaskEdits] = {i: (layout.task(data, i), m) for i, m in edits.items()}
    rendered = layout.render(data, tasks, summary, jsonedit.detect_style(text))
    assert rendered is not None
    return rendered


@settings(max_examples=300, deadline=None)
@given(data=st.data(), doc=queue_docs())
def test_a_quick_write_is_the_whole_file_splice(data: st.DataObject, doc: dict[str, Any]) -> None:
    text = data.draw(layouts(doc))
    edits = data.draw(task_edits(doc))
    summary = data.draw(st.none() | st.dictionaries(KEYS, SCALARS, max_size=4))
    bytes_ = text.encode("utf-8")
    layout = Layout.of(bytes_, "features")
    assert layout is not None
    assert layout.summary_value == doc.get("summary")
    tasks: dict[int, TaskEdits] = {i: (layout.task(bytes_, i), m) for i, m in edits.items()}
    if "summary" not in doc:
        summary = None  # adding it is a whole-file write
    rendered = layout.render(bytes_, tasks, summary, jsonedit.detect_style(text))
    expected = whole_file(text, edits, summary)
    if rendered is None:
        # Only when a piece needed more than a splice: the whole file is rewritten then.
        style = jsonedit.detect_style(text)
        full = expected.decode("utf-8").removeprefix(BOM)
        assert full == jsonedit.dumps(json.loads(full), style)
        return
    new, moved = rendered
    assert new == expected
    assert moved == Layout.of(new, "features")


# Files the daemon writes: a quick write must splice them, never fall back.
DAEMON_LIKE = {
    "id": "A",
    "description": 'naïve café, "quoted", {braces} and [brackets]',
    "status": "pending",
    "attempts": 0,
    "last_attempt": None,
    "passes": False,
    "files_actually_changed": [],
    "mine": {"nested": [1, 2]},
}


@given(
    fmt=FORMATS,
    collapse=st.lists(st.booleans(), min_size=1),
    bom=st.booleans(),
    summary_first=st.booleans(),
)
@settings(max_examples=100, deadline=None)
def test_daemon_edits_are_spliced_in_every_layout(
    fmt: Format, collapse: list[bool], bom: bool, summary_first: bool
) -> None:
    tasks: list[dict[str, Any]] = [dict(DAEMON_LIKE, id=str(i)) for i in range(4)]
    tasks[2].pop("mine")
    summary = {"total": 4, "pending": 4, "complete": 0}
    doc: dict[str, Any] = {"summary": summary, "features": tasks}
    if not summary_first:
        doc = {"features": tasks}
    if not summary_first:
        doc["summary"] = summary
    text = (BOM if bom else "") + Writer(fmt, iter(collapse * 1000)).write(doc)[0]
    edits: dict[int, dict[str, Any]] = {
        1: {"status": "in_progress", "attempts": 1, "last_attempt": "2025-01-01T00:00:00Z"},
        2: {"status": "complete", "passes": True, "files_actually_changed": ["a.py", "é.py"]},
        3: {"error": "exit 1: naïve"},
    }
    new_summary = {"total": 4, "pending": 1, "complete": 1, "in_progress": 1}
    new, moved = render(text, edits, new_summary)
    assert new == whole_file(text, edits, new_summary)
    assert moved == Layout.of(new, "features")
    # And again from the new version, as the next quick write does.
    again: dict[int, dict[str, Any]] = {
        0: {"status": "skipped"},
        3: {"status": "failed", "attempts": 2},
    }
    newer, _ = render(new.decode("utf-8"), again, None)
    assert newer == whole_file(new.decode("utf-8"), again, None)


def test_files_without_a_layout() -> None:
    assert Layout.of(b'{"features": [{"id": "A"}], "features": []}', "features") is None
    assert Layout.of(b'{"features": [{"id": "A"}, 3]}', "features") is None
    assert Layout.of(b'{"features": {"id": "A"}}', "features") is None
    assert Layout.of(b"[1, 2]", "features") is None
    layout = Layout.of(b'{"track": {"paused": true}, "features": []}', "features")
    assert layout is not None
    assert layout.paused
    assert layout.summary is None
