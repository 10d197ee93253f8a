"""The daemon's log: JSON or console on stderr, level filtering, a rotated log file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from orchestrator import config, logs
from orchestrator.errors import ConfigError

log = structlog.get_logger("orchestratord")


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_json_when_not_a_terminal_and_levels_filtered() -> None:
    out = io.StringIO()
    logs.configure("info", "auto", out)
    log.debug("hidden")
    log.info("attempt", task="t:A", track="t", attempt=1, verdict="PASS", duration=1.25)
    try:
        int("boom")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["attempt", "failed"]
    assert lines[0]["verdict"] == "PASS"
    assert lines[0]["level"] == "info"
    assert lines[0]["timestamp"].endswith("Z")
    assert "ValueError: invalid literal" in lines[1]["exception"]


def test_a_logger_bound_once_follows_each_new_configuration() -> None:
    bound = logs.BoundOnce()
    quiet, loud = io.StringIO(), io.StringIO()
    logs.configure("warning", "json", quiet)
    bound.get().info("attempt", task="t:A")
    logs.configure("info", "json", loud)
    bound.get().info("attempt", task="t:B")
    assert quiet.getvalue() == ""
    assert [json.loads(line)["task"] for line in loud.getvalue().splitlines()] == ["t:B"]


def test_console_format_is_for_people() -> None:
    out = io.StringIO()
    logs.configure("debug", "console", out)
    log.debug("trigger fired", track="patient")
    text = out.getvalue()
    assert "trigger fired" in text
    assert "track=patient" in text
    assert not text.startswith("{")


def test_the_console_leaves_out_what_has_no_value_and_json_keeps_it() -> None:
    """A command's attempt line has no agent, tokens or cost: "agent=None" is noise to a
    person; a script reading JSON finds every key of the canonical line, null or not."""
    out, data = io.StringIO(), io.StringIO()
    logs.configure("info", "console", out)
    log.info("attempt", task="t:A", verdict="PASS", reason=None, agent=None, attempt=1)
    assert "None" not in out.getvalue()
    assert "task=t:A" in out.getvalue()
    logs.configure("info", "json", data)
    log.info("attempt", task="t:A", verdict="PASS", reason=None, agent=None, attempt=1)
    assert json.loads(data.getvalue())["agent"] is None


def test_log_file_gets_json_lines_and_rotates_by_size(tmp_path: Path) -> None:
    out = io.StringIO()
    path = tmp_path / "logs" / "daemon.log"
    logs.configure("info", "console", out, file=path, file_max_bytes=4096, file_backups=2)
    for number in range(200):
        log.info("attempt", number=number, padding="x" * 40)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["daemon.log", "daemon.log.1", "daemon.log.2"]  # older ones dropped
    for name in names:
        assert (path.parent / name).stat().st_size <= 4096
        for line in (path.parent / name).read_text().splitlines():
            assert json.loads(line)["event"] == "attempt"
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["number"] == 199
    assert "number=199" in out.getvalue()  # stderr still gets every line


def test_settings_drive_it_and_a_bad_file_is_a_config_error(tmp_path: Path) -> None:
    out = io.StringIO()
    cfg = config.load(
        flags={"log_file": str(tmp_path / "daemon.log"), "log_level": "warning"},
        env={},
        cwd=tmp_path,
    )
    logs.configure_from(cfg.settings, out)
    log.info("not shown")
    log.warning("shown")
    assert [json.loads(x)["event"] for x in (tmp_path / "daemon.log").read_text().splitlines()] == [
        "shown"
    ]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write the log file"):
        logs.configure(file=blocker / "daemon.log")
