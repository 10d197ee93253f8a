"""Settings: ``orchestratord.toml`` < ``ORCHESTRATORD_*`` environment < command-line flags.

Every effective value remembers where it came from (``config show``). Unknown keys are errors
that suggest the closest valid name; relative paths in the file are relative to the file's own
directory, relative paths from the environment or flags to the working directory.

The config file is found at ``--config`` / ``ORCHESTRATORD_CONFIG``, else
``./config/orchestratord.toml``, else ``./orchestratord.toml``; without one, defaults apply.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

ENV_PREFIX = "ORCHESTRATORD_"
CONFIG_CANDIDATES = (Path("config/orchestratord.toml"), Path("orchestratord.toml"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Seconds = Annotated[float, Field(gt=0)]
CommandSpec = str | list[str]


class Defaults(_Section):
    """Task settings used when neither the task nor its track sets them."""

    max_iterations: Annotated[int, Field(ge=1)] = 10
    timeout: Seconds = 3600.0
    verify_timeout: Seconds = 900.0
    verify: list[CommandSpec] = Field(default_factory=list)
    agent: str | None = None
    failure_output_bytes: Annotated[int, Field(ge=0)] = 4000
    prompt_template: str | None = None


class Agent(_Section):
    """An agent profile: how to run an agent CLI with a prompt."""

    argv: list[str]
    prompt_via: Literal["argv", "stdin"] = "argv"
    env: dict[str, str] = Field(default_factory=dict)
    timeout: Seconds | None = None


class Settings(_Section):
    """All settings, with their defaults."""

    tracks: str = "tracks"
    state_dir: str | None = None
    max_parallel: Annotated[int, Field(ge=1)] = 4
    shutdown_grace: Seconds = 30.0
    kill_grace: Seconds = 5.0
    writeback_delay: Annotated[float, Field(ge=0)] = 0.5
    log_max_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    board_path: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    # Live editing (docs/live-editing.md).
    watch: bool = True
    """Watch the tracks directory and apply saved edits at once (else on SIGHUP/reload)."""
    watch_quiet: Annotated[float, Field(ge=0)] = 0.5
    """Seconds a file that does not read must stay unchanged before it is reported."""
    defaults: Defaults = Field(default_factory=Defaults)
    agents: dict[str, Agent] = Field(default_factory=dict)


PATH_KEYS = frozenset({"tracks", "state_dir", "board_path"})
ENV_KEYS: Mapping[str, str] = {
    "TRACKS": "tracks",
    "STATE_DIR": "state_dir",
    "MAX_PARALLEL": "max_parallel",
    "SHUTDOWN_GRACE": "shutdown_grace",
    "KILL_GRACE": "kill_grace",
    "WRITEBACK_DELAY": "writeback_delay",
    "BOARD_PATH": "board_path",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "WATCH": "watch",
    "WATCH_QUIET": "watch_quiet",
}


@dataclass(frozen=True, slots=True)
class Source:
    kind: Literal["default", "file", "env", "flag"]
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}".strip()


@dataclass(frozen=True, slots=True)
class Config:
    """The effective settings, with absolute paths and the source of every top-level key."""

    settings: Settings
    tracks_dir: Path
    state_dir: Path
    config_file: Path | None
    sources: Mapping[str, Source] = field(default_factory=dict)


def find_config_file(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    chosen = explicit or env.get(ENV_PREFIX + "CONFIG")
    if chosen:
        path = (cwd / chosen).resolve()
        if not path.is_file():
            raise ConfigError(f"{chosen}: config file not found")
        return path
    for candidate in CONFIG_CANDIDATES:
        if (cwd / candidate).is_file():
            return (cwd / candidate).resolve()
    return None


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=", re.MULTILINE)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return list(Agent.model_fields) if isinstance(part, str) else []
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) else None
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _errors(exc: ValidationError, origin: str, text: str) -> list[str]:
    """One line per error, ``FILE:LINE: key: message``, in file order."""
    out: list[tuple[int, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc if not str(p).startswith(("list[", "str")))
        key = str(loc[-1]) if loc else ""
        line = _line_of(text, key) if text and key else None
        where = f"{origin}:{line}" if line else origin
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, _known_keys(Settings, loc), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"{where}: {dotted}: unknown setting{hint}"
        else:
            message = f"{where}: {dotted}: {err['msg']} (got {err.get('input')!r})"
        out.append((line or 0, message))
    return [message for _, message in sorted(out, key=lambda item: item[0])]


def _coerce_env(key: str, value: str) -> object:
    annotation = Settings.model_fields[key].annotation
    if annotation is bool:
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{ENV_PREFIX}{key.upper()}={value!r}: expected true or false")
    if annotation is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{key.upper()}={value!r}: expected an integer") from None
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{key.upper()}={value!r}: expected a number") from None
    return value


def default_state_dir(tracks_dir: Path, env: Mapping[str, str]) -> Path:
    """Per tracks directory, under the platform's place for application state."""
    if sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support" / "orchestratord"
    else:
        xdg = env.get("XDG_STATE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "orchestratord"
    tag = hashlib.sha256(str(tracks_dir).encode()).hexdigest()[:8]
    return root / f"{tracks_dir.name or 'tracks'}-{tag}"


def load(
    *,
    config_file: str | None = None,
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Build the effective configuration; raise :class:`ConfigError` naming every problem."""
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path = find_config_file(config_file, env, cwd)
    raw: dict[str, Any] = {}
    text = ""
    sources: dict[str, Source] = {}
    origin = str(path) if path else "<defaults>"
    if path is not None:
        text = path.read_text(encoding="utf-8")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        base = path.parent
        for key, value in list(raw.items()):
            if key in PATH_KEYS and isinstance(value, str):
                raw[key] = str((base / value).resolve()) if value else value
            sources[key] = Source("file", str(path))
    for suffix, key in ENV_KEYS.items():
        value = env.get(ENV_PREFIX + suffix)
        if value is None or value == "":
            continue
        raw[key] = str((cwd / value).resolve()) if key in PATH_KEYS else _coerce_env(key, value)
        sources[key] = Source("env", ENV_PREFIX + suffix)
    for key, value in flags.items():
        if key not in Settings.model_fields:
            raise ConfigError(f"unknown setting {key!r} given as a flag")
        raw[key] = str((cwd / str(value)).resolve()) if key in PATH_KEYS else value
        sources[key] = Source("flag", "--" + key.replace("_", "-"))
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_errors(exc, origin, text))) from None
    for key in Settings.model_fields:
        sources.setdefault(key, Source("default"))
    tracks_dir = (cwd / settings.tracks).resolve()
    state_dir = (
        (cwd / settings.state_dir).resolve()
        if settings.state_dir
        else default_state_dir(tracks_dir, env)
    )
    return Config(settings, tracks_dir, state_dir, path, sources)
