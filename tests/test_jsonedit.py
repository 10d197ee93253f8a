"""Format-preserving edits of queue files (``orchestrator.jsonedit``).

The real queue files are edited and the result is compared with a text predicted line by line
by a small locator that knows nothing of the splicer. Random documents in random styles check
that edits keep every other line, and that the text still parses to the expected document.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import jsonedit
from orchestrator.jsonedit import JSONValue, Style, apply_edits, detect_style, dumps

EditPath = tuple[str | int, ...]
Edit = tuple[EditPath, JSONValue]

EXAMPLES = FilePath(__file__).parent / "fixtures" / "examples"

# name: (task list key, the style the file is written in)
EXAMPLE_STYLES = {
    "km-queue-active.json": ("features", Style("  ", "\n", False, False, False)),
    "work_queue_adr001.json": ("tasks", Style("  ", "\n", True, False, True)),
    "work_queue_karematch.json": ("features", Style("  ", "\n", False, True, False)),
    "work_queue_karematch_backend.json": ("features", Style("  ", "\n", True, False, False)),
    "work_queue_karematch_provider_onboarding.json": (
        "features",
        Style("  ", "\n", True, False, True),
    ),
}
EXAMPLE_NAMES = sorted(EXAMPLE_STYLES)


def read_example(name: str) -> str:
    return (EXAMPLES / name).read_bytes().decode("utf-8")


def canonical(doc: Any) -> str:
    """Equal for equal documents with equal key order."""
    return json.dumps(doc, ensure_ascii=True)


def parses_to(text: str, doc: Any) -> bool:
    return canonical(json.loads(text.removeprefix("\ufeff"))) == canonical(doc)


def changed_lines(before: str, after: str) -> set[int]:
    """Indexes of the lines of ``before`` that difflib does not find unchanged in ``after``."""
    matcher = difflib.SequenceMatcher(None, before.split("\n"), after.split("\n"), autojunk=False)
    return {
        line
        for tag, i1, i2, _, _ in matcher.get_opcodes()
        if tag != "equal"
        for line in range(i1, i2)
    }


def is_subsequence(needles: Sequence[str], haystack: Sequence[str]) -> bool:
    rest = iter(haystack)
    return all(any(needle == line for line in rest) for needle in needles)


# ----------------------------------------------------------------------------------------------
# A line-based model of the example files, independent of the module


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


@dataclass
class Layout:
    """Finds members in a file written one member per line (as all examples are)."""

    lines: list[str]

    def task_span(self, task_id: str) -> tuple[int, int]:
        """The line of the task's ``"id"`` member and the line of its closing brace."""
        id_line = next(
            i for i, line in enumerate(self.lines) if f'"id": {json.dumps(task_id)}' in line
        )
        depth = len(indent_of(self.lines[id_line]))
        close = next(
            i for i in range(id_line, len(self.lines)) if len(indent_of(self.lines[i])) < depth
        )
        return id_line, close

    def member_span(self, first: int, stop: int, key: str) -> tuple[int, int] | None:
        """First and last line of the member ``key`` among the lines ``first`` to ``stop``
        written at the indentation of line ``first``."""
        indent = indent_of(self.lines[first])
        for i in range(first, stop):
            line = self.lines[i]
            if indent_of(line) == indent and line.strip().startswith(f"{json.dumps(key)}:"):
                if not line.rstrip(",").endswith(("[", "{")):
                    return i, i
                end = next(j for j in range(i + 1, stop) if indent_of(self.lines[j]) == indent)
                return i, end
        return None

    def value_text(self, span: tuple[int, int]) -> str:
        first = self.lines[span[0]]
        return first[first.index(":") + 1 :].strip().rstrip(",")


def predicted_member(
    indent: str, unit: str, key: str, value: JSONValue, *, one_line: bool, comma: bool
) -> list[str]:
    """How a member with a scalar, a list of scalars or a dict of scalars is written."""
    end = "," if comma else ""
    head = f"{indent}{json.dumps(key)}: "
    if isinstance(value, list) and not one_line:
        body = [f"{indent}{unit}{json.dumps(v)}," for v in value]
        body[-1] = body[-1].rstrip(",")
        return [head + "[", *body, indent + "]" + end]
    if isinstance(value, dict):
        body = [f"{indent}{unit}{json.dumps(k)}: {json.dumps(v)}," for k, v in value.items()]
        body[-1] = body[-1].rstrip(",")
        return [head + "{", *body, indent + "}" + end]
    return [head + json.dumps(value) + end]


