"""``orchestratord service install|uninstall|status``: the daemon as a systemd or launchd service.

``install`` writes the unit (systemd, the default on Linux) or the plist (launchd, the default
on macOS) that ``service`` makes for the effective config, prints it, and prints the exact
commands that enable and start it; it does not start anything itself. ``uninstall`` stops and
disables the service through the service manager, then removes the file. ``status`` says
whether the file is installed and current, asks the service manager, and says whether a
daemon holds the state directory. ``--dry-run`` prints what would be written or run.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from . import lock
from .cli import _common_options, _reports_errors, _settings, _split_common
from .config import ENV_PREFIX
from .errors import OrchestratorError
from .queuefile import write_atomic
from .service import (
    DEFAULT_WATCHDOG,
    SECRETS,
    Instructions,
    Manager,
    Scope,
    ServiceSpec,
    command_line,
    default_manager,
    instructions,
    render,
    spec_for,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_NOT_RUNNING = 3
EXIT_NOT_INSTALLED = 4
COMMAND_TIMEOUT = 60


def _target_options(func: F) -> F:
    options = [
        click.option("--user", "scope", flag_value="user", help="A service of your account."),
        click.option(
            "--system", "scope", flag_value="system", help="A system service (needs root)."
        ),
        click.option("--systemd", "manager", flag_value="systemd", help="Default on Linux."),
        click.option("--launchd", "manager", flag_value="launchd", help="Default on macOS."),
        click.option(
            "--name",
            default="orchestratord",
            show_default=True,
            help="Unit or launchd label; give each project its own.",
        ),
        click.option(
            "--run-as",
            metavar="USER",
            help="--system: the account it runs as (default: the one that ran sudo).",
        ),
        click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


service: click.Group = click.Group(
    "service", help="Run the daemon as a systemd service (Linux) or a launchd agent (macOS)."
)


def _spec(
    ctx: click.Context, kwargs: dict[str, Any], watchdog: int = DEFAULT_WATCHDOG
) -> tuple[ServiceSpec, Path]:
    """The service that the options (``_target_options`` but ``--dry-run``, the common ones) say."""
    cfg = _settings(ctx, _split_common(kwargs))
    scope: str | None = kwargs.pop("scope")
    manager: str | None = kwargs.pop("manager")
    name: str = kwargs.pop("name")
    run_as: str | None = kwargs.pop("run_as")
    root = os.geteuid() == 0
    chosen_scope: Scope = "system" if scope == "system" or (scope is None and root) else "user"
    chosen: Manager = (
        manager if manager in ("systemd", "launchd") else default_manager(sys.platform)  # type: ignore[assignment]
    )
    user = run_as or os.environ.get("SUDO_USER") or getpass.getuser()
    spec = spec_for(
        cfg,
        manager=chosen,
        scope=chosen_scope,
        name=name,
        python=sys.executable,
        cwd=os.getcwd(),
        env=os.environ,
        home=str(Path.home()),
        uid=os.getuid(),
        user=user,
        watchdog=watchdog,
    )
    return spec, cfg.state_dir


def _run(argv: tuple[str, ...], dry_run: bool) -> tuple[int, str]:
    """Run a service-manager command; its exit status and output (never raises)."""
    click.echo(f"{'would run' if dry_run else 'running'}: {command_line(argv)}")
    if dry_run:
        return 0, ""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {COMMAND_TIMEOUT} s"
    return done.returncode, (done.stdout + done.stderr).strip()


def _run_each(commands: tuple[tuple[str, ...], ...], dry_run: bool) -> None:
    """Run each command in turn; a failure is shown (its first line) and does not stop them."""
    for argv in commands:
        code, output = _run(argv, dry_run)
        if code:
            click.echo(f"  exit status {code}: {output.splitlines()[0] if output else ''}")


def _print_instructions(spec: ServiceSpec, steps: Instructions) -> None:
    verb = "run" if spec.scope == "user" else "run as root"
    when = "at login" if spec.scope == "user" else "at boot"
    click.echo(f"\nTo enable it (start it now and {when}), {verb}:")
    for argv in steps.enable:
        click.echo(f"  {command_line(argv)}")
    for note in steps.notes:
        click.echo(f"\n{note}")
    click.echo("\nThen:")
    systemd = spec.manager == "systemd"
    width = max(len(command_line(a)) for a in (steps.status, steps.logs, steps.reload))
    for argv, what in (
        (steps.status, "its state" + (", with the daemon's status line" if systemd else "")),
        (steps.logs, "its log"),
        (steps.reload, "reload the config and every queue file (SIGHUP)"),
    ):
        click.echo(f"  {command_line(argv).ljust(width)}  # {what}")


def _write(path: Path, content: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, content.decode())
    except PermissionError:
        raise OrchestratorError(
            f"{path}: permission denied; a --system service is installed as root "
            "(sudo), or install a --user service"
        ) from None


@service.command()
@_target_options
@click.option(
    "--watchdog-sec",
    type=click.IntRange(min=0),
    default=DEFAULT_WATCHDOG,
    show_default=True,
    help="systemd restarts the daemon when its event loop stalls this long (0: off).",
)
@_common_options
@click.pass_context
@_reports_errors
def install(ctx: click.Context, /, dry_run: bool, watchdog_sec: int, **kwargs: Any) -> None:
    """Write the systemd unit or launchd plist and print how to enable and start it."""
    spec, state_dir = _spec(ctx, kwargs, watchdog=watchdog_sec)
    tracks = Path(spec.argv[spec.argv.index("--tracks") + 1])
    if not tracks.is_dir():
        raise OrchestratorError(
            f"{tracks}: tracks directory not found; pass --tracks DIR (the service would not start)"
        )
    content = render(spec)
    path = Path(spec.file)
    current = path.read_bytes() if path.is_file() else None
    if dry_run:
        click.echo(f"would write {path}:")
    elif current == content:
        click.echo(f"{path} is up to date:")
    else:
        _write(path, content)
        if spec.log_file:
            with contextlib.suppress(OSError):
                Path(spec.log_file).parent.mkdir(parents=True, exist_ok=True)
        click.echo(f"{'replaced' if current is not None else 'wrote'} {path}:")
    click.echo("")
    click.echo(content.decode(), nl=False)
    for secret in SECRETS:
        if ENV_PREFIX + secret in os.environ:
            click.echo(
                f"\nnote: {ENV_PREFIX + secret} is not written into the service file (others can"
                " read it): use ray.token_file, or a drop-in with EnvironmentFile="
            )
    if spec.scope == "system" and spec.user == "root":
        click.echo("\nwarning: it runs as root, and so do the agents; pass --run-as USER")
    if spec.scope == "system" and os.environ.get("SUDO_USER"):
        click.echo(
            "\nnote: PATH is sudo's; to capture your own, run "
            '`sudo env "PATH=$PATH" orchestratord service install --system ...`'
            f"\nnote: the state directory is {state_dir}; pass --state-dir to choose it"
        )
    _print_instructions(spec, instructions(spec))


@service.command()
@_target_options
@_common_options
@click.pass_context
@_reports_errors
def uninstall(ctx: click.Context, /, dry_run: bool, **kwargs: Any) -> None:
    """Stop and disable the service, then remove its file."""
    spec, _ = _spec(ctx, kwargs)
    path = Path(spec.file)
    if not path.exists():
        click.echo(f"{path}: not installed; nothing to do")
        return
    steps = instructions(spec)
    _run_each(steps.disable, dry_run)
    if dry_run:
        click.echo(f"would remove {path}")
    else:
        try:
            path.unlink()
        except PermissionError:
            raise OrchestratorError(f"{path}: permission denied; run it as root (sudo)") from None
        click.echo(f"removed {path}")
    _run_each(steps.after_removal, dry_run)


@service.command(name="status")
@_target_options
@_common_options
@click.pass_context
@_reports_errors
def status_cmd(ctx: click.Context, /, dry_run: bool, **kwargs: Any) -> None:
    """Is the service installed and current, what the service manager says, is it running.

    Exit status 0 when a daemon holds the state directory, 3 when the service is installed
    but no daemon runs, 4 when it is not installed (and no daemon runs).
    """
    spec, state_dir = _spec(ctx, kwargs)
    path = Path(spec.file)
    installed = path.is_file()
    if not installed:
        click.echo(f"service file: {path}: not installed (`orchestratord service install`)")
    else:  # compared with what install would write with the watchdog it was given
        content = path.read_bytes()
        spec = replace(spec, watchdog=_installed_watchdog(content.decode(errors="replace")))
        if content == render(spec):
            click.echo(f"service file: {path}: installed, up to date")
        else:
            click.echo(
                f"service file: {path}: installed, but not what `service install` would write "
                "now (other paths, graces or PATH): install it again"
            )
    if installed:
        _, output = _run(instructions(spec).status, dry_run)
        for line in output.splitlines():
            click.echo(f"  {line}")
    pid = lock.holder(state_dir)
    if pid:
        who = f"pid {pid}" if pid > 0 else "a process"
        click.echo(f"daemon: running ({who}), state directory {state_dir}")
        return
    click.echo(f"daemon: not running (state directory {state_dir})")
    sys.exit(EXIT_NOT_RUNNING if installed else EXIT_NOT_INSTALLED)


def _installed_watchdog(text: str) -> int:
    """The ``--watchdog-sec`` a unit was installed with (0: none; a plist has none)."""
    found = re.search(r"^WatchdogSec=(\d+)$", text, re.MULTILINE)
    return int(found[1]) if found else 0
