"""A changed config applied to a running daemon: what changes at once, what waits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from orchestrator import config
from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.reconfigure import RELOADABLE, ConfigReloader, merge
from orchestrator.supervisor import Control, serve

from .conftest import WriteTrack


def _load(path: Path, tmp_path: Path) -> config.Config:
    flags = {"tracks": "tracks", "state_dir": "state", "writeback_delay": 0.05}
    return config.load(config_file=str(path), flags=flags, env={}, cwd=tmp_path)


def test_merge_takes_what_can_change_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("max_parallel = 1\nshutdown_grace = 10\n")
    running = _load(path, tmp_path)
    path.write_text(
        "max_parallel = 3\nshutdown_grace = 99\nstate_dir = 'elsewhere'\n\n"
        "[defaults]\ntimeout = 5\n"
    )
    change = merge(running, _load(path, tmp_path))
    assert change.applied == ("max_parallel", "defaults")
    assert change.at_restart == ("shutdown_grace",)  # state_dir comes from a flag: unchanged
    effective = change.config
    assert effective.settings.max_parallel == 3
    assert effective.settings.defaults.timeout == 5
    assert effective.settings.shutdown_grace == 10
    assert effective.state_dir == running.state_dir
    assert str(effective.sources["defaults.timeout"]).endswith("c.toml:6")
    assert str(effective.sources["shutdown_grace"]).endswith("c.toml:2")
    assert "tracks" not in RELOADABLE
    assert "state_dir" not in RELOADABLE


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_reload_applies_a_new_config_and_keeps_the_old_one_when_bad(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("ORCHESTRATORD_")]:
        monkeypatch.delenv(name)
    gate = tmp_path / "gate"
    wait = f"while [ ! -f {gate} ]; do sleep 0.02; done"
    write_track("a", [{"id": "A", "command": wait}])
    write_track("b", [{"id": "B", "command": wait}])
    path = tmp_path / "c.toml"
    path.write_text("max_parallel = 1\n")
    cfg = _load(path, tmp_path)
    control = Control()
    events: list[tuple[str, dict[str, object]]] = []
    log_file = tmp_path / "daemon.log"

    async def scenario(engine: Engine) -> None:
        assert sum(engine.running.values()) == 1
        path.write_text(f"max_parallel = 2\nshutdown_grace = 99\nlog_file = '{log_file}'\n")
        assert control.reload is not None
        await control.reload()
        assert sum(engine.running.values()) == 2  # started in the same turn
        assert engine.cfg.settings.shutdown_grace == cfg.settings.shutdown_grace
        path.write_text("max_parallel = 'many'\n")
        await control.reload()
        assert engine.cfg.settings.max_parallel == 2  # the settings in force stay
        gate.touch()
        while any(engine.running.values()):
            await engine.wait_changed()
        control.request_stop()

    async with LocalExecutor(1.0) as executor, anyio.create_task_group() as tg:

        def ready(engine: Engine) -> None:
            engine.listeners.append(lambda kind, _, data: events.append((kind, dict(data))))
            tg.start_soon(scenario, engine)

        code = await serve(
            cfg,
            executor,
            control=control,
            handle_signals=False,
            services=[ConfigReloader()],
            on_ready=ready,
        )
    assert code == 0
    reloaded = [data for kind, data in events if kind == "config_reloaded"]
    assert reloaded == [{"changed": ["max_parallel", "log_file"], "at_restart": ["shutdown_grace"]}]
    invalid = [data for kind, data in events if kind == "config_invalid"]
    assert len(invalid) == 1
    problems = invalid[0]["problems"]
    assert isinstance(problems, list)
    assert problems[0].endswith(
        "c.toml:1: max_parallel: Input should be a valid integer (got 'many')"
    )
    logged = [json.loads(line)["event"] for line in log_file.read_text().splitlines()]
    assert "config not reloaded: the settings in force stay" in logged  # the new log file
