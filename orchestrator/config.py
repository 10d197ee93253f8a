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

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import tomlpos
from .control import api as _control_api
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


def _at(lines: Mapping[tuple[str, ...], int], key: str) -> str:
    """``:LINE`` of a dotted setting in the config file, or nothing."""
    line = lines.get(tuple(key.split("[", 1)[0].split(".")))
    return f":{line}" if line else ""


def agent_problems(settings: Settings) -> list[tuple[str, str]]:
    """Problems pydantic cannot see, as (setting, message): profiles without a command,
    permission modes that need consent, unknown role agents, bad regular expressions."""
    problems: list[tuple[str, str]] = []
    for name, agent in settings.agents.items():
        kind = agent.kind or (name if name in AGENT_KINDS[:-1] else None)
        if agent.argv is None and kind in (None, "generic"):
            problems.append(
                (
                    f"agents.{name}",
                    'no command: give argv = [...] (with "{prompt}" or prompt_via = "stdin"), '
                    f"or kind = one of {', '.join(AGENT_KINDS[:-1])}",
                )
            )
        if agent.argv is not None and not agent.argv:
            problems.append(
                (f"agents.{name}.argv", "is empty: give the agent's command and its arguments")
            )
        if (agent.permission_mode or "").lower() == "bypasspermissions" and not (
            agent.skip_permissions
        ):
            problems.append(
                (
                    f"agents.{name}.permission_mode",
                    "bypassPermissions skips every permission check; set skip_permissions = "
                    "true to mean it",
                )
            )
        problems += _bad_patterns(f"agents.{name}.usage_limit_patterns", agent.usage_limit_patterns)
    for name, role in settings.roles.items():
        if role.agent and role.agent not in settings.agents and role.agent not in AGENT_KINDS:
            problems.append((f"roles.{name}.agent", f"unknown agent profile {role.agent!r}"))
    guard = settings.guardrails
    problems += _bad_patterns("guardrails.patterns", guard.patterns)
    problems += _bad_patterns("guardrails.extra_patterns", guard.extra_patterns)
    problems += _bad_patterns("guardrails.no_tests_patterns", guard.no_tests_patterns)
    return problems


def _bad_patterns(where: str, patterns: list[str]) -> list[tuple[str, str]]:
    out = []
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            out.append((f"{where}[{index}]", f"not a regular expression ({exc}): {pattern!r}"))
    return out


# ------------------------------------------------------------------ end of agents, git, budgets


# -- scale-out: the Ray cluster (docs/ray.md) ---------------------------------------------


class RaySettings(_Section):
    """``[ray]``: the cluster that tracks with ``executor = "ray"`` send their attempts to.

    A track's ``executor`` object in its queue file overrides ``address``, the resources,
    ``pending_limit`` and the workspace settings for that track.
    """

    address: str = "http://127.0.0.1:8265"
    """The Jobs API: the Ray dashboard's URL (KubeRay: the head service, port 8265)."""
    token: str | None = None
    token_file: str | None = None
    """A file holding the token (relative to the config file); ``ORCHESTRATORD_RAY_TOKEN``
    in the environment also works."""
    cpus: Annotated[float, Field(ge=0)] = 1.0
    gpus: Annotated[float, Field(ge=0)] = 0.0
    memory_mb: Annotated[int, Field(ge=0)] = 0
    resources: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    pending_limit: Seconds = 1800.0
    poll_interval: Seconds = 1.0
    unreachable_limit: Seconds = 300.0
    python: str = "python3"
    env: Literal["exact", "overlay"] = "exact"
    check_capacity: bool = True
    workspace: Literal["shared", "git"] = "shared"
    repo: str | None = None
    ref: str | None = None
    work_root: str = "/tmp/orchestratord-runs"  # noqa: S108 - a directory on the nodes
    job_prefix: str | None = None
    detach_on_stop: bool = True
    """When the daemon stops, its Ray jobs go on and the next daemon re-attaches to them."""

    @model_validator(mode="after")
    def _reserves_something(self) -> RaySettings:
        if not (self.cpus or self.gpus or self.memory_mb or self.resources):
            raise ValueError(
                "cpus = 0 and no other resource: a run would reserve nothing and Ray would "
                "start any number at once; set cpus > 0 or a resource such as agent_slot"
            )
        return self


# -- end of scale-out ----------------------------------------------------------------------
# ---------------------------------------------------------------- control and visibility
# The control API's TCP address, the event log, notifications (docs/control-api.md).


