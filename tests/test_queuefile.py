"""Reading and writing queue files: every real example, round trips, atomic saves."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from orchestrator import queuefile
from orchestrator.model import Status


def test_every_example_loads_without_error(examples: list[Path]) -> None:
    assert len(examples) == 5
    for path in examples:
        qf = queuefile.read(path)
        assert qf.ok, [p.render() for p in qf.problems]
        assert qf.track is not None
        assert qf.doc is not None
        items = qf.doc[qf.track.list_key]
        assert isinstance(items, list)
        assert len(qf.track.tasks) == len(items)


def test_example_shapes(examples: list[Path]) -> None:
    by_name = {p.name: queuefile.read(p) for p in examples}
    adr = by_name["work_queue_adr001.json"].track
    assert adr is not None
    assert adr.list_key == "tasks"
    assert len(adr.tasks) == 15
    big = by_name["km-queue-active.json"].track
    assert big is not None
    assert len(big.tasks) == 398
    assert sum(t.status is Status.BLOCKED for t in big.tasks) == 221
    onboarding = by_name["work_queue_karematch_provider_onboarding.json"].track
    assert onboarding is not None
    assert sum(t.status is Status.COMPLETE for t in onboarding.tasks) == 4  # written "completed"


def test_load_then_save_without_changes_is_byte_identical(
    examples: list[Path], tmp_path: Path
) -> None:
    for path in examples:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        qf = queuefile.read(copy)
        queuefile.save(qf, [])
        assert copy.read_bytes() == path.read_bytes(), path.name


def test_a_save_changes_only_the_values_it_sets(examples: list[Path], tmp_path: Path) -> None:
    source = next(p for p in examples if p.name == "work_queue_adr001.json")
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    qf = queuefile.read(copy)
    queuefile.save(qf, [(("tasks", 0, "status"), "complete")])
    before = source.read_text().splitlines()
    after = copy.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [('      "status": "pending",', '      "status": "complete",')]
    doc = json.loads(copy.read_text())
    assert list(doc) == list(json.loads(source.read_text()))  # key order kept
    assert doc["notes"] == json.loads(source.read_text())["notes"]  # unknown keys kept


def test_write_atomic_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text("{}")
    path.chmod(0o640)
    queuefile.write_atomic(path, '{"features": []}\n')
    assert path.read_text() == '{"features": []}\n'
    assert (path.stat().st_mode & 0o777) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["q.json"]


def test_write_if_unchanged_refuses_after_a_concurrent_save(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text('{"features": []}')
    seen = queuefile.file_id(path)
    path.write_text('{"features": [], "user": "edit"}')
    assert not queuefile.write_if_unchanged(path, "{}", seen)
    assert "user" in path.read_text()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "$: the file is empty"),
        (b'{"features": [1,, 2]}', "line 1 column 17: invalid JSON:"),
        (b'{\n  "features": [\n}', "line 3 column 1: invalid JSON:"),
        (b'\xff{"features": []}', "$: not valid UTF-8 at byte 0"),
    ],
)
def test_unreadable_files_are_problems_with_a_place(data: bytes, message: str) -> None:
    qf = queuefile.parse("tracks/x.json", "x", data)
    assert not qf.ok
    assert qf.problems[0].render().startswith(f"tracks/x.json: {message}")


def test_discover_skips_hidden_and_temporary_files(tmp_path: Path) -> None:
    for name in [
        "a.json",
        ".a.json.swp",
        ".b.json.123.tmp",
        "#c.json#",
        "d.json~",
        "e.txt",
        "f.json",
    ]:
        (tmp_path / name).write_text("{}")
    (tmp_path / "dir.json").mkdir()
    assert [p.name for p in queuefile.discover(tmp_path)] == ["a.json", "f.json"]
