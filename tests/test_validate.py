"""Checks across queue files: names, ids, refs, ambiguity, cycles, copied ids."""

from __future__ import annotations

from typing import Any

from orchestrator.model import TaskKey, TrackAll, TrackDef
from orchestrator.schema import load_document
from orchestrator.validate import Report, check


def _tracks(**docs: Any) -> list[TrackDef]:
    out = []
    for name, doc in docs.items():
        body = {"features": doc} if isinstance(doc, list) else doc
        track, problems = load_document(f"tracks/{name}.json", name, body)
        assert problems == [], problems
        assert track is not None
        out.append(track)
    return out


def _check(**docs: Any) -> Report:
    return check(_tracks(**docs))


def _lines(report: Report) -> list[str]:
    return [p.render() for p in report.problems]


def test_a_valid_multi_track_plan_resolves_every_ref() -> None:
    report = _check(
        backend=[{"id": "A"}, {"id": "B", "dependencies": ["A"]}],
        ui={
            "track": {"start_after": ["backend:B"]},
            "features": [{"id": "C", "dependencies": ["backend:A", "backend:*"]}],
        },
    )
    assert report.ok
    assert report.problems == ()
    assert report.deps[TaskKey("backend", "B")] == (TaskKey("backend", "A"),)
    assert report.deps[TaskKey("ui", "C")] == (TaskKey("backend", "A"), TrackAll("backend"))
    assert report.triggers["ui"] == (TaskKey("backend", "B"),)


def test_unknown_dependency_suggests_the_closest_id() -> None:
    report = _check(backend=[{"id": "PROVIDER-010"}, {"id": "X", "dependencies": ["PROVIDER-01"]}])
    assert _lines(report) == [
        "tracks/backend.json: features[1].dependencies[0]: unknown task 'PROVIDER-01': no task "
        "has this id in track 'backend' or any other track; did you mean 'PROVIDER-010'? "
        "(in task X)"
    ]


def test_unknown_qualified_ref_and_unknown_track() -> None:
    report = _check(
        backend=[{"id": "PROVIDER-013"}],
        ui={
            "track": {"start_after": ["backend:PROVIDER-13"]},
            "features": [{"id": "C", "dependencies": ["bakend:PROVIDER-013"]}],
        },
    )
    assert _lines(report) == [
        "tracks/ui.json: track.start_after[0]: unknown task 'backend:PROVIDER-13'; "
        "did you mean 'PROVIDER-013'?",
        "tracks/ui.json: features[0].dependencies[0]: unknown track 'bakend' in "
        "'bakend:PROVIDER-013'; did you mean 'backend'? (in task C)",
    ]


def test_bare_ref_prefers_its_own_track() -> None:
    report = _check(a=[{"id": "X"}, {"id": "Y", "dependencies": ["X"]}], b=[{"id": "X"}])
    assert report.deps[TaskKey("a", "Y")] == (TaskKey("a", "X"),)


def test_bare_ref_found_in_exactly_one_other_track() -> None:
    report = _check(a=[{"id": "Y", "dependencies": ["X"]}], b=[{"id": "X"}])
    assert report.ok
    assert report.deps[TaskKey("a", "Y")] == (TaskKey("b", "X"),)


def test_ambiguous_bare_ref_says_how_to_qualify() -> None:
    report = _check(a=[{"id": "Y", "dependencies": ["X"]}], b=[{"id": "X"}], c=[{"id": "X"}])
    assert _lines(report) == [
        "tracks/a.json: features[0].dependencies[0]: ambiguous task ref 'X': it is not in track "
        "'a' and is in tracks b, c; write 'b:X' or 'c:X' (in task Y)"
    ]


def test_duplicate_ids_within_a_track() -> None:
    report = _check(a=[{"id": "X"}, {"id": "Y"}, {"id": "X"}])
    assert _lines(report) == [
        "tracks/a.json: features[2].id: duplicate id 'X' in track 'a' (first at features[0]); "
        "ids must be unique within a track"
    ]


def test_duplicate_track_names_are_reported_in_both_files() -> None:
    one, _ = load_document("tracks/one.json", "one", {"track": {"name": "ui"}, "features": []})
    two, _ = load_document("tracks/ui.json", "ui", {"features": []})
    assert one is not None
    assert two is not None
    lines = _lines(check([one, two]))
    assert lines == [
        "tracks/one.json: track.name: duplicate track name 'ui': tracks/ui.json has the same "
        "name; give one of them another file name or track.name",
        "tracks/ui.json: $: duplicate track name 'ui': tracks/one.json has the same name; give "
        "one of them another file name or track.name",
    ]


