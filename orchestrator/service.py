"""Service files that run the daemon under systemd or launchd, made by pure functions.

``orchestratord service install`` describes the service it is asked for in a
:class:`ServiceSpec` (built by :func:`spec_for` from the effective config and the environment
the command runs in: the Python that runs it, the working directory, ``PATH``) and writes
:func:`render` of it to :attr:`ServiceSpec.file`. :func:`instructions` says what to run next.
Nothing here reads or writes files or runs anything; ``servicecmd`` does.

The systemd unit is ``Type=notify`` (the daemon says when it is ready, see ``sdnotify``), with
a watchdog, a restart on failure that gives up after ``START_LIMIT_BURST`` failures in
``START_LIMIT_INTERVAL`` seconds, no restart after a configuration error (exit status 2),
``KillMode=mixed`` (SIGTERM to the daemon, which stops its own children inside the grace) and a
stop timeout longer than the daemon's grace. The launchd plist keeps the daemon alive after a
failure, throttled, and waits for it as long on stop. Neither forks: the daemon stays in the
foreground.
"""

from __future__ import annotations

import math
import plistlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

from .config import ENV_PREFIX, Config
from .errors import ConfigError, UsageError

Manager = Literal["systemd", "launchd"]
Scope = Literal["user", "system"]

DEFAULT_NAME = "orchestratord"
DEFAULT_WATCHDOG = 60
STOP_MARGIN = 15
"""Seconds beyond the shutdown and kill graces for the final write-back and the exit."""
START_MARGIN = 90
START_LIMIT_INTERVAL = 600
START_LIMIT_BURST = 5
RESTART_SEC = 5
THROTTLE_INTERVAL = 30
PASSED_AS_FLAGS = ("CONFIG", "TRACKS", "STATE_DIR")
SECRETS = ("RAY_TOKEN",)
"""``ORCHESTRATORD_*`` variables never written into a (world-readable) service file."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")


def stop_timeout(shutdown_grace: float, kill_grace: float) -> int:
    """Seconds a service manager should give the daemon to stop before killing it."""
    return math.ceil(shutdown_grace + kill_grace) + STOP_MARGIN


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """Everything a service file says, decided before anything is written."""

    name: str
    manager: Manager
    scope: Scope
    file: str
    """Where the unit or plist goes."""
    argv: tuple[str, ...]
    workdir: str
    path: str
    """``PATH`` as it was when the service was installed (agent CLIs live in user paths)."""
    env: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    """The account: a system service runs as it; a user service names it for lingering."""
    uid: int = 0
    description: str = "orchestratord"
    watchdog: int = DEFAULT_WATCHDOG
    start_timeout: int = START_MARGIN
    stop_timeout: int = STOP_MARGIN
    log_file: str | None = None
    """launchd: where the daemon's stdout and stderr go."""

    @property
    def unit(self) -> str:
        return f"{self.name}.service"


def daemon_argv(python: str, cfg: Config) -> tuple[str, ...]:
    """The daemon's command line: this Python, and every path absolute and explicit."""
    argv = [python, "-m", "orchestrator", "start", "--no-progress"]
    if cfg.config_file is not None:
        argv += ["--config", str(cfg.config_file)]
    argv += ["--tracks", str(cfg.tracks_dir), "--state-dir", str(cfg.state_dir)]
    return tuple(argv)


def clean_path(path: str) -> str:
    """``PATH`` for a service: absolute entries only (never ``.``), each once, in order."""
    seen: dict[str, None] = {}
    for entry in path.split(":"):
        if entry.startswith("/"):
            seen.setdefault(entry.rstrip("/") or "/", None)
    return ":".join(seen)


def default_manager(platform: str) -> Manager:
    return "launchd" if platform == "darwin" else "systemd"


def check_name(name: str) -> str:
    name = name.removesuffix(".service").removesuffix(".plist")
    if not _NAME.match(name):
        raise UsageError(f"{name!r}: not a usable service name; use letters, digits and . _ - @ :")
    return name


def spec_for(
    cfg: Config,
    *,
    manager: Manager,
    scope: Scope,
    name: str = DEFAULT_NAME,
    python: str,
    cwd: str,
    env: Mapping[str, str],
    home: str,
    uid: int,
    user: str | None,
    watchdog: int = DEFAULT_WATCHDOG,
) -> ServiceSpec:
    """The service for this config, run by ``python``, from ``cwd``, with ``env``'s PATH."""
    name = check_name(name)
    if watchdog < 0:
        raise UsageError("--watchdog-sec must be 0 (off) or more")
    captured = tuple(
        sorted(
            (key, value)
            for key, value in env.items()
            if key.startswith(ENV_PREFIX)
            and key.removeprefix(ENV_PREFIX) not in (*PASSED_AS_FLAGS, *SECRETS)
        )
    )
    settings = cfg.settings
    file, log_file = _locations(manager, scope, name, PurePath(home), env)
    path = clean_path(env.get("PATH", ""))
    if not path:
        raise ConfigError("PATH is empty: the service would find no agent CLI; set PATH first")
    return ServiceSpec(
        name=name,
        manager=manager,
        scope=scope,
        file=file,
        argv=daemon_argv(python, cfg),
        workdir=cwd,
        path=path,
        env=captured,
        user=user,
        uid=uid,
        description=f"orchestratord: the work queues in {cfg.tracks_dir}",
        watchdog=watchdog,
        start_timeout=math.ceil(settings.kill_grace) + START_MARGIN,
        stop_timeout=stop_timeout(settings.shutdown_grace, settings.kill_grace),
        log_file=log_file,
    )


