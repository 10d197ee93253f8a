"""Reading a file again with the tasks of the previous read remembered gives the same answer."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.schema import TaskMemo, load_document

IDS = st.sampled_from(["A", "B", "C", "D", "E"])
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-1, 3), st.text(max_size=3), st.lists(IDS, max_size=2)
)
TASK = st.fixed_dictionaries(
    {"id": IDS},
    optional={
        "description": st.one_of(st.text(max_size=5), st.integers()),
        "status": st.sampled_from(["pending", "done", "complete", "nonsense", 3]),
        "priority": st.sampled_from(["P0", "high", 2, "urgent", None]),
        "dependencies": st.one_of(st.lists(IDS, max_size=2), VALUES),
        "depends_on": st.lists(IDS, max_size=2),
        "max_iterations": st.integers(-1, 3),
        "allow_no_changes": st.one_of(st.booleans(), st.integers(0, 1)),
        "notes": VALUES,
    },
)
FILES = st.lists(st.lists(st.one_of(TASK, VALUES), max_size=6), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(versions=FILES, list_key=st.sampled_from(["features", "tasks"]))
def test_a_memo_never_changes_what_a_read_finds(versions: list[list[Any]], list_key: str) -> None:
    memo = TaskMemo()
    for items in versions:
        doc = {list_key: items}
        assert load_document("t.json", "t", doc, memo) == load_document("t.json", "t", doc)


def test_a_task_read_before_is_the_same_value_even_when_it_moved() -> None:
    memo = TaskMemo()
    first, _ = load_document("t.json", "t", {"tasks": [{"id": "A"}, {"id": "B"}]}, memo)
    second, _ = load_document(
        "t.json", "t", {"tasks": [{"id": "N"}, {"id": "A"}, {"id": "B"}]}, memo
    )
    assert first is not None
    assert second is not None
    assert [t.index for t in second.tasks] == [0, 1, 2]
    assert second.tasks[1].key.id == "A"
    assert second.tasks[1] == first.tasks[0].__class__(**{**_fields(first.tasks[0]), "index": 1})


def _fields(task: Any) -> dict[str, Any]:
    return {name: getattr(task, name) for name in task.__slots__}
