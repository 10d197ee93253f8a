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