@dataclass
class Prediction:
    """The expected text of an example after edits, built line by line."""

    layout: Layout
    style: Style
    replaced: dict[int, list[str]]
    dropped: set[int]
    added_after: dict[int, list[str]]

    def replace(self, span: tuple[int, int], new_lines: list[str]) -> None:
        self.replaced[span[0]] = new_lines
        self.dropped.update(range(span[0] + 1, span[1] + 1))

    def set_task_member(self, task_id: str, key: str, value: JSONValue) -> None:
        first, close = self.layout.task_span(task_id)
        span = self.layout.member_span(first, close, key)
        indent = indent_of(self.layout.lines[first])
        if span is not None:
            old = self.layout.value_text(span)
            one_line = (span[0] == span[1] and old not in ("[]", "null")) or (
                old in ("[]", "null") and self.style.inline_arrays
            )
            comma = self.layout.lines[span[1]].endswith(",")
            member = predicted_member(
                indent, self.style.indent, key, value, one_line=one_line, comma=comma
            )
            self.replace(span, member)
            return
        last = close - 1  # the last line of the task's last member gets a comma
        self.replace((last, last), [self.layout.lines[last] + ","])
        member = predicted_member(
            indent, self.style.indent, key, value, one_line=self.style.inline_arrays, comma=False
        )
        self.added_after[last] = member

    def set_summary(self, task_key: str, summary: dict[str, JSONValue]) -> None:
        lines = self.layout.lines
        task_line = next(i for i, ln in enumerate(lines) if ln.startswith(f'  "{task_key}": '))
        span = self.layout.member_span(1, task_line, "summary")
        member = predicted_member(
            "  ", self.style.indent, "summary", summary, one_line=False, comma=True
        )
        if span is not None:
            self.replace(span, member)
        else:
            self.added_after[task_line - 1] = member

    def text(self) -> str:
        out: list[str] = []
        for i, line in enumerate(self.layout.lines):
            if i not in self.dropped:
                out.extend(self.replaced.get(i, [line]))
            out.extend(self.added_after.get(i, []))
        return "\n".join(out)


