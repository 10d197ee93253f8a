"""The ``orchestratord`` command line.

Every command accepts ``--config``, ``--tracks`` and ``--state-dir`` before or after its name.
Exit statuses: 0 success, 1 problems found (or the operation failed), 2 usage errors.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from . import __version__, config, diagram, workspace
from .control import commands as control_commands
from .errors import OrchestratorError

F = TypeVar("F", bound=Callable[..., Any])

COMMON_KEYS = ("config_file", "tracks", "state_dir")


def _common_options(func: F) -> F:
    """Add ``--config``, ``--tracks`` and ``--state-dir`` to a command or the group."""
    options = [
        click.option(
            "--config",
            "config_file",
            metavar="FILE",
            help="Config file (default: ./config/orchestratord.toml). Env: ORCHESTRATORD_CONFIG.",
        ),
        click.option(
            "--tracks",
            metavar="DIR",
            help="Directory of queue files (default: ./tracks). Env: ORCHESTRATORD_TRACKS.",
        ),
        click.option(
            "--state-dir",
            metavar="DIR",
            help="The daemon's own data (database, logs, socket). Env: ORCHESTRATORD_STATE_DIR.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(
    ctx: click.Context, /, local: dict[str, Any], *, check_agents: bool = True
) -> config.Config:
    """Effective config: a command's own flags win over the same flags given before it."""
    merged = dict(ctx.find_root().params)
    merged.update({k: v for k, v in local.items() if v is not None})
    flags = {k: v for k, v in merged.items() if k != "config_file"}
    return config.load(
        config_file=merged.get("config_file"), flags=flags, check_agents=check_agents
    )


def _reports_errors(func: F) -> F:
    """Turn :class:`OrchestratorError` into a message on stderr and its exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OrchestratorError as exc:
            click.echo(f"orchestratord: {exc}", err=True)
            sys.exit(exc.exit_code)

    return cast(F, wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_common_options
@click.version_option(__version__, prog_name="orchestratord")
def cli(config_file: str | None, tracks: str | None, state_dir: str | None) -> None:
    """Run work queues of AI-agent coding tasks in parallel tracks."""


def _split_common(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in COMMON_KEYS}


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@_common_options
@click.pass_context
@_reports_errors
def validate(ctx: click.Context, /, paths: tuple[Path, ...], **kwargs: Any) -> None:
    """Check queue files together and print every problem as FILE: JSON.PATH: message.

    PATHS are files or directories (default: the configured tracks directory). Exit status 0
    when all is well (warnings allowed), 1 on problems, 2 on usage errors.
    """
    cfg = _settings(ctx, _split_common(kwargs))
    targets = list(paths) or [cfg.tracks_dir]
    ws = workspace.load(targets)
    for problem in ws.problems:
        click.echo(problem.render())
    errors, warnings = len(ws.report.errors), len(ws.report.warnings)
    tasks = sum(len(t.tasks) for t in ws.tracks)
    summary = (
        f"{len(ws.files)} file(s), {len(ws.tracks)} track(s), {tasks} task(s): "
        f"{errors} error(s), {warnings} warning(s)"
    )
    click.echo(summary, err=True)
    sys.exit(1 if errors else 0)


def _load(ctx: click.Context, /, kwargs: dict[str, Any]) -> workspace.Workspace:
    cfg = _settings(ctx, _split_common(kwargs))
    if not cfg.tracks_dir.is_dir():
        raise OrchestratorError(
            f"{cfg.tracks_dir}: tracks directory not found; pass --tracks DIR or set "
            "ORCHESTRATORD_TRACKS"
        )
    return workspace.load([cfg.tracks_dir])


def _echo_problems(ws: workspace.Workspace) -> None:
    for problem in ws.problems:
        click.echo(problem.render(), err=True)


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
@_common_options
@click.pass_context
@_reports_errors
def graph(ctx: click.Context, /, fmt: diagram.Format, **kwargs: Any) -> None:
    """Draw the dependency graph across tracks, with cross-track edges and triggers."""
    ws = _load(ctx, kwargs)
    _echo_problems(ws)
    click.echo(diagram.render(ws.graph(), fmt), nl=False)


@cli.command()
@click.option("--max-parallel", type=click.IntRange(min=1), help="Attempts running at once.")
@click.option("--once", is_flag=True, help="Exit when no task can run any more.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress table (default: on when stdout is a terminal).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]))
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="Serve the control API and the web board on TCP too (loopback). Env: ORCHESTRATORD_HTTP.",
)
@click.option(
    "--http-allow-remote",
    is_flag=True,
    default=None,
    help="Accept a --http address beyond loopback (every request then needs the token).",
)
@_common_options
@click.pass_context
@_reports_errors
def start(
    ctx: click.Context,
    /,
    max_parallel: int | None,
    once: bool,
    progress: bool | None,
    log_level: str | None,
    log_format: str | None,
    http: str | None,
    http_allow_remote: bool | None,
    **kwargs: Any,
) -> None:
    """Run every track in the foreground until stopped (SIGTERM or Ctrl-C stop gracefully).

    With --once, exit when no task can run any more: status 0 when every task is complete or
    skipped, 1 otherwise.
    """
    common = _split_common(kwargs)
    common.update(max_parallel=max_parallel, log_level=log_level, log_format=log_format)
    common.update(http=http, http_allow_remote=http_allow_remote)
    cfg = _settings(ctx, common)
    if not cfg.tracks_dir.is_dir():
        raise OrchestratorError(
            f"{cfg.tracks_dir}: tracks directory not found; pass --tracks DIR or set "
            "ORCHESTRATORD_TRACKS"
        )
    # Only `start` needs the daemon's machinery: the other commands start faster without it.
    from . import logs, supervisor  # noqa: PLC0415

    logs.configure_from(cfg.settings)
    sys.exit(supervisor.run(cfg, once=once, progress=progress))


# Command groups that live in their own modules (they import the helpers above).
from . import configcmd, servicecmd  # noqa: E402

cli.add_command(configcmd.group)
cli.add_command(servicecmd.service)
control_commands.register(cli, _common_options, _settings)


def main() -> None:
    cli(prog_name="orchestratord")


from . import promptcmd  # noqa: E402, F401  (registers the `prompt` command)