def _known_events(names: list[str]) -> list[str]:
    for name in names:
        if name != "*" and name not in _control_api.EVENT_TYPES:
            close = difflib.get_close_matches(name, _control_api.EVENT_TYPES, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "use '*' for every event"
            raise ValueError(f"unknown event {name!r}; {hint}")
    return names


EventNames = Annotated[list[str], AfterValidator(_known_events)]


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("a webhook url starts with http:// or https://")
    return url


class Webhook(_Section):
    """POST every chosen event as JSON to ``url``, in the background, with retries."""

    url: Annotated[str, AfterValidator(_http_url)]
    events: EventNames = Field(default_factory=lambda: list(_control_api.ATTENTION_EVENTS))
    timeout: Seconds = 10.0
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    headers: dict[str, str] = Field(default_factory=dict)


class NotifyCommand(_Section):
    """Run ``argv`` for every chosen event, with the event in its environment."""

    argv: Annotated[list[str], Field(min_length=1)]
    events: EventNames = Field(default_factory=lambda: list(_control_api.ATTENTION_EVENTS))
    timeout: Seconds = 30.0


class Notify(_Section):
    webhooks: list[Webhook] = Field(default_factory=list)
    command: NotifyCommand | None = None
    queue: Annotated[int, Field(ge=1)] = 1000
    """Events waiting per hook before the oldest are dropped (a dead endpoint never blocks)."""


# ---------------------------------------------------------------- end of control and visibility


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
    # --- running as a service: the daemon's log file, attempt-log retention -------------
    # (docs/service.md; applied again on SIGHUP)
    log_file: str | None = None
    log_file_max_bytes: Annotated[int, Field(ge=4096)] = 10_485_760
    log_file_backups: Annotated[int, Field(ge=0)] = 5
    logs_keep_days: Annotated[float, Field(ge=0)] = 30.0
    logs_max_total_bytes: Annotated[int, Field(ge=0)] = 1_073_741_824
    # --- end of the service settings ----------------------------------------------------
    executor: Literal["local", "ray"] = "local"
    """Where attempts run unless a track says otherwise (``track.executor``)."""
    ray: RaySettings = Field(default_factory=RaySettings)
    # -- control and visibility (see the block above) --
    http_allow_remote: bool = False
    http: str | None = None
    """``HOST:PORT`` of the control API and web board on TCP (loopback only by default)."""
    events_max_bytes: Annotated[int, Field(ge=4096)] = 10_485_760
    notify: Notify = Field(default_factory=Notify)

    @field_validator("http")
    @classmethod
    def _check_http(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            allow = bool(info.data.get("http_allow_remote"))
            _control_api.parse_address(value, allow_remote=allow)
        return value

    # -- end of control and visibility --
    roles: dict[str, Role] = Field(default_factory=dict)
    git: Git = Field(default_factory=Git)
    guardrails: Guardrails = Field(default_factory=Guardrails)
    budgets: Budgets = Field(default_factory=Budgets)


PATH_KEYS = frozenset({"tracks", "state_dir", "board_path", "log_file"})
ENV_KEYS: Mapping[str, str] = {
    "TRACKS": "tracks",
    "STATE_DIR": "state_dir",
    "MAX_PARALLEL": "max_parallel",
    "SHUTDOWN_GRACE": "shutdown_grace",
    "KILL_GRACE": "kill_grace",
    "WRITEBACK_DELAY": "writeback_delay",
    "BOARD_PATH": "board_path",
    "HTTP": "http",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "LOG_FILE": "log_file",
    "LOGS_KEEP_DAYS": "logs_keep_days",
    "LOGS_MAX_TOTAL_BYTES": "logs_max_total_bytes",
    "EXECUTOR": "executor",
    "WATCH": "watch",
    "WATCH_QUIET": "watch_quiet",
}


@dataclass(frozen=True, slots=True)
class Source:
    kind: Literal["default", "file", "env", "flag"]
    detail: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.detail}:{self.line}" if self.line else self.detail
        return f"{self.kind} {where}".strip()


@dataclass(frozen=True, slots=True)
class Config:
    """The effective settings, with absolute paths and the source of every setting.

    ``sources`` has every top-level key and every nested one (``defaults.timeout``,
    ``agents.claude.argv``). ``flags`` and ``cwd`` are what it was loaded with, so that it
    can be loaded again (SIGHUP) the same way.
    """

    settings: Settings
    tracks_dir: Path
    state_dir: Path
    config_file: Path | None
    sources: Mapping[str, Source] = field(default_factory=dict)
    flags: Mapping[str, object] = field(default_factory=dict)
    cwd: Path | None = None


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


def _loc_parts(loc: tuple[Any, ...]) -> tuple[str, ...]:
    """A pydantic error location without its union tags (``str``, ``list[str]``)."""
    return tuple(str(p) for p in loc if p != "str" and not str(p).startswith("list["))


def _errors(
    exc: ValidationError, origin: str, text: str, sources: Mapping[str, Source] | None = None
) -> list[str]:
    """One line per error, ``FILE:LINE: key: message``, in file order.

    A value that came from the environment or a flag is named by it instead of the file.
    """
    lines = tomlpos.key_lines(text) if text else {}
    out: list[tuple[int, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        parts = _loc_parts(loc)
        dotted = ".".join(parts)
        key = str(loc[-1]) if loc else ""
        source = (sources or {}).get(parts[0]) if parts else None
        line = None
        if source is not None and source.kind in ("env", "flag"):
            where = source.detail
        else:
            line = tomlpos.line_of(lines, parts) or (_line_of(text, key) if text and key else None)
            where = f"{origin}:{line}" if line else origin
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, _known_keys(Settings, loc), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if len(parts) > 1 and key in Settings.model_fields:
                table = ".".join(p for p in parts[:-1] if not p.isdigit())
                hint = (
                    f"; {key!r} is a top-level setting, and a key written below a [{table}] "
                    f"header belongs to that table: move it above the first [table] header"
                )
            message = f"{where}: {dotted}: unknown setting{hint}"
        else:
            message = f"{where}: {dotted}: {err['msg']} (got {err.get('input')!r})"
        out.append((line or 0, message))
    return [message for _, message in sorted(out, key=lambda item: item[0])]


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """``FILE:LINE:COLUMN: invalid TOML: message`` when tomllib says where."""
    message = str(exc)
    at = _AT.search(message)
    if at is None:
        return f"{path}: invalid TOML: {message}"
    return f"{path}:{at[1]}:{at[2]}: invalid TOML: {message[: at.start()]}"


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
    check_agents: bool = True,
) -> Config:
    """Build the effective configuration; raise :class:`ConfigError` naming every problem.

    ``check_agents=False`` leaves :func:`agent_problems` to the caller (``config check``
    lists them with everything else).
    """
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path = find_config_file(config_file, env, cwd)
    raw: dict[str, Any] = {}
    text = ""
    sources: dict[str, Source] = {}
    origin = str(path) if path else "<defaults>"
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        text = path.read_text(encoding="utf-8")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(_toml_error(path, exc)) from None
        lines = tomlpos.key_lines(text)
        base = path.parent
        for key, value in list(raw.items()):
            if key in PATH_KEYS and isinstance(value, str):
                raw[key] = str((base / value).resolve()) if value else value
            sources[key] = Source("file", str(path), lines.get((key,)))
    in_file = dict(raw)
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
        raise ConfigError("\n".join(_errors(exc, origin, text, sources))) from None
    if check_agents and (problems := agent_problems(settings)):
        raise ConfigError(
            "\n".join(f"{origin}{_at(lines, key)}: {key}: {message}" for key, message in problems)
        )
    for key in Settings.model_fields:
        sources.setdefault(key, Source("default"))
    for parts, _ in setting_items(settings):
        dotted = ".".join(parts)
        if dotted not in sources:
            found = path is not None and _present(in_file, parts)
            sources[dotted] = (
                Source("file", str(path), tomlpos.line_of(lines, parts))
                if found
                else Source("default")
            )
    tracks_dir = (cwd / settings.tracks).resolve()
    state_dir = (
        (cwd / settings.state_dir).resolve()
        if settings.state_dir
        else default_state_dir(tracks_dir, env)
    )
    return Config(settings, tracks_dir, state_dir, path, sources, dict(flags), cwd)


def reload(cfg: Config, env: Mapping[str, str] | None = None) -> Config:
    """Load ``cfg`` again from the same file, flags and working directory (for SIGHUP)."""
    explicit = str(cfg.config_file) if cfg.config_file is not None else None
    return load(config_file=explicit, flags=cfg.flags, env=env, cwd=cfg.cwd)


def setting_items(settings: Settings) -> list[tuple[tuple[str, ...], object]]:
    """Every setting as (path, value), sections and agent profiles unfolded, in schema order."""
    out: list[tuple[tuple[str, ...], object]] = []

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, (*prefix, name))
            elif name == "agents" and not prefix and value:
                for agent, profile in value.items():
                    walk(profile, (*prefix, name, agent))
            else:
                out.append(((*prefix, name), value))

    walk(settings, ())
    return out


def _present(raw: Mapping[str, Any], parts: tuple[str, ...]) -> bool:
    current: Any = raw
    for part in parts:
        if not isinstance(current, Mapping) or part not in current:
            return False
        current = current[part]
    return True