def example_edits(doc: dict[str, Any], task_key: str) -> list[Edit]:
    """Status of three tasks, attempts, files_actually_changed, verdict, and the summary."""
    tasks = doc[task_key]
    n = len(tasks)
    edits: list[Edit] = []
    for i in (0, n // 2, n - 1):
        status = "blocked" if tasks[i].get("status") == "in_progress" else "in_progress"
        edits.append(((task_key, i, "status"), status))
    edits.append(((task_key, 0, "attempts"), (tasks[0].get("attempts") or 0) + 1))
    edits.append(((task_key, n // 2, "files_actually_changed"), ["src/a.py", "src/b.py"]))
    verdict = "FAIL" if tasks[n - 1].get("verification_verdict") == "PASS" else "PASS"
    edits.append(((task_key, n - 1, "verification_verdict"), verdict))
    edits.append((("summary",), {"tasks": n, "done": 1, "open": n - 1}))
    return edits


def expected_doc(
    doc: Any, edits: Sequence[Edit], before: Mapping[EditPath, str] | None = None
) -> Any:
    """The document after the edits, computed directly on Python values."""
    result = copy.deepcopy(doc)
    for path, value in edits:
        if not path:
            result = copy.deepcopy(value)
            continue
        parent = result
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        anchor = (before or {}).get(path[:-1])
        if isinstance(parent, dict) and last not in parent and anchor in parent:
            items = list(parent.items())
            parent.clear()
            for key, item in items:
                if key == anchor:
                    parent[last] = copy.deepcopy(value)
                parent[key] = item
        else:
            parent[last] = copy.deepcopy(value)
    return result


# ----------------------------------------------------------------------------------------------
# The real queue files


def test_all_examples_are_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == EXAMPLE_NAMES


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_detect_style_of_examples(name: str) -> None:
    assert detect_style(read_example(name)) == EXAMPLE_STYLES[name][1]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_no_edits_return_the_text_itself(name: str) -> None:
    text = read_example(name)
    assert apply_edits(text, []) is text


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_daemon_edits_change_only_their_lines(name: str) -> None:
    text = read_example(name)
    doc = json.loads(text)
    task_key, style = EXAMPLE_STYLES[name]
    edits = example_edits(doc, task_key)

    result = apply_edits(text, edits, insert_before={(): task_key})

    assert parses_to(result, expected_doc(doc, edits, {(): task_key}))
    prediction = Prediction(Layout(text.split("\n")), style, {}, set(), {})
    for (_, index, key), value in [(p, v) for p, v in edits if len(p) == 3]:
        assert isinstance(index, int)
        assert isinstance(key, str)
        prediction.set_task_member(doc[task_key][index]["id"], key, value)
    summary = edits[-1][1]
    assert isinstance(summary, dict)
    prediction.set_summary(task_key, summary)
    assert result == prediction.text()
    allowed = set(prediction.replaced) | prediction.dropped
    assert changed_lines(text, result) <= allowed
    inserted = sum(map(len, prediction.added_after.values()))
    assert len(result.split("\n")) - len(text.split("\n")) == (
        inserted + sum(map(len, prediction.replaced.values())) - len(allowed)
    )


def test_inserted_task_key_goes_after_the_last_member() -> None:
    text = read_example("work_queue_adr001.json")
    doc = json.loads(text)
    assert "error" not in doc["tasks"][0]

    result = apply_edits(text, [(("tasks", 0, "error"), "boom")])

    before, after = text.split("\n"), result.split("\n")
    last = before.index('        "alembic/versions/001_add_report_generation_tables.py"') + 1
    assert before[last] == "      ]"
    assert after[last : last + 3] == ["      ],", '      "error": "boom"', "    },"]
    assert after[:last] == before[:last]
    assert after[last + 2 :] == before[last + 1 :]
    assert changed_lines(text, result) == {last}


def test_inserted_top_level_keys_copy_blank_line_separation() -> None:
    text = read_example("work_queue_adr001.json")
    result = apply_edits(text, [(("owner",), "me")], insert_before={(): "tasks"})
    assert '  ],\n\n  "owner": "me",\n\n  "tasks": [\n' in result
    assert len(result.split("\n")) == len(text.split("\n")) + 2
    result = apply_edits(text, [(("zeta",), 1)])
    assert result == text[: -len("\n}\n")] + ',\n\n  "zeta": 1\n}\n'


@pytest.mark.parametrize(
    ("name", "ensure_ascii", "final_newline"),
    [
        ("km-queue-active.json", True, False),
        ("work_queue_karematch.json", True, False),
        ("work_queue_karematch_backend.json", False, True),
    ],
)
def test_dumps_reproduces_json_dumps_files(
    name: str, ensure_ascii: bool, final_newline: bool
) -> None:
    text = read_example(name)
    doc = json.loads(text)
    plain = json.dumps(doc, indent=2, ensure_ascii=ensure_ascii)
    assert text == plain + ("\n" if final_newline else "")
    assert dumps(doc, detect_style(text)) == text


def test_dumps_examples_that_are_hand_formatted_keep_their_inline_arrays() -> None:
    text = read_example("work_queue_karematch_provider_onboarding.json")
    out = dumps(json.loads(text), detect_style(text))
    assert '"adr_references": ["ADR-KM-002-001"],' in out
    assert json.loads(out) == json.loads(text)


# ----------------------------------------------------------------------------------------------
# detect_style and dumps on small texts


@pytest.mark.parametrize(
    ("text", "style"),
    [
        ('{"a": [1, 2]}', Style("", "\n", False, False, True)),
        ('{\n "a": 1\n}\n', Style(" ", "\n", True, False, False)),
        (
            '{\r\n\t"a": {\r\n\t\t"b": "\\u00e9"\r\n\t}\r\n}',
            Style("\t", "\r\n", False, True, False),
        ),
        ('{\n    "a": "é \\u00e9"\n}', Style("    ", "\n", False, False, False)),
        ('{\n  "a": "\\\\u00e9"\n}', Style("  ", "\n", False, False, False)),
        ('{\n  "a": "\\u0041"\n}', Style("  ", "\n", False, False, False)),
        ('{\n  "a": "\\u007f"\n}', Style("  ", "\n", False, True, False)),
        (
            '{\n  "a": ["x", "y"],\n  "b": ["[1]"],\n  "c": [\n    1\n  ]\n}',
            Style("  ", "\n", False, False, True),
        ),
        (
            '{\n  "a": ["x", {"b": 1}],\n  "c": [\n    1\n  ],\n  "d": "[1, 2]",\n  "e": "[3]"\n}',
            Style("  ", "\n", False, False, False),
        ),
        ('\ufeff{\n  "a": 1\n}\n', Style("  ", "\n", True, False, False)),
    ],
)
def test_detect_style(text: str, style: Style) -> None:
    assert detect_style(text) == style


DOC: dict[str, JSONValue] = {"a": [1, "é"], "b": {"c": [], "d": {}}, "e": 1e-07}


@pytest.mark.parametrize(
    ("style", "text"),
    [
        (
            Style("  ", "\n", True, False, False),
            json.dumps(DOC, indent=2, ensure_ascii=False) + "\n",
        ),
        (Style("  ", "\n", False, True, False), json.dumps(DOC, indent=2)),
        (
            Style("\t", "\r\n", False, False, False),
            json.dumps(DOC, indent="\t", ensure_ascii=False).replace("\n", "\r\n"),
        ),
        (Style("", "\n", True, True, False), json.dumps(DOC) + "\n"),
        (
            Style(" ", "\r\n", True, False, True),
            '{\r\n "a": [1, "é"],\r\n "b": {\r\n  "c": [],\r\n  "d": {}\r\n },\r\n'
            ' "e": 1e-07\r\n}\r\n',
        ),
    ],
)
def test_dumps_styles(style: Style, text: str) -> None:
    assert dumps(DOC, style) == text


# ----------------------------------------------------------------------------------------------
# apply_edits on small texts


TASKS = """{
  "summary": {},
  "features": [
    {
      "id": "A",
      "tags": ["x"],
      "files": [],
      "more": [
        1
      ]
    }
  ]
}
"""


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("features", 0, "tags"), ["y", "z"], '"tags": ["y", "z"],'),
        (("features", 0, "tags"), [{"k": [1]}], '"tags": [{"k": [1]}],'),
        (("features", 0, "files"), ["f"], '"files": [\n        "f"\n      ],'),
        (("features", 0, "more"), [2, 3], '"more": [\n        2,\n        3\n      ]\n'),
        (("features", 0, "files"), [], '"files": [],'),
        (("features", 0, "id"), None, '"id": null,'),
        (
            ("summary",),
            {"n": 1, "by": {"x": []}},
            '"summary": {\n    "n": 1,\n    "by": {\n      "x": []\n    }\n  },',
        ),
        (("features", 0, "id"), "é", '"id": "é",'),
    ],
)
def test_replaced_values_are_written_in_place(
    path: EditPath, value: JSONValue, fragment: str
) -> None:
    result = apply_edits(TASKS, [(path, value)])
    assert fragment in result
    assert parses_to(result, expected_doc(json.loads(TASKS), [(path, value)]))


def test_inline_style_writes_new_arrays_of_scalars_on_one_line() -> None:
    text = '{\n  "a": ["x"],\n  "b": ["y"],\n  "c": [],\n  "d": null,\n  "e": {}\n}'
    result = apply_edits(
        text, [(("c",), [1, 2]), (("d",), ["z"]), (("e",), {"k": ["v"]}), (("f",), [[1], {}])]
    )
    assert result == (
        '{\n  "a": ["x"],\n  "b": ["y"],\n  "c": [1, 2],\n  "d": ["z"],\n'
        '  "e": {\n    "k": ["v"]\n  },\n  "f": [\n    [1],\n    {}\n  ]\n}'
    )


def test_multi_line_arrays_stay_multi_line_in_an_inline_file() -> None:
    text = read_example("work_queue_adr001.json")
    result = apply_edits(text, [(("tasks", 0, "files"), ["a.py", "b.py"])])
    assert '      "files": [\n        "a.py",\n        "b.py"\n      ]\n    },' in result
    assert changed_lines(text, result) == {
        text.split("\n").index('        "alembic/versions/001_add_report_generation_tables.py"')
    }


def test_equal_values_keep_their_spelling() -> None:
    text = '{"a": [ 1 ,2 ], "b": "\\/\\u00e9", "c": 1E2, "d": {"e" : null}}'
    edits: list[Edit] = [(("a",), [1, 2]), (("b",), "/é"), (("c",), 100.0), (("d",), {"e": None})]
    assert apply_edits(text, edits) == text


def test_one_line_objects_stay_on_one_line() -> None:
    text = '[\n  {"id": "a", "n": 1},\n  {"id": "b"}\n]\n'
    result = apply_edits(text, [((0, "m"), [1, {"x": 2}]), ((1, "n"), 2), ((0, "id"), "z")])
    assert result == '[\n  {"id": "z", "n": 1, "m": [1, {"x": 2}]},\n  {"id": "b", "n": 2}\n]\n'


def test_compact_separators_are_copied() -> None:
    text = '{"a":1,"b":{"c":2}}'
    assert apply_edits(text, [(("b", "d"), 3), (("e",), 4)]) == '{"a":1,"b":{"c":2,"d":3},"e":4}'


def test_insert_before_puts_the_key_before_its_anchor() -> None:
    text = '{\n\t"project": "p",\n\t"features": []\n}'
    result = apply_edits(text, [(("summary",), {"n": 0})], insert_before={(): "features"})
    assert result == '{\n\t"project": "p",\n\t"summary": {\n\t\t"n": 0\n\t},\n\t"features": []\n}'


def test_insert_before_the_first_member_and_an_absent_anchor() -> None:
    text = '{\n    "features": [],\n    "z": 0\n}'
    result = apply_edits(
        text, [(("a",), 1), (("b",), 2)], insert_before={(): "features", ("x",): "y"}
    )
    assert result == '{\n    "a": 1,\n    "b": 2,\n    "features": [],\n    "z": 0\n}'
    result = apply_edits(text, [(("a",), 1)], insert_before={(): "missing"})
    assert result == '{\n    "features": [],\n    "z": 0,\n    "a": 1\n}'


def test_insert_before_the_first_member_copies_the_gap_between_members() -> None:
    text = '{\n  "features": [],\n\n  "z": 0\n}'
    result = apply_edits(text, [(("s",), 1)], insert_before={(): "features"})
    assert result == '{\n  "s": 1,\n\n  "features": [],\n\n  "z": 0\n}'


def test_insert_into_empty_objects() -> None:
    assert apply_edits(TASKS, [(("summary", "n"), 1)]).startswith(
        '{\n  "summary": {\n    "n": 1\n  },\n'
    )
    assert apply_edits('{"a": {}}', [(("a", "n"), 1)]) == '{"a": {"n": 1}}'
    assert apply_edits("{}", [(("n",), [1])]) == '{"n": [1]}'


def test_crlf_bom_and_missing_final_newline_are_kept() -> None:
    text = '\ufeff{\r\n  "a": 1,\r\n  "b": [\r\n    1\r\n  ]\r\n}'
    result = apply_edits(text, [(("b",), [2, 3]), (("c",), {"d": "é"})])
    assert result == (
        '\ufeff{\r\n  "a": 1,\r\n  "b": [\r\n    2,\r\n    3\r\n  ],\r\n'
        '  "c": {\r\n    "d": "é"\r\n  }\r\n}'
    )


def test_escaped_files_get_escaped_strings_and_keys() -> None:
    text = '{\n  "a": "\\u2192",\n  "b": null\n}\n'
    result = apply_edits(text, [(("b",), "→ é"), (("é",), ["ü"])])
    assert result == (
        '{\n  "a": "\\u2192",\n  "b": "\\u2192 \\u00e9",\n  "\\u00e9": [\n    "\\u00fc"\n  ]\n}\n'
    )


def test_keys_with_escapes_and_odd_whitespace() -> None:
    text = '{ "a\\"b" :  1 ,\n   "\\u00e9" : [ 1 ,2 ] , "c":{ } }'
    result = apply_edits(text, [(('a"b',), 2), (("é",), [3]), (("c", "d"), True)])
    assert result == '{ "a\\"b" :  2 ,\n   "\\u00e9" : [3] , "c":{\n      "d": true\n   } }'


def test_equal_values_change_nothing() -> None:
    text = read_example("work_queue_karematch_provider_onboarding.json")
    doc = json.loads(text)
    task = doc["features"][3]
    edits: list[Edit] = [(("features", 3, key), task[key]) for key in task]
    edits.append((("summary",), doc["summary"]))
    assert apply_edits(text, edits) == text


def test_several_edits_of_one_object_and_of_nested_paths() -> None:
    text = (
        '{\n  "s": {\n    "a": 1,\n    "b": 2\n  },\n  "t": [\n    {\n      "x": 1\n    }\n  ]\n}'
    )
    edits: list[Edit] = [
        (("s", "b"), 3),
        (("s", "a"), 0),
        (("s", "c"), 4),
        (("s", "a"), 5),
        (("t", 0), {"y": 1}),
        (("t", 0, "y"), 2),
        (("t", 0, "z"), None),
    ]
    result = apply_edits(text, edits)
    assert result == (
        '{\n  "s": {\n    "a": 5,\n    "b": 3,\n    "c": 4\n  },\n'
        '  "t": [\n    {\n      "y": 2,\n      "z": null\n    }\n  ]\n}'
    )
    assert parses_to(result, expected_doc(json.loads(text), edits))


def test_the_whole_document_can_be_replaced() -> None:
    text = '\n{\n  "a": 1\n}\n\n'
    assert apply_edits(text, [((), {"b": [1]})]) == '\n{\n  "b": [\n    1\n  ]\n}\n\n'


def test_edit_values_are_copied() -> None:
    summary: dict[str, JSONValue] = {"n": 1}
    apply_edits('{"a": 1}', [(("s",), summary), (("s", "m"), 2)])
    assert summary == {"n": 1}


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (("missing", "x"), KeyError, "'missing'"),
        (("features", 5, "id"), IndexError, "index 5"),
        (("features", -1, "id"), IndexError, "index -1"),
        (("features", "0"), KeyError, "'0'"),
        (("summary", 0), KeyError, "JSON object"),
        (("features", 0, "id", "x"), KeyError, "JSON scalar"),
        (("features", 2), IndexError, "('features', 2)"),
    ],
)
def test_bad_paths_raise(path: EditPath, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        apply_edits(TASKS, [(path, 1)])


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), ValueError),
        ({"a": float("inf")}, ValueError),
        ({1: 2}, TypeError),
        ((1,), TypeError),
        ("\ud800", ValueError),
        (2**70, ValueError),
    ],
)
def test_values_that_are_not_json_raise(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        apply_edits(TASKS, [(("summary",), value)])


@pytest.mark.parametrize("text", ["", "{", '{"a": 1,}', "{'a': 1}", '{"a": NaN}'])
def test_text_that_is_not_json_raises(text: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        apply_edits(text, [(("a",), 1)])


# ----------------------------------------------------------------------------------------------
# The safety net


def test_wrong_splices_fall_back_to_a_full_rewrite() -> None:
    text = read_example("work_queue_adr001.json")
    edits: list[Edit] = [(("tasks", 2, "status"), [1, 2]), (("version",), "4.0")]
    expected = expected_doc(json.loads(text), edits)
    with mock.patch.object(jsonedit, "_replacement", return_value='"garbage"'):
        result = apply_edits(text, edits)
    assert result == dumps(expected, detect_style(text))
    assert parses_to(result, expected)


def test_splicer_failures_fall_back_to_a_full_rewrite() -> None:
    text = '\ufeff{\r\n "a": [1, 2],\r\n "b": 1\r\n}\r\n'
    with mock.patch.object(jsonedit, "_splice", side_effect=RuntimeError("surprise")):
        result = apply_edits(text, [(("b",), 2)])
    assert result == '\ufeff{\r\n "a": [1, 2],\r\n "b": 2\r\n}\r\n'


def test_duplicate_keys_are_rewritten_rather_than_misedited() -> None:
    # The walk stops at the first "a"; JSON parsers keep the last one, so the splice is wrong.
    result = apply_edits('{"a": 1, "a": 2}', [(("a",), 5)])
    assert result == '{"a": 5}'


# ----------------------------------------------------------------------------------------------
# Random documents in random styles

KEYS = st.text(st.sampled_from('ab"\\/é→ \t\n\x01🙂'), min_size=1, max_size=4)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.sampled_from('xy "\\é→\n\x7f🙂[]{},:'), max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
TASK = st.dictionaries(KEYS, VALUES, min_size=1, max_size=5)
TOP_KEYS = KEYS.filter(lambda key: key not in ("features", "summary"))


@dataclass(frozen=True)
class Format:
    indent: str
    ensure_ascii: bool
    newline: str
    final_newline: bool
    blank_lines: bool


FORMATS = st.builds(
    Format,
    st.sampled_from([" ", "  ", "    ", "\t"]),
    st.booleans(),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.booleans(),
)

MemberKey = tuple[str | int, str]  # ("top", key) or (task index, key)


@dataclass
class Writer:
    """Writes queue documents with one member per line and records each member's lines."""

    fmt: Format
    collapse: Iterator[bool]

    def write(self, doc: dict[str, Any]) -> tuple[str, dict[MemberKey, tuple[int, int]]]:
        lines: list[str] = ["{"]
        spans: dict[MemberKey, tuple[int, int]] = {}
        unit = self.fmt.indent
        for n, (key, value) in enumerate(doc.items()):
            comma = "," if n < len(doc) - 1 else ""
            first = len(lines)
            if key == "features":
                lines.append(f"{unit}{self.key(key)}: [")
                for i, task in enumerate(value):
                    lines.append(unit * 2 + "{")
                    for m, (task_key, item) in enumerate(task.items()):
                        start = len(lines)
                        end = "," if m < len(task) - 1 else ""
                        self.value(lines, 3, f"{self.key(task_key)}: ", item, end)
                        spans[i, task_key] = (start, len(lines) - 1)
                    lines.append(unit * 2 + "}" + ("," if i < len(value) - 1 else ""))
                lines.append(f"{unit}]{comma}")
            else:
                self.value(lines, 1, f"{self.key(key)}: ", value, comma)
            spans["top", key] = (first, len(lines) - 1)
            if comma and self.fmt.blank_lines:
                lines.append("")
        lines.append("}")
        text = self.fmt.newline.join(lines)
        return text + (self.fmt.newline if self.fmt.final_newline else ""), spans

    def key(self, key: str) -> str:
        return json.dumps(key, ensure_ascii=self.fmt.ensure_ascii)

    def value(self, lines: list[str], depth: int, head: str, value: Any, end: str) -> None:
        indent = self.fmt.indent * depth
        scalars = isinstance(value, list) and not any(isinstance(v, list | dict) for v in value)
        if isinstance(value, dict | list) and value and not (scalars and next(self.collapse)):
            opener, closer = ("{", "}") if isinstance(value, dict) else ("[", "]")
            lines.append(indent + head + opener)
            items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
            for n, (key, item) in enumerate(items):
                inner = "" if key is None else f"{self.key(key)}: "
                self.value(lines, depth + 1, inner, item, "," if n < len(items) - 1 else "")
            lines.append(indent + closer + end)
        else:
            lines.append(
                indent + head + json.dumps(value, ensure_ascii=self.fmt.ensure_ascii) + end
            )


@st.composite
def queue_docs(draw: st.DrawFn) -> dict[str, Any]:
    top = draw(st.dictionaries(TOP_KEYS, VALUES, max_size=3))
    items = list(top.items())
    if draw(st.booleans()):
        items.append(("summary", draw(st.dictionaries(KEYS, SCALARS, max_size=3))))
    items.append(("features", draw(st.lists(TASK, min_size=1, max_size=4))))
    items.insert(draw(st.integers(0, len(top))), items.pop())  # features anywhere
    return dict(items)


@st.composite
def queue_edits(draw: st.DrawFn, doc: dict[str, Any]) -> list[Edit]:
    """Replace and insert task fields, edit inside task values, replace or add the summary."""
    current = copy.deepcopy(doc)
    edits: list[Edit] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["replace", "insert", "nested", "summary", "top"]))
        tasks = current["features"]
        i = draw(st.integers(0, len(tasks) - 1))
        path: EditPath
        if kind == "replace":
            path = ("features", i, draw(st.sampled_from(sorted(tasks[i]))))
        elif kind == "insert":
            path = ("features", i, draw(KEYS))
        elif kind == "nested":
            nested = sorted(k for k, v in tasks[i].items() if isinstance(v, dict) and v)
            if not nested:
                continue
            key = draw(st.sampled_from(nested))
            path = ("features", i, key, draw(st.sampled_from(sorted(tasks[i][key]))))
        elif kind == "summary":
            path = ("summary",)
        else:
            others = sorted(key for key in current if key != "features")
            if not others:
                continue
            path = (draw(st.sampled_from(others)),)
        value = draw(VALUES)
        edits.append((path, value))
        current = expected_doc(current, [(path, value)], {(): "features"})
    return edits


