"""``orchestratord config show`` and ``config check``: the effective settings, and a checked file.

``show`` prints every setting, nested ones unfolded (``defaults.timeout``,
``agents.claude.argv``), with its effective value and where it came from: the config file
(with its line), an ``ORCHESTRATORD_*`` variable, a flag, or the default. The text form is
TOML, so it can be pasted into a config file; ``--json`` gives the same as data.

``check`` loads a config file the way the daemon would and prints every problem as
``FILE:LINE: key: message``: TOML syntax, unknown settings (with the closest valid name),
wrong types and ranges, and what only shows at run time: an agent profile that names a
command not on ``PATH``, a default agent with no profile, a prompt template that is missing.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click
import orjson

from . import config
from .cli import _common_options, _reports_errors, _settings, _split_common
from .config import AGENT_KINDS, CONFIG_CANDIDATES, Config, Source, agent_problems
from .errors import ConfigError

group: click.Group = click.Group(
    "config", help="Show the effective settings, or check a config file."
)


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    value: object
    source: Source


def rows(cfg: Config) -> list[Row]:
    """Every setting with its effective value (paths absolute) and its source."""
    out: list[Row] = []
    paths = {"tracks": str(cfg.tracks_dir), "state_dir": str(cfg.state_dir)}
    for parts, value in config.setting_items(cfg.settings):
        key = ".".join(parts)
        shown = paths.get(key, value)
        out.append(Row(key, shown, cfg.sources.get(key, Source("default"))))
    return out


def toml_value(value: object) -> str:
    """A value as TOML (``None`` has no TOML spelling: callers comment it out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return orjson.dumps(str(value)).decode()


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return orjson.dumps(key).decode()


def display(path: str | Path) -> str:
    """A path relative to the working directory when it is inside it, else as it is."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _source(source: Source) -> str:
    if source.kind == "file":
        where = display(source.detail)
        return f"file {where}:{source.line}" if source.line else f"file {where}"
    return str(source)


def _describe(row: Row) -> str:
    source = _source(row.source)
    if row.key == "state_dir" and row.source.kind == "default":
        source += " (the platform's state directory)"
    return source


@group.command()
@click.option("--json", "as_json", is_flag=True, help="Print the settings as a JSON document.")
@_common_options
@click.pass_context
@_reports_errors
def show(ctx: click.Context, /, as_json: bool, **kwargs: Any) -> None:
    """Print the effective settings and where each came from (file, env, flag, default)."""
    cfg = _settings(ctx, _split_common(kwargs))
    table = rows(cfg)
    if as_json:
        doc = {
            "config_file": str(cfg.config_file) if cfg.config_file else None,
            "settings": [
                {
                    "key": row.key,
                    "value": row.value,
                    "source": row.source.kind,
                    "detail": row.source.detail or None,
                    "line": row.source.line,
                }
                for row in table
            ],
        }
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    where = display(cfg.config_file) if cfg.config_file else "none (the defaults apply)"
    click.echo(f"# config file: {where}")
    lines: list[tuple[str, str]] = []
    for row in table:
        key = ".".join(_toml_key(part) for part in row.key.split("."))
        if row.value is None:
            lines.append((f"# {key} is not set", _describe(row)))
        else:
            lines.append((f"{key} = {toml_value(row.value)}", _describe(row)))
    width = min(max(len(text) for text, _ in lines), 56)
    for text, source in lines:
        click.echo(f"{text.ljust(width)}  # {source}")


Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    key: str
    message: str
    severity: Severity = "error"


def lint(cfg: Config) -> list[Finding]:
    """What a valid config still gets wrong, found before the daemon runs into it."""
    settings = cfg.settings
    found: list[Finding] = []
    agents = settings.agents
    known = [*agents, *(k for k in AGENT_KINDS if k != "generic" and k not in agents)]
    default_agent = settings.defaults.agent
    if default_agent is not None and default_agent not in known:
        close = difflib.get_close_matches(default_agent, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; define [agents.{default_agent}]"
        found.append(Finding("defaults.agent", f"no agent profile {default_agent!r}{hint}"))
    found += [Finding(key, message) for key, message in agent_problems(settings)]
    for name, profile in agents.items():
        key = f"agents.{name}.argv"
        if not profile.argv:
            continue  # a built-in kind's command, or reported by agent_problems
        program = profile.argv[0]
        if shutil.which(program) is None and not Path(program).is_file():
            found.append(
                Finding(key, f"{program!r} is not on PATH (nor a file): install it", "warning")
            )
        if profile.prompt_via == "argv" and not any("{prompt}" in a for a in profile.argv):
            found.append(
                Finding(
                    key,
                    "no argument holds {prompt}: the agent is never given the prompt "
                    '(add "{prompt}" or set prompt_via = "stdin")',
                    "warning",
                )
            )
    template = settings.defaults.prompt_template
    if template and not ((cfg.cwd or Path.cwd()) / template).is_file():
        found.append(Finding("defaults.prompt_template", f"{template}: file not found"))
    if not cfg.tracks_dir.is_dir():
        found.append(Finding("tracks", f"{cfg.tracks_dir}: no such directory (yet)", "warning"))
    return found


def _render(cfg: Config, finding: Finding) -> str:
    source = cfg.sources.get(finding.key) or cfg.sources.get(finding.key.split(".")[0])
    if source is not None and source.kind == "file":
        where = display(source.detail) + (f":{source.line}" if source.line else "")
    elif source is not None and source.kind in ("env", "flag"):
        where = source.detail
    else:
        where = display(cfg.config_file) if cfg.config_file else "<defaults>"
    prefix = "warning: " if finding.severity == "warning" else ""
    return f"{where}: {finding.key}: {prefix}{finding.message}"


def _line(cfg: Config, finding: Finding) -> float:
    """Where a finding's setting is in the config file, for file order (others last)."""
    source = cfg.sources.get(finding.key) or cfg.sources.get(finding.key.split(".")[0])
    return source.line if source is not None and source.line else float("inf")


def _relative_origin(line: str) -> str:
    """``/abs/dir/cfg.toml:3: ...`` -> ``dir/cfg.toml:3: ...`` under the working directory."""
    head, sep, rest = line.partition(":")
    return display(head) + sep + rest if head.startswith("/") else line


@group.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
@_common_options
@click.pass_context
@_reports_errors
def check(ctx: click.Context, /, file: Path | None, **kwargs: Any) -> None:
    """Check a config file (default: the one the daemon would use) and print every problem.

    Problems are printed as FILE:LINE: key: message; the environment's ORCHESTRATORD_*
    variables are checked with it. Exit status 0 when there is no error (warnings allowed),
    1 otherwise.
    """
    common = _split_common(kwargs)
    if file is not None:
        common["config_file"] = str(file)
    try:
        cfg = _settings(ctx, common, check_agents=False)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        for line in lines:
            click.echo(_relative_origin(line))
        click.echo(f"{file or 'config'}: {len(lines)} error(s)", err=True)
        sys.exit(1)
    findings = sorted(lint(cfg), key=lambda f: _line(cfg, f))
    for finding in findings:
        click.echo(_render(cfg, finding))
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if cfg.config_file is None:
        looked = " or ".join(f"./{c}" for c in CONFIG_CANDIDATES)
        click.echo(f"no config file ({looked}): the defaults apply", err=True)
    name = display(cfg.config_file) if cfg.config_file else "defaults"
    click.echo(f"{name}: {errors} error(s), {warnings} warning(s)", err=True)
    sys.exit(1 if errors else 0)
