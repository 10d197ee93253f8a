"""``config show`` (every setting and its source) and ``config check`` (file/line errors)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import config
from orchestrator.cli import cli

CONFIG = """\
tracks = "tracks"
max_parallel = 2

[defaults]
timeout = 60
verify = ["ruff check .", ["pytest", "-q"]]

[agents.claude]
argv = ["sh", "-c", "echo {prompt}"]
env = { MODE = "headless" }
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tracks").mkdir()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "orchestratord.toml").write_text(
        CONFIG.replace('"tracks"', '"../tracks"')
    )
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("ORCHESTRATORD_")]:
        monkeypatch.delenv(name)
    return tmp_path


def _invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


def test_show_prints_toml_that_loads_back_to_the_same_settings(project: Path) -> None:
    result = _invoke(
        "config", "show", "--state-dir", "state", env={"ORCHESTRATORD_KILL_GRACE": "2"}
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "# config file: config/orchestratord.toml"
    assert any(
        line.startswith("max_parallel = 2 ") and line.endswith("# file config/orchestratord.toml:2")
        for line in lines
    )
    assert any(
        line.startswith("kill_grace = 2.0 ") and line.endswith("# env ORCHESTRATORD_KILL_GRACE")
        for line in lines
    )
    assert any(
        line.startswith("state_dir = ") and line.endswith("# flag --state-dir") for line in lines
    )
    assert any(
        line.startswith("defaults.timeout = 60.0 ") and line.endswith(":5") for line in lines
    )
    assert any(line.startswith("# board_path is not set") for line in lines)
    shown = config.Settings.model_validate(tomllib.loads(result.output))
    cfg = config.load(flags={"state_dir": "state"}, env={"ORCHESTRATORD_KILL_GRACE": "2"})
    expected = cfg.settings.model_copy(update={"tracks": str(cfg.tracks_dir)})
    assert shown == expected


def test_show_json_gives_every_setting_with_its_source(project: Path) -> None:
    result = _invoke("config", "show", "--json", "--max-parallel", "3")
    assert result.exit_code == 2  # --max-parallel is a flag of start, not of config show
    result = _invoke("config", "show", "--json", env={"ORCHESTRATORD_MAX_PARALLEL": "3"})
    doc = json.loads(result.output)
    rows = {row["key"]: row for row in doc["settings"]}
    assert doc["config_file"] == str(project / "config" / "orchestratord.toml")
    assert rows["max_parallel"]["value"] == 3
    assert rows["max_parallel"]["source"] == "env"
    assert rows["max_parallel"]["detail"] == "ORCHESTRATORD_MAX_PARALLEL"
    assert rows["agents.claude.env"] == {
        "key": "agents.claude.env",
        "value": {"MODE": "headless"},
        "source": "file",
        "detail": str(project / "config" / "orchestratord.toml"),
        "line": 10,
    }
    assert rows["agents.claude.prompt_via"]["source"] == "default"
    assert rows["tracks"]["value"] == str(project / "tracks")
    assert rows["state_dir"]["source"] == "default"


def _check(project: Path, text: str, *args: str) -> Any:
    (project / "my.toml").write_text(text)
    return _invoke("config", "check", "my.toml", *args)


def test_check_passes_a_good_file(project: Path) -> None:
    result = _check(project, CONFIG)
    assert result.exit_code == 0, result.output
    assert result.output == "my.toml: 0 error(s), 0 warning(s)\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "max_paralel = 2\n",
            ["my.toml:1: max_paralel: unknown setting; did you mean 'max_parallel'?"],
        ),
        (
            "[defaults]\ntimeout = 60\n[agents.a]\nargv = ['x']\ntimout = 5\n",
            ["my.toml:5: agents.a.timout: unknown setting; did you mean 'timeout'?"],
        ),
        (
            "log_level = 'loud'\nlogs_keep_days = -1\n",
            [
                "my.toml:1: log_level: Input should be 'debug', 'info', 'warning' or 'error' "
                "(got 'loud')",
                "my.toml:2: logs_keep_days: Input should be greater than or equal to 0 (got -1)",
            ],
        ),
        (
            "max_parallel = 2\n[defaults\n",
            ["my.toml:2:10: invalid TOML: Expected ']' at the end of a table declaration"],
        ),
        (
            "[defaults]\nagent = 'claud'\nprompt_template = 'nope.txt'\n"
            "[agents.claude]\nargv = ['sh']\n[agents.empty]\nargv = []\n",
            [
                "my.toml:2: defaults.agent: no agent profile 'claud'; did you mean 'claude'?",
                "my.toml:3: defaults.prompt_template: nope.txt: file not found",
                "my.toml:5: agents.claude.argv: warning: no argument holds {prompt}: the agent "
                'is never given the prompt (add "{prompt}" or set prompt_via = "stdin")',
                "my.toml:7: agents.empty.argv: is empty: give the agent's command and its "
                "arguments",
            ],
        ),
        (
            "[agents.x]\nargv = ['no-such-agent-cli-here', '{prompt}']\n",
            [
                "my.toml:2: agents.x.argv: warning: 'no-such-agent-cli-here' is not on PATH (nor a "
                "file): install it"
            ],
        ),
    ],
)
def test_check_reports_file_and_line(project: Path, text: str, expected: list[str]) -> None:
    result = _check(project, text)
    stdout = [line for line in result.output.splitlines() if not line.startswith("my.toml: ")]
    assert stdout == expected
    errors = sum("warning:" not in line for line in expected)
    assert result.exit_code == (1 if errors else 0)


def test_check_names_environment_values(project: Path) -> None:
    (project / "my.toml").write_text(CONFIG)
    result = _invoke("config", "check", "my.toml", env={"ORCHESTRATORD_MAX_PARALLEL": "0"})
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "ORCHESTRATORD_MAX_PARALLEL: max_parallel: Input should be greater than or equal to 1 "
        "(got 0)"
    )
    missing = _invoke("config", "check", "nope.toml")
    assert missing.exit_code == 1
    assert "nope.toml: config file not found" in missing.output