def lines_that_may_change(
    doc: dict[str, Any], edits: Sequence[Edit], spans: Mapping[MemberKey, tuple[int, int]]
) -> set[int]:
    """The lines of the edited members; for a key added to a task, its last member's lines."""
    lines: set[int] = set()
    for path, _ in edits:
        if path[0] == "features" and len(path) > 2:
            index, key = path[1], path[2]
            assert isinstance(index, int)
            assert isinstance(key, str)
            task = doc["features"][index]
            span = spans[index, key if key in task else list(task)[-1]]
        elif isinstance(path[0], str) and path[0] in doc:
            span = spans["top", path[0]]
        else:
            continue
        lines.update(range(span[0], span[1] + 1))
    return lines


@settings(max_examples=200, deadline=None)
@given(doc=queue_docs(), fmt=FORMATS, collapse=st.lists(st.booleans(), min_size=1), data=st.data())
def test_random_edits_keep_everything_else(
    doc: dict[str, Any], fmt: Format, collapse: list[bool], data: st.DataObject
) -> None:
    text, spans = Writer(fmt, iter(collapse * 1000)).write(doc)
    edits = data.draw(queue_edits(doc))
    before: dict[EditPath, str] = {(): "features"}

    with mock.patch.object(jsonedit, "dumps", side_effect=AssertionError("fell back to dumps")):
        result = apply_edits(text, edits, insert_before=before)

    assert parses_to(result, expected_doc(doc, edits, before))
    original = text.split(fmt.newline)
    may_change = lines_that_may_change(doc, edits, spans)
    kept = [line for n, line in enumerate(original) if n not in may_change]
    assert is_subsequence(kept, result.split(fmt.newline))
    if not fmt.final_newline:
        assert not result.endswith("\n")
    for path, _ in edits:
        if path[0] != "features" or len(path) != 3:
            continue
        _, index, key = path
        assert isinstance(index, int)
        assert isinstance(key, str)
        if key not in doc["features"][index]:  # inserted: on its own line, indented like siblings
            heads = tuple(
                fmt.indent * 3 + json.dumps(key, ensure_ascii=a) + ":" for a in (True, False)
            )
            assert any(line.startswith(heads) for line in result.split(fmt.newline))


@settings(max_examples=200, deadline=None)
@given(
    doc=VALUES | queue_docs(),
    indent=st.sampled_from([1, 2, 4, "\t"]),
    ensure_ascii=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
)
def test_dumps_reproduces_json_dumps(
    doc: Any, indent: int | str, ensure_ascii: bool, newline: str, final_newline: bool
) -> None:
    text = json.dumps(doc, indent=indent, ensure_ascii=ensure_ascii).replace("\n", newline)
    text += newline if final_newline else ""
    assert dumps(doc, detect_style(text)) == text
    assert apply_edits(text, []) == text
    assert apply_edits(text, [((), doc)]) == text


def test_a_parse_the_caller_already_has_gives_the_same_text() -> None:
    text = '{\n  "a": [1, 2],\n  "b": {"c": null}\n}\n'
    edits: list[Edit] = [(("b", "c"), 3), (("d",), True)]
    assert apply_edits(text, edits, parsed=json.loads(text)) == apply_edits(text, edits)
