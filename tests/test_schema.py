"""The queue-file boundary: fields, aliases, priorities and the messages for bad values."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.model import Ref, Status
from orchestrator.schema import load_document, priority_rank


def _load(doc: Any) -> tuple[Any, list[str]]:
    track, problems = load_document("tracks/t.json", "t", doc)
    return track, [p.render() for p in problems]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("pending", Status.PENDING),
        ("completed", Status.COMPLETE),
        ("done", Status.COMPLETE),
        ("COMPLETE", Status.COMPLETE),
        ("parked", Status.SKIPPED),
        ("In_Progress", Status.IN_PROGRESS),
        (None, Status.PENDING),
    ],
)
def test_status_aliases(raw: str | None, status: Status) -> None:
    track, problems = _load({"features": [{"id": "A", "status": raw}]})
    assert problems == []
    assert track.tasks[0].status is status


@pytest.mark.parametrize(
    ("raw", "rank"),
    [("P0", 0), ("p3", 3), (0, 0), (7, 7), ("high", 1), ("Medium", 2), ("low", 3), (None, 2)],
)
def test_priority_mapping(raw: object, rank: int) -> None:
    assert priority_rank(raw) == rank


def test_missing_priority_is_medium_and_ties_keep_file_order() -> None:
    track, _ = _load({"features": [{"id": "A"}, {"id": "B", "priority": "P2"}]})
    assert [t.priority for t in track.tasks] == [2, 2]
    assert [t.index for t in track.tasks] == [0, 1]


@pytest.mark.parametrize("raw", ["urgent", True, 1.5, "P0 - BLOCKS LAUNCH", []])
def test_bad_priority_lists_allowed_values(raw: object) -> None:
    _, problems = _load({"features": [{"id": "A", "priority": raw}]})
    assert len(problems) == 1
    assert problems[0].startswith("tracks/t.json: features[0].priority: unknown priority")
    assert "P0..P9" in problems[0]
    assert "high, medium, low" in problems[0]


def test_unknown_status_lists_allowed_values() -> None:
    _, problems = _load({"tasks": [{"id": "A", "status": "finished"}]})
    assert problems == [
        'tracks/t.json: tasks[0].status: unknown status string "finished"; allowed: pending, '
        "in_progress, complete, blocked, failed, skipped (also read: completed, done -> "
        "complete; parked -> skipped)"
    ]


def test_wrong_types_name_the_field_and_the_value() -> None:
    _, problems = _load(
        {
            "features": [
                {"id": "A", "max_iterations": "3", "tests": 5, "allow_no_changes": "yes"},
                {"id": "B", "timeout": -1, "dependencies": ["A", 3]},
            ]
        }
    )
    assert problems == [
        "tracks/t.json: features[0].tests: expected a string or a list of strings, got number 5",
        'tracks/t.json: features[0].max_iterations: expected an integer, got string "3"',
        'tracks/t.json: features[0].allow_no_changes: expected true or false, got string "yes"',
        "tracks/t.json: features[1].dependencies[1]: expected a task ref string "
        "(ID, track:ID or track:*), got number 3",
        "tracks/t.json: features[1].timeout: must be > 0, got number -1",
    ]


def test_a_task_with_bad_fields_is_still_known_by_its_id() -> None:
    track, problems = _load({"features": [{"id": "A", "priority": "urgent"}, {"id": "B"}]})
    assert len(problems) == 1
    assert [str(t.key) for t in track.tasks] == ["t:A", "t:B"]


def test_task_without_id_and_non_object_task() -> None:
    track, problems = _load({"features": [{"description": "x"}, 5, {"id": " A"}, {"id": "a:b"}]})
    assert (
        problems[0] == "tracks/t.json: features[0]: task has no 'id'; every task needs a unique id"
    )
    assert problems[1] == "tracks/t.json: features[1]: expected a task object, got number 5"
    assert "features[2].id" in problems[2]
    assert "spaces" in problems[2]
    assert "features[3].id" in problems[3]
    assert "':'" in problems[3]
    assert track.tasks == ()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1], "tracks/t.json: $: a queue file must be a JSON object, got a list"),
        (
            {"x": 1},
            "tracks/t.json: $: no 'features' or 'tasks' array; put the tasks in one of them",
        ),
        ({"features": {}}, "tracks/t.json: features: expected a list of tasks, got an object"),
    ],
)
def test_document_shape_errors(doc: object, message: str) -> None:
    track, problems = _load(doc)
    assert track is None
    assert problems == [message]


def test_track_object_settings_and_typos() -> None:
    track, problems = _load(
        {
            "track": {
                "start_after": ["backend:PROVIDER-013"],
                "concurency": 2,
                "on_block": "pause",
                "env": {"A": "1"},
                "verify": ["ruff check .", ["pytest", "-q"]],
            },
            "features": [],
        }
    )
    assert problems == [
        "tracks/t.json: track.concurency: unknown setting 'concurency'; did you mean 'concurrency'?"
    ]
    settings = track.settings
    assert settings.start_after == (Ref("backend", "PROVIDER-013"),)
    assert settings.on_block == "pause"
    assert settings.env == (("A", "1"),)
    assert settings.verify == ("ruff check .", ("pytest", "-q"))
    assert settings.concurrency == 1


def test_track_name_comes_from_track_name_or_the_file() -> None:
    track, problems = _load({"track": {"name": "ui"}, "features": []})
    assert (track.name, problems) == ("ui", [])
    named, found = load_document("tracks/my file.json", "my file", {"features": []})
    assert named is not None
    assert named.name == "my file"
    assert "set track.name" in found[0].message


def test_optional_task_fields() -> None:
    track, problems = _load(
        {
            "features": [
                {
                    "id": "A",
                    "command": ["python", "-c", "print(1)"],
                    "verify": "pytest -q",
                    "timeout": 30,
                    "verify_timeout": 5.5,
                    "acceptance_criteria": "it works",
                    "depends_on": ["other:B", "x:*"],
                }
            ]
        }
    )
    assert problems == []
    task = track.tasks[0]
    assert task.command == ("python", "-c", "print(1)")
    assert task.verify == ("pytest -q",)
    assert (task.timeout, task.verify_timeout) == (30, 5.5)
    assert task.acceptance_criteria == ("it works",)
    assert task.deps == (Ref("other", "B"), Ref("x", "*"))
    assert task.deps_field == "depends_on"


def test_both_dependency_spellings_is_an_error() -> None:
    _, problems = _load({"features": [{"id": "A", "dependencies": ["B"], "depends_on": ["C"]}]})
    assert problems == [
        "tracks/t.json: features[0].depends_on: both 'dependencies' and 'depends_on' are set; "
        "keep one of them"
    ]


def test_verify_empty_list_means_no_verification() -> None:
    track, _ = _load({"features": [{"id": "A", "verify": []}, {"id": "B"}]})
    assert track.tasks[0].verify == ()
    assert track.tasks[1].verify is None
