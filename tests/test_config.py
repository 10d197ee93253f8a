"""Settings: file < environment < flags, with sources, paths and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "orchestratord.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_config_file(tmp_path: Path) -> None:
    cfg = config.load(env={"XDG_STATE_HOME": str(tmp_path / "xdg")}, cwd=tmp_path)
    assert cfg.config_file is None
    assert cfg.tracks_dir == tmp_path / "tracks"
    assert cfg.state_dir.parent == tmp_path / "xdg" / "orchestratord"
    assert cfg.state_dir.name.startswith("tracks-")
    assert cfg.settings.max_parallel == 4
    assert cfg.sources["max_parallel"].kind == "default"


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, 'tracks = "../queues"\nmax_parallel = 2\nstate_dir = "../state"\n')
    cfg = config.load(env={}, cwd=tmp_path)
    assert cfg.config_file == path
    assert cfg.tracks_dir == tmp_path / "queues"  # relative to the config file
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.settings.max_parallel == 2
    cfg = config.load(
        env={"ORCHESTRATORD_MAX_PARALLEL": "3", "ORCHESTRATORD_TRACKS": "t"}, cwd=tmp_path
    )
    assert cfg.settings.max_parallel == 3
    assert cfg.tracks_dir == tmp_path / "t"  # relative to the working directory
    assert str(cfg.sources["max_parallel"]) == "env ORCHESTRATORD_MAX_PARALLEL"
    cfg = config.load(
        env={"ORCHESTRATORD_MAX_PARALLEL": "3"}, flags={"max_parallel": 9}, cwd=tmp_path
    )
    assert cfg.settings.max_parallel == 9
    assert str(cfg.sources["max_parallel"]) == "flag --max-parallel"


def test_a_top_level_setting_written_below_a_table_says_to_move_it(tmp_path: Path) -> None:
    """TOML puts every key after a [table] header into that table: appending a line to a
    config that ends with one is the classic slip."""
    _write(tmp_path, 'board_path = "b.md"\n\n[notify.command]\nargv = ["true"]\nmax_parallel = 1\n')
    with pytest.raises(ConfigError) as info:
        config.load(env={}, cwd=tmp_path)
    assert str(info.value).endswith(
        ":5: notify.command.max_parallel: unknown setting; 'max_parallel' is a top-level "
        "setting, and a key written below a [notify.command] header belongs to that table: "
        "move it above the first [table] header"
    )


def test_unknown_setting_suggests_the_closest_name(tmp_path: Path) -> None:
    _write(tmp_path, "max_paralel = 2\n\n[defaults]\nmax_iteration = 3\n")
    with pytest.raises(ConfigError) as info:
        config.load(env={}, cwd=tmp_path)
    lines = str(info.value).splitlines()
    assert lines[0].endswith(":1: max_paralel: unknown setting; did you mean 'max_parallel'?")
    assert lines[1].endswith(
        ":4: defaults.max_iteration: unknown setting; did you mean 'max_iterations'?"
    )


def test_bad_values_and_bad_toml(tmp_path: Path) -> None:
    _write(tmp_path, 'max_parallel = "two"\n')
    with pytest.raises(ConfigError, match=r"orchestratord.toml:1: max_parallel: "):
        config.load(env={}, cwd=tmp_path)
    _write(tmp_path, "max_parallel = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="expected an integer"):
        config.load(env={"ORCHESTRATORD_MAX_PARALLEL": "x"}, cwd=tmp_path / "nowhere")


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(config_file="missing.toml", env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(env={"ORCHESTRATORD_CONFIG": "missing.toml"}, cwd=tmp_path)


def test_the_shipped_config_file_is_valid() -> None:
    repo = Path(__file__).resolve().parent.parent
    cfg = config.load(config_file=str(repo / "config" / "orchestratord.toml"), env={}, cwd=repo)
    assert cfg.tracks_dir == repo / "tracks"


def test_every_nested_setting_has_a_source_with_its_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "max_parallel = 2\n\n[defaults]\ntimeout = 60\n\n[agents.claude]\nargv = ['claude']\n",
    )
    cfg = config.load(
        env={"ORCHESTRATORD_LOG_LEVEL": "debug"}, flags={"kill_grace": 2}, cwd=tmp_path
    )
    sources = {key: str(source) for key, source in cfg.sources.items()}
    assert sources["max_parallel"] == f"file {path}:1"
    assert sources["defaults.timeout"] == f"file {path}:4"
    assert sources["defaults.verify_timeout"] == "default"
    assert sources["agents.claude.argv"] == f"file {path}:7"
    assert sources["agents.claude.prompt_via"] == "default"
    assert sources["log_level"] == "env ORCHESTRATORD_LOG_LEVEL"
    assert sources["kill_grace"] == "flag --kill-grace"
    keys = {".".join(parts) for parts, _ in config.setting_items(cfg.settings)}
    assert keys <= cfg.sources.keys()
    assert {"defaults.timeout", "agents.claude.argv", "logs_keep_days"} <= keys


def test_errors_point_at_the_right_line_and_name_env_values(tmp_path: Path) -> None:
    _write(tmp_path, "[defaults]\ntimeout = 60\n\n[agents.a]\nargv = ['x']\ntimeout = -1\n")
    with pytest.raises(ConfigError) as info:
        config.load(env={}, cwd=tmp_path)
    assert str(info.value).endswith(":6: agents.a.timeout: Input should be greater than 0 (got -1)")
    _write(tmp_path, "log_level = 'info'\n")
    with pytest.raises(ConfigError) as info:
        config.load(env={"ORCHESTRATORD_LOG_FORMAT": "xml"}, cwd=tmp_path)
    assert str(info.value).startswith("ORCHESTRATORD_LOG_FORMAT: log_format: Input should be")
    _write(tmp_path, "max_parallel = 2\nlog_level = \n")
    with pytest.raises(ConfigError) as info:
        config.load(env={}, cwd=tmp_path)
    assert str(info.value).endswith("orchestratord.toml:2:13: invalid TOML: Invalid value")


def test_a_config_loads_again_from_the_same_place(tmp_path: Path) -> None:
    path = _write(tmp_path, "max_parallel = 2\n")
    cfg = config.load(flags={"tracks": "queues"}, env={}, cwd=tmp_path)
    path.write_text("max_parallel = 5\n")
    again = config.reload(cfg, env={})
    assert again.settings.max_parallel == 5
    assert again.tracks_dir == tmp_path / "queues"
    assert again.config_file == path


def test_service_settings_from_file_and_environment(tmp_path: Path) -> None:
    _write(tmp_path, 'log_file = "../log/daemon.log"\nlogs_keep_days = 7\n')
    cfg = config.load(env={"ORCHESTRATORD_LOGS_MAX_TOTAL_BYTES": "5000000"}, cwd=tmp_path)
    assert cfg.settings.log_file == str(tmp_path / "log" / "daemon.log")
    assert cfg.settings.logs_keep_days == 7
    assert cfg.settings.logs_max_total_bytes == 5_000_000
    with pytest.raises(ConfigError, match="greater than or equal to 0"):
        config.load(env={"ORCHESTRATORD_LOGS_KEEP_DAYS": "-1"}, cwd=tmp_path)


def test_watching_is_set_from_the_environment_in_words() -> None:
    def load(value: str) -> bool:
        env = {"ORCHESTRATORD_WATCH": value, "ORCHESTRATORD_WATCH_QUIET": "0.2"}
        loaded = config.load(env=env, cwd=Path("/"))
        assert loaded.settings.watch_quiet == 0.2
        return loaded.settings.watch

    words = ("false", "0", "no", "off", "true", "1", "YES")
    assert [load(v) for v in words] == [False, False, False, False, True, True, True]
    with pytest.raises(ConfigError, match="ORCHESTRATORD_WATCH='maybe': expected true or false"):
        load("maybe")
