"""Service files: the systemd unit (checked by systemd-analyze) and the launchd plist."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import config, service
from orchestrator.cli import cli
from orchestrator.errors import UsageError
from orchestrator.lock import StateLock
from orchestrator.service import ServiceSpec, instructions, render, spec_for

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None and not os.environ.get("REQUIRE_SYSTEMD_ANALYZE"),
    reason="systemd-analyze is not installed here (.ci/run installs it: apt-get install systemd)",
)
PATH = "/home/ana/.local/bin:/usr/local/bin:/usr/bin:/bin"


def _config(root: Path, text: str = "shutdown_grace = 120\nkill_grace = 10\n") -> config.Config:
    (root / "tracks").mkdir(parents=True, exist_ok=True)
    (root / "orchestratord.toml").write_text(text)
    return config.load(flags={"state_dir": "state"}, env={}, cwd=root)


def _spec(root: Path, manager: str = "systemd", scope: str = "user", **extra: Any) -> ServiceSpec:
    cfg = extra.pop("cfg", None) or _config(root)
    env = {"PATH": PATH, "HOME": "/home/ana", **extra.pop("env", {})}
    return spec_for(
        cfg,
        manager=manager,  # type: ignore[arg-type]
        scope=scope,  # type: ignore[arg-type]
        python=extra.pop("python", sys.executable),
        cwd=str(root),
        env=env,
        home="/home/ana",
        uid=1000,
        user="ana",
        **extra,
    )


def parse_unit(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value given to it."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(f"{section}.{key}", []).append(value)
    return out


def _verify(unit: Path, scope: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    argv = [SYSTEMD_ANALYZE, *(["--user"] if scope == "user" else []), "verify", str(unit)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


@needs_systemd_analyze
@pytest.mark.parametrize("scope", ["user", "system"])
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path, scope: str) -> None:
    spec = _spec(tmp_path, scope=scope, env={"ORCHESTRATORD_MAX_PARALLEL": "3"})
    unit = tmp_path / "units" / spec.unit
    unit.parent.mkdir()
    unit.write_bytes(render(spec))
    result = _verify(unit, scope, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no unknown keys, no bad values
    broken = tmp_path / "units" / "broken.service"
    broken.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    assert "Failed to parse service type" in _verify(broken, scope, tmp_path).stderr


@needs_systemd_analyze
def test_odd_paths_are_escaped_for_systemd(tmp_path: Path) -> None:
    odd = tmp_path / "my project %i $HOME"
    odd.mkdir()
    python = odd / "python"
    python.symlink_to(sys.executable)
    spec = _spec(odd, python=str(python))
    text = render(spec).decode()
    exec_start = parse_unit(text)["Service.ExecStart"][0]
    assert exec_start.startswith(f'"{tmp_path}/my project %%i $HOME/python" -m orchestrator')
    assert f'"{odd}/orchestratord.toml"'.replace("%", "%%").replace("$", "$$") in exec_start
    assert parse_unit(text)["Service.WorkingDirectory"] == [str(odd).replace("%", "%%")]
    unit = tmp_path / spec.unit
    unit.write_text(text)
    result = _verify(unit, "system", tmp_path)  # it checks that the program exists
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_unit_says_what_a_long_running_service_needs(tmp_path: Path) -> None:
    env = {
        "ORCHESTRATORD_MAX_PARALLEL": "3",
        "ORCHESTRATORD_TRACKS": "x",
        "ORCHESTRATORD_RAY_TOKEN": "s3cret",  # a secret: never in a world-readable file
    }
    spec = _spec(tmp_path, env=env)
    assert "s3cret" not in render(spec).decode()
    unit = parse_unit(render(spec).decode())
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.WatchdogSec"] == ["60"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.RestartPreventExitStatus"] == ["2"]  # a config error does not heal
    assert unit["Unit.StartLimitIntervalSec"] == ["600"]
    assert unit["Unit.StartLimitBurst"] == ["5"]
    assert unit["Service.KillMode"] == ["mixed"]
    assert int(unit["Service.TimeoutStopSec"][0]) > 120 + 10
    assert unit["Service.WorkingDirectory"] == [str(tmp_path)]
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Service.Environment"] == [f'"PATH={PATH}"', '"ORCHESTRATORD_MAX_PARALLEL=3"']
    argv = unit["Service.ExecStart"][0].split()
    assert argv[:5] == [sys.executable, "-m", "orchestrator", "start", "--no-progress"]
    assert argv[argv.index("--config") + 1] == str(tmp_path / "orchestratord.toml")
    assert argv[argv.index("--tracks") + 1] == str(tmp_path / "tracks")
    assert argv[argv.index("--state-dir") + 1] == str(tmp_path / "state")
    assert unit["Install.WantedBy"] == ["default.target"]
    assert "Service.User" not in unit
    system = parse_unit(render(_spec(tmp_path, scope="system", watchdog=0)).decode())
    assert system["Service.User"] == ["ana"]
    assert system["Install.WantedBy"] == ["multi-user.target"]
    assert "Service.WatchdogSec" not in system
    assert _spec(tmp_path, scope="system").file == "/etc/systemd/system/orchestratord.service"
    assert spec.file == "/home/ana/.config/systemd/user/orchestratord.service"


def test_the_plist_parses_back_with_every_key(tmp_path: Path) -> None:
    spec = _spec(tmp_path, manager="launchd", env={"ORCHESTRATORD_LOG_LEVEL": "debug"})
    plist = plistlib.loads(render(spec))
    assert plist["Label"] == "orchestratord"
    assert plist["ProgramArguments"] == list(spec.argv)
    assert plist["ProgramArguments"][:4] == [sys.executable, "-m", "orchestrator", "start"]
    assert plist["WorkingDirectory"] == str(tmp_path)
    assert plist["EnvironmentVariables"] == {"PATH": PATH, "ORCHESTRATORD_LOG_LEVEL": "debug"}
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # again after a failure only
    assert plist["ThrottleInterval"] == 30
    assert plist["ExitTimeOut"] > 120 + 10
    log = "/home/ana/Library/Logs/orchestratord/orchestratord.log"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == log
    assert "UserName" not in plist
    assert spec.file == "/home/ana/Library/LaunchAgents/orchestratord.plist"
    system = plistlib.loads(render(_spec(tmp_path, manager="launchd", scope="system")))
    assert system["UserName"] == "ana"
    assert _spec(tmp_path, manager="launchd", scope="system").file.startswith(
        "/Library/LaunchDaemons/"
    )


def test_what_to_run_next(tmp_path: Path) -> None:
    user = instructions(_spec(tmp_path))
    assert user.enable == (
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", "orchestratord.service"),
    )
    assert "loginctl enable-linger ana" in user.notes[0]
    assert user.reload == ("systemctl", "--user", "reload", "orchestratord.service")
    assert instructions(_spec(tmp_path, scope="system")).notes == ()
    mac = instructions(_spec(tmp_path, manager="launchd"))
    assert mac.enable == (
        (
            "launchctl",
            "bootstrap",
            "gui/1000",
            "/home/ana/Library/LaunchAgents/orchestratord.plist",
        ),
    )
    assert mac.disable == (("launchctl", "bootout", "gui/1000/orchestratord"),)


def test_path_names_and_timeouts(tmp_path: Path) -> None:
    assert service.clean_path("/a:.::/b/:/a:relative:/") == "/a:/b:/"
    assert service.check_name("backend.service") == "backend"
    with pytest.raises(UsageError, match="not a usable service name"):
        service.check_name("my service")
    assert service.stop_timeout(30, 5) == 50
    assert service.default_manager("darwin") == "launchd"
    assert service.default_manager("linux") == "systemd"
    with pytest.raises(Exception, match="PATH is empty"):
        _spec(tmp_path, env={"PATH": "relative"})


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    _config(root)
    monkeypatch.chdir(root)
    for name in [k for k in os.environ if k.startswith("ORCHESTRATORD_")]:
        monkeypatch.delenv(name)
    return root


def _invoke(tmp_path: Path, *args: str) -> Any:
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return CliRunner().invoke(cli, ["--state-dir", "state", *args], env=env)


def test_install_status_and_uninstall_a_user_unit(project: Path, tmp_path: Path) -> None:
    name = f"orchestratord-test-{uuid.uuid4().hex[:8]}"  # never a real service of this machine
    target = ["--user", "--systemd", "--name", name]
    unit = tmp_path / "xdg" / "systemd" / "user" / f"{name}.service"
    dry = _invoke(tmp_path, "service", "install", *target, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith(f"would write {unit}:")
    assert "Type=notify" in dry.output
    assert "systemctl --user enable --now" in dry.output
    assert not unit.exists()
    done = _invoke(tmp_path, "service", "install", *target)
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"wrote {unit}:")
    text = unit.read_text()
    assert f"--config {project / 'orchestratord.toml'}" in text
    assert f"--state-dir {project / 'state'}" in text
    assert f"WorkingDirectory={project}" in text
    assert _invoke(tmp_path, "service", "install", *target).output.startswith(
        f"{unit} is up to date:"
    )
    status = _invoke(tmp_path, "service", "status", *target)
    assert status.exit_code == 3, status.output  # installed, not running
    assert "installed, up to date" in status.output
    assert "daemon: not running" in status.output
    lock = StateLock(project / "state")
    lock.acquire()
    try:
        running = _invoke(tmp_path, "service", "status", *target)
    finally:
        lock.release()
    assert running.exit_code == 0, running.output
    assert f"daemon: running (pid {os.getpid()})" in running.output
    unit.write_text(text.replace(f"WorkingDirectory={project}", "WorkingDirectory=/elsewhere"))
    assert "install it again" in _invoke(tmp_path, "service", "status", *target).output
    # A watchdog chosen at install is what install would write again, not a difference.
    for seconds in ("5", "0"):
        again = _invoke(tmp_path, "service", "install", *target, "--watchdog-sec", seconds)
        assert again.exit_code == 0, again.output
        assert ("WatchdogSec=" in unit.read_text()) is (seconds != "0")
        assert "up to date" in _invoke(tmp_path, "service", "status", *target).output
    gone = _invoke(tmp_path, "service", "uninstall", *target)
    assert gone.exit_code == 0, gone.output
    assert f"systemctl --user disable --now {name}.service" in gone.output
    assert f"removed {unit}" in gone.output
    assert not unit.exists()
    assert _invoke(tmp_path, "service", "status", *target).exit_code == 4


def test_install_a_launch_agent(project: Path, tmp_path: Path) -> None:
    result = _invoke(tmp_path, "service", "install", "--user", "--launchd")
    assert result.exit_code == 0, result.output
    plist = tmp_path / "home" / "Library" / "LaunchAgents" / "orchestratord.plist"
    assert plistlib.loads(plist.read_bytes())["Label"] == "orchestratord"
    assert (tmp_path / "home" / "Library" / "Logs" / "orchestratord").is_dir()
    assert "launchctl bootstrap gui/" in result.output
    dry = _invoke(tmp_path, "service", "uninstall", "--user", "--launchd", "--dry-run")
    assert "would run: launchctl bootout gui/" in dry.output
    assert plist.exists()


def test_install_refuses_what_would_not_start(project: Path, tmp_path: Path) -> None:
    missing = _invoke(tmp_path, "--tracks", "nowhere", "service", "install", "--user")
    assert missing.exit_code == 1
    assert "tracks directory not found" in missing.output
    bad = _invoke(tmp_path, "service", "install", "--user", "--name", "two words")
    assert bad.exit_code == 2
    assert "not a usable service name" in bad.output


def test_the_files_shown_in_the_docs_are_what_install_writes() -> None:
    from .conftest import REPO
    from .test_docs import blocks

    shown = {lang: body for lang, _, body in blocks(REPO / "docs" / "service.md")}
    for manager, home, lang in (("systemd", "/home/ana", "ini"), ("launchd", "/Users/ana", "xml")):
        state = (
            f"{home}/.local/state/orchestratord"
            if manager == "systemd"
            else f"{home}/Library/Application Support/orchestratord"
        )
        cfg = config.Config(
            config.Settings(),
            Path(f"{home}/karematch/tracks"),
            Path(f"{state}/tracks-3f2a9c1e"),
            Path(f"{home}/karematch/config/orchestratord.toml"),
        )
        env = {"PATH": f"{home}/.local/bin:{home}/karematch/.venv/bin:/usr/local/bin:/usr/bin:/bin"}
        spec = spec_for(
            cfg,
            manager=manager,  # type: ignore[arg-type]
            scope="user",
            python=f"{home}/karematch/.venv/bin/python",
            cwd=f"{home}/karematch",
            env=env,
            home=home,
            uid=501,
            user="ana",
        )
        assert shown[lang] == render(spec).decode(), f"docs/service.md: the {lang} block"