def test_cycle_within_a_track_is_spelled_out() -> None:
    report = _check(a=[{"id": "A", "dependencies": ["B"]}, {"id": "B", "dependencies": ["A"]}])
    assert _lines(report) == [
        "tracks/a.json: features[0].dependencies[0]: dependency cycle: a:A -> a:B -> a:A "
        "(each waits for the next); remove one of these dependencies"
    ]


def test_cycle_across_tracks_is_spelled_out() -> None:
    report = _check(
        backend=[{"id": "A", "dependencies": ["ui:B"]}],
        ui=[{"id": "B", "dependencies": ["backend:A"]}],
    )
    assert [p.message.split(" (")[0] for p in report.problems] == [
        "dependency cycle: backend:A -> ui:B -> backend:A"
    ]
    assert report.problems[0].path == "features[0].dependencies[0]"


def test_self_dependency_and_own_track_star_are_cycles() -> None:
    report = _check(
        a=[{"id": "A", "dependencies": ["A"]}], b=[{"id": "B", "dependencies": ["b:*"]}]
    )
    messages = sorted(p.message.split(" (")[0] for p in report.problems)
    assert messages == ["dependency cycle: a:A -> a:A", "dependency cycle: b:B -> b:* -> b:B"]


def test_cycle_through_a_trigger() -> None:
    report = _check(
        backend=[{"id": "X", "dependencies": ["patient:Y"]}],
        patient={"track": {"start_after": ["backend:X"]}, "features": [{"id": "Y"}]},
    )
    assert [p.message.split(" (")[0] for p in report.problems] == [
        "dependency cycle: backend:X -> patient:Y -> [start_after of patient] -> backend:X"
    ]


def test_same_id_in_two_tracks_of_one_project_is_a_warning() -> None:
    report = _check(
        onboarding={"project": "km", "features": [{"id": "P-10"}, {"id": "P-11"}]},
        backend={"project": "km", "features": [{"id": "P-10"}]},
        other={"project": "else", "features": [{"id": "P-10"}]},
    )
    assert report.ok
    assert _lines(report) == [
        "tracks/backend.json: features[0].id: warning: id 'P-10' is also in track 'onboarding' of "
        "project 'km': both copies would run. Keep one and depend on it as 'onboarding:P-10'"
    ]


def test_an_id_in_three_tracks_of_one_project_names_every_other_copy() -> None:
    """The old loop's files: the backend ids were in the full queue and in the backend copy."""
    report = _check(
        karematch={"project": "km", "features": [{"id": "P-10"}]},
        backend={"project": "km", "features": [{"id": "P-10"}]},
        onboarding={"project": "km", "features": [{"id": "P-10"}]},
    )
    assert _lines(report) == [
        "tracks/backend.json: features[0].id: warning: id 'P-10' is also in tracks 'karematch' "
        "and 'onboarding' of project 'km': all 3 copies would run. Keep one and depend on it "
        "as 'karematch:P-10'",
        "tracks/onboarding.json: features[0].id: warning: id 'P-10' is also in tracks "
        "'karematch' and 'backend' of project 'km': all 3 copies would run. Keep one and depend "
        "on it as 'karematch:P-10'",
    ]


def test_a_ref_into_a_file_that_does_not_read_says_that_file_is_the_one_to_fix() -> None:
    bad, bad_problems = load_document("tracks/backend.json", "backend", {"features": "oops"})
    assert bad is None
    good = _tracks(ui=[{"id": "U", "dependencies": ["PROVIDER-013", "backend:PROVIDER-010"]}])
    report = check(good, bad_problems)
    assert _lines(report)[1:] == [
        "tracks/ui.json: features[0].dependencies[0]: unknown task 'PROVIDER-013': no task has "
        "this id in track 'ui' or any other track; but tracks/backend.json could not be read "
        "and may have it: fix that file first (in task U)",
        "tracks/ui.json: features[0].dependencies[1]: unknown track 'backend' in "
        "'backend:PROVIDER-010'; known tracks: ui; but tracks/backend.json could not be read and "
        "may have it: fix that file first (in task U)",
    ]


def test_a_bad_file_does_not_stop_the_others() -> None:
    bad, bad_problems = load_document(
        "tracks/bad.json", "bad", {"features": [{"id": "A", "status": "?"}]}
    )
    good = _tracks(good=[{"id": "G", "dependencies": ["nope"]}])
    assert bad is not None
    report = check([bad, *good], bad_problems)
    files = [p.file for p in report.problems]
    assert files == ["tracks/bad.json", "tracks/good.json"]
    assert report.invalid_files() == {"tracks/bad.json", "tracks/good.json"}