def _locations(
    manager: Manager, scope: Scope, name: str, home: PurePath, env: Mapping[str, str]
) -> tuple[str, str | None]:
    """Where the service file goes, and (launchd) where its output goes."""
    if manager == "systemd":
        if scope == "system":
            return f"/etc/systemd/system/{name}.service", None
        config_home = env.get("XDG_CONFIG_HOME") or str(home / ".config")
        return str(PurePath(config_home) / "systemd" / "user" / f"{name}.service"), None
    if scope == "system":
        return f"/Library/LaunchDaemons/{name}.plist", f"/Library/Logs/orchestratord/{name}.log"
    return (
        str(home / "Library" / "LaunchAgents" / f"{name}.plist"),
        str(home / "Library" / "Logs" / "orchestratord" / f"{name}.log"),
    )


def render(spec: ServiceSpec) -> bytes:
    """The file's bytes: a systemd unit or a launchd plist."""
    if spec.manager == "systemd":
        return systemd_unit(spec).encode()
    return launchd_plist(spec)


# --------------------------------------------------------------------------- systemd


def _specifiers(text: str) -> str:
    return text.replace("%", "%%")


def _exec_word(word: str, *, first: bool = False) -> str:
    """One word of a systemd command line: specifiers, variables and quotes escaped."""
    text = _specifiers(word)
    if not first:
        text = text.replace("$", "$$")
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _env_assignment(key: str, value: str) -> str:
    text = _specifiers(f"{key}={value}").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def systemd_unit(spec: ServiceSpec) -> str:
    exec_start = " ".join(_exec_word(word, first=i == 0) for i, word in enumerate(spec.argv))
    unit = [
        "# Written by `orchestratord service install`. Install it again after changing",
        "# shutdown_grace or kill_grace, the Python environment, or PATH.",
        "[Unit]",
        f"Description={_specifiers(spec.description)}",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL}",
        f"StartLimitBurst={START_LIMIT_BURST}",
    ]
    if spec.scope == "system":
        unit += ["After=network-online.target", "Wants=network-online.target"]
    unit += [
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WorkingDirectory={_specifiers(spec.workdir)}",
        f"Environment={_env_assignment('PATH', spec.path)}",
    ]
    unit += [f"Environment={_env_assignment(k, v)}" for k, v in spec.env]
    if spec.user and spec.scope == "system":
        unit.append(f"User={spec.user}")
    if spec.watchdog:
        unit.append(f"WatchdogSec={spec.watchdog}")
    unit += [
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        f"RestartPreventExitStatus={ConfigError.exit_code}",
        "KillMode=mixed",
        f"TimeoutStartSec={spec.start_timeout}",
        f"TimeoutStopSec={spec.stop_timeout}",
        f"SyslogIdentifier={spec.name}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if spec.scope == 'user' else 'multi-user.target'}",
        "",
    ]
    return "\n".join(unit)


# --------------------------------------------------------------------------- launchd


def launchd_plist(spec: ServiceSpec) -> bytes:
    env = {"PATH": spec.path, **dict(spec.env)}
    plist: dict[str, object] = {
        "Label": spec.name,
        "ProgramArguments": list(spec.argv),
        "WorkingDirectory": spec.workdir,
        "EnvironmentVariables": env,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_INTERVAL,
        "ExitTimeOut": spec.stop_timeout,
    }
    if spec.log_file:
        plist["StandardOutPath"] = spec.log_file
        plist["StandardErrorPath"] = spec.log_file
    if spec.user and spec.scope == "system":
        plist["UserName"] = spec.user
    return plistlib.dumps(plist, sort_keys=True)


# --------------------------------------------------------------------------- what to run


@dataclass(frozen=True, slots=True)
class Instructions:
    """Commands (argv lists) to run for a service, and notes for people."""

    enable: tuple[tuple[str, ...], ...]
    status: tuple[str, ...]
    logs: tuple[str, ...]
    reload: tuple[str, ...]
    disable: tuple[tuple[str, ...], ...]
    """Run before the file is removed."""
    after_removal: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()


def instructions(spec: ServiceSpec) -> Instructions:
    if spec.manager == "systemd":
        ctl = ("systemctl", "--user") if spec.scope == "user" else ("systemctl",)
        journal = ("journalctl", "--user") if spec.scope == "user" else ("journalctl",)
        notes: tuple[str, ...] = ()
        if spec.scope == "user":
            who = spec.user or "$USER"
            notes = (
                "A user service stops when you log out, unless lingering is on for your account.\n"
                "This keeps it running after you log out, and starts it at boot:\n"
                f"  loginctl enable-linger {who}",
            )
        return Instructions(
            enable=((*ctl, "daemon-reload"), (*ctl, "enable", "--now", spec.unit)),
            status=(*ctl, "status", "--no-pager", spec.unit),
            logs=(*journal, "-u", spec.unit, "-f"),
            reload=(*ctl, "reload", spec.unit),
            disable=((*ctl, "disable", "--now", spec.unit),),
            after_removal=((*ctl, "daemon-reload"),),
            notes=notes,
        )
    domain = f"gui/{spec.uid}" if spec.scope == "user" else "system"
    target = f"{domain}/{spec.name}"
    return Instructions(
        enable=(("launchctl", "bootstrap", domain, spec.file),),
        status=("launchctl", "print", target),
        logs=("tail", "-f", spec.log_file or "/dev/null"),
        reload=("launchctl", "kill", "HUP", target),
        disable=(("launchctl", "bootout", target),),
        after_removal=(),
        notes=(
            "launchd starts it at every login (RunAtLoad), and again after a failure\n"
            f"(KeepAlive, at most every {THROTTLE_INTERVAL} s). It does not rotate "
            f"{spec.log_file}:\nset log_file in the config for a log rotated by size.",
        ),
    )


def command_line(argv: tuple[str, ...]) -> str:
    return shlex.join(argv)
