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


# ------------------------------------------------------------------ agents, git, budgets
# Agent profiles and roles (docs/agents.md), budgets, guardrails and git (docs/git.md).

AGENT_KINDS = ("claude", "codex", "aider", "gemini", "generic")
"""Kinds of agent CLI orchestratord knows; all but ``generic`` are also built-in profiles."""

DEFAULT_GUARDRAILS = (
    r"@ts-ignore",
    r"@ts-nocheck",
    r"eslint-disable",
    r"#\s*type:\s*ignore",
    r"#\s*noqa",
    r"pytest\.mark\.skip",
    r"\.only\(",
    r"\b(?:it|test|describe)\.skip\(",
)
DEFAULT_NO_TESTS = (
    r"\bno tests ran\b",
    r"\bcollected 0 items\b",
    r"\bRan 0 tests\b",
    r"\bNo tests found\b",
    r"\bNo test files found\b",
    r"^\s*0 passing\b",
)


class Agent(_Section):
    """An agent profile: how to run an agent CLI with a prompt (``[agents.NAME]``).

    A profile named after a built-in kind (``claude``, ``codex``, ``aider``, ``gemini``)
    changes only the fields it sets; any other profile needs ``argv`` or a ``kind``.
    """

    kind: Literal["claude", "codex", "aider", "gemini", "generic"] | None = None
    argv: list[str] | None = None
    """The whole command line; ``{prompt}`` in an argument is replaced by the prompt."""
    binary: str | None = None
    model: str | None = None
    permission_mode: str | None = None
    skip_permissions: bool = False
    args: list[str] = Field(default_factory=list)
    """Extra arguments after the built-in ones."""
    output: Literal["text", "claude-json"] | None = None
    prompt_via: Literal["argv", "stdin"] = "argv"
    env: dict[str, str] = Field(default_factory=dict)
    timeout: Seconds | None = None
    usage_limit_patterns: list[str] = Field(default_factory=list)
    usage_limit_wait: Seconds = 1800.0


class Role(_Section):
    """An old queue file's ``agent`` role name: the default profile, with a paragraph."""

    prompt: str = ""
    agent: str | None = None
    """The profile to run (default: ``defaults.agent``)."""
    manual: bool = False
    """A task for a person: it is blocked at once, not run."""


class Git(_Section):
    enabled: bool = True
    worktrees: bool | Literal["auto"] = "auto"
    worktree_dir: str | None = None
    base_branch: str | None = None
    integration: Literal["merge", "branch"] = "merge"
    commit: bool = True
    exclude: list[str] = Field(default_factory=list)


class Guardrails(_Section):
    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_GUARDRAILS))
    extra_patterns: list[str] = Field(default_factory=list)
    exempt_marker: str = "orchestratord: allow"
    ignore_paths: list[str] = Field(default_factory=list)
    no_tests_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_NO_TESTS))


Usd = Annotated[float, Field(gt=0)]
Tokens = Annotated[int, Field(gt=0)]


class Budgets(_Section):
    task_usd: Usd | None = None
    task_tokens: Tokens | None = None
    track_usd: Usd | None = None
    track_tokens: Tokens | None = None
    day_usd: Usd | None = None
    day_tokens: Tokens | None = None


def _check_agents(settings: Settings) -> list[str]:
    """Problems pydantic cannot see: profiles without a command, bad regular expressions."""
    problems: list[str] = []
    for name, agent in settings.agents.items():
        kind = agent.kind or (name if name in AGENT_KINDS[:-1] else None)
        if agent.argv is None and kind in (None, "generic"):
            problems.append(
                f'agents.{name}: no command: give argv = [...] (with "{{prompt}}" or '
                f'prompt_via = "stdin"), or kind = one of {", ".join(AGENT_KINDS[:-1])}'
            )
        if agent.argv is not None and not agent.argv:
            problems.append(f"agents.{name}.argv: empty; give the command and its arguments")
        if (agent.permission_mode or "").lower() == "bypasspermissions" and not (
            agent.skip_permissions
        ):
            problems.append(
                f"agents.{name}.permission_mode: bypassPermissions skips every permission "
                "check; set skip_permissions = true to mean it"
            )
        problems += _bad_patterns(f"agents.{name}.usage_limit_patterns", agent.usage_limit_patterns)
    for name, role in settings.roles.items():
        if role.agent and role.agent not in settings.agents and role.agent not in AGENT_KINDS:
            problems.append(f"roles.{name}.agent: unknown agent profile {role.agent!r}")
    guard = settings.guardrails
    problems += _bad_patterns("guardrails.patterns", guard.patterns)
    problems += _bad_patterns("guardrails.extra_patterns", guard.extra_patterns)
    problems += _bad_patterns("guardrails.no_tests_patterns", guard.no_tests_patterns)
    return problems


def _bad_patterns(where: str, patterns: list[str]) -> list[str]:
    out = []
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            out.append(f"{where}[{index}]: not a regular expression ({exc}): {pattern!r}")
    return out


# ------------------------------------------------------------------ end of agents, git, budgets


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
    defaults: Defaults = Field(default_factory=Defaults)
    agents: dict[str, Agent] = Field(default_factory=dict)
    roles: dict[str, Role] = Field(default_factory=dict)
    git: Git = Field(default_factory=Git)
    guardrails: Guardrails = Field(default_factory=Guardrails)
    budgets: Budgets = Field(default_factory=Budgets)


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
            section = Role if loc and loc[0] == "roles" else Agent
            return list(section.model_fields) if isinstance(part, str) else []
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
    if problems := _check_agents(settings):
        raise ConfigError("\n".join(f"{origin}: {p}" for p in problems))
    for key in Settings.model_fields:
        sources.setdefault(key, Source("default"))
    tracks_dir = (cwd / settings.tracks).resolve()
    state_dir = (
        (cwd / settings.state_dir).resolve()
        if settings.state_dir
        else default_state_dir(tracks_dir, env)
    )
    return Config(settings, tracks_dir, state_dir, path, sources)
