"""The offline commands as a user runs them: output, exit statuses, common options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli

from .conftest import REPO, WriteTrack


def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_validate_the_demo_tracks_passes() -> None:
    code, out, err = run("validate", str(REPO / "tracks"))
    assert (code, out) == (0, "")
    assert "3 track(s), 13 task(s): 0 error(s), 0 warning(s)" in err


def test_validate_prints_every_problem_and_exits_1(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("backend", [{"id": "A", "dependencies": ["B"]}, {"id": "A"}])
    (tracks_dir / "broken.json").write_text('{"features": [')
    write_track("ui", [{"id": "U", "status": "finished"}])
    code, out, _ = run("validate", str(tracks_dir))
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 4
    for line in lines:
        file, path, message = line.split(": ", 2)
        assert file.endswith(".json")
        assert path
        assert message
    assert any("broken.json: line 1 column 15: invalid JSON" in line for line in lines)
    assert any("unknown task 'B'" in line for line in lines)


def test_validate_warnings_exit_0(tracks_dir: Path, write_track: WriteTrack) -> None:
    write_track("a", {"project": "p", "features": [{"id": "X"}]})
    write_track("b", {"project": "p", "features": [{"id": "X"}]})
    code, out, _ = run("validate", str(tracks_dir))
    assert code == 0
    assert ": warning: " in out


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path / "missing"))
    assert code == 2
    assert "no such file or directory" in err
    code, _, _ = run("graph", "--format", "svg")
    assert code == 2


def test_common_options_before_or_after_the_command(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("solo", [{"id": "ONLY"}])
    for args in (
        ["--tracks", str(tracks_dir), "status", "--json"],
        ["status", "--json", "--tracks", str(tracks_dir)],
    ):
        code, out, _ = run(*args)
        assert code == 0
        assert json.loads(out)["tracks"][0]["name"] == "solo"


def test_environment_points_commands_at_tracks(
    tracks_dir: Path, write_track: WriteTrack, monkeypatch: object
) -> None:
    write_track("envtrack", [{"id": "E"}])
    result = CliRunner(env={"ORCHESTRATORD_TRACKS": str(tracks_dir)}).invoke(
        cli, ["status", "--json"]
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout)["tracks"][0]["name"] == "envtrack"


def test_graph_formats_show_cross_track_edges_and_triggers() -> None:
    tracks = str(REPO / "tracks")
    _, text, _ = run("graph", "--tracks", tracks)
    assert "start_after: backend:PROVIDER-013 [waiting]" in text
    assert (
        "PROVIDER-016  <- credentialing-ui:PROVIDER-008, backend:PROVIDER-015, PROVIDER-018" in text
    )
    _, mermaid, _ = run("graph", "--tracks", tracks, "--format", "mermaid")
    assert mermaid.startswith("flowchart LR")
    assert "-. start_after .->" in mermaid
    assert "==>" in mermaid  # a cross-track edge
    _, dot, _ = run("graph", "--tracks", tracks, "--format", "dot")
    assert dot.startswith("digraph orchestratord {")
    assert 'label="start_after"' in dot


def test_explain_in_plain_sentences() -> None:
    tracks = str(REPO / "tracks")
    code, out, _ = run("explain", "--tracks", tracks, "PROVIDER-016")
    assert code == 0
    assert out.splitlines()[0] == "patient-facing:PROVIDER-016 is pending and not ready:"
    assert "starts only after: backend:PROVIDER-013 (pending)" in out
    assert "backend:PROVIDER-010 is pending: it is ready and starts when a slot is free." in out
    code, out, _ = run("explain", "--tracks", tracks, "backend:PROVIDER-010")
    assert (
        out.strip()
        == "backend:PROVIDER-010 is ready: every dependency is done and nothing holds it back."
    )


def test_explain_names_the_errors_that_keep_a_file_from_running(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("a", [{"id": "A1", "dependencies": ["b:NOPE"]}, {"id": "A2"}])
    code, out, _ = run("explain", "--tracks", str(tracks_dir), "A2")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].endswith(
        "has 1 error(s): the daemon does not load it, so none of its tasks runs until it is fixed:"
    )
    assert lines[2].startswith("    features[0].dependencies[0]: unknown track 'b'")
    write_track("a", [{"id": "A1"}, {"id": "A2"}])
    code, out, _ = run("explain", "--tracks", str(tracks_dir), "A2")
    assert "error" not in out


def test_explain_unknown_and_ambiguous_refs(tracks_dir: Path, write_track: WriteTrack) -> None:
    write_track("a", [{"id": "X"}])
    write_track("b", [{"id": "X"}])
    code, _, err = run("explain", "--tracks", str(tracks_dir), "X")
    assert code == 1
    assert "ambiguous task ref 'X'" in err
    assert "'a:X' or 'b:X'" in err
    code, _, err = run("explain", "--tracks", str(tracks_dir), "Y")
    assert code == 1
    assert "unknown task 'Y'" in err


def test_status_json_is_stable(tracks_dir: Path, write_track: WriteTrack) -> None:
    write_track(
        "t",
        [
            {"id": "A", "status": "completed"},
            {"id": "B", "dependencies": ["A"], "priority": "P0"},
            {"id": "C", "status": "failed", "error": "tests fail", "attempts": 3},
        ],
    )
    code, out, _ = run("status", "--json", "--tracks", str(tracks_dir))
    assert code == 0
    data = json.loads(out)
    assert data["schema_version"] == 1
    assert data["daemon"] == {"running": False, "source": "files", "paused": False}
    track = data["tracks"][0]
    assert track["counts"] == {
        "total": 3,
        "pending": 1,
        "in_progress": 0,
        "complete": 1,
        "blocked": 0,
        "failed": 1,
        "skipped": 0,
    }
    assert [t["id"] for t in track["next"]] == ["B"]
    assert track["failed"] == [
        {
            "ref": "t:C",
            "id": "C",
            "priority": 2,
            "summary": "",
            "attempts": 3,
            "reason": "tests fail",
            "verdict": None,
        }
    ]


def test_status_table_renders(tracks_dir: Path, write_track: WriteTrack) -> None:
    write_track("solo", [{"id": "ONLY", "description": "the one task"}])
    code, out, _ = run("status", "--tracks", str(tracks_dir))
    assert code == 0
    assert "solo" in out
    assert "ONLY" in out


def test_status_says_whether_a_trigger_still_waits_or_has_fired(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("a", [{"id": "GO"}])
    write_track("b", [{"id": "X"}], track={"start_after": ["a:GO"]})
    _, out, _ = run("status", "--tracks", str(tracks_dir))
    assert "waiting for trigger: a:GO" in out
    write_track("a", [{"id": "GO", "status": "complete"}])
    _, out, _ = run("status", "--tracks", str(tracks_dir))
    assert "trigger fired: start_after a:GO" in out
    assert "waiting for trigger" not in out


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(REPO / "tracks")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
