"""``orchestratord prompt REF``: the prompt a task would get now, printed (no daemon needed).

The same profile choice, role paragraph, template and git note as the daemon's; the attempt
number and the previous failure come from the state directory when there is one.
"""

from __future__ import annotations

from typing import Any

import click

from . import agents, workspace
from .attempt import command_text
from .cli import _common_options, _reports_errors, _settings, _split_common, cli
from .clock import SystemClock
from .config import Config
from .daemon import Track, safe_name
from .errors import OrchestratorError
from .model import TaskKey
from .refs import key_of
from .states import TaskState
from .store import Store
from .worktrees import Trees

__all__ = ["prompt", "prompt_text"]


def _attempt_and_failure(cfg: Config, key: TaskKey, state: TaskState) -> tuple[int, str]:
    """The next attempt's iteration and the failure output it would be told."""
    if (cfg.state_dir / "state.db").is_file():
        store = Store.open(cfg.state_dir, SystemClock())
        try:
            state = store.task(key) or state
        finally:
            store.close()
    failure = ""
    if state.iteration > 0:
        path = cfg.state_dir / "logs" / key.track / f"{safe_name(key.id)}.last-failure.txt"
        try:
            failure = path.read_text(encoding="utf-8")
        except OSError:
            failure = ""
    return state.iteration + 1, failure


def prompt_text(cfg: Config, ref: str) -> str:
    ws = workspace.load([cfg.tracks_dir])
    key = key_of(ref, ws.ref_index())
    task = ws.tasks()[key]
    paths = {qf.display: qf.path for qf in ws.files}
    tracks = {t.name: Track(t, paths[t.path].resolve()) for t in ws.tracks if t.path in paths}
    track = tracks[key.track]
    if task.command is not None:
        raise OrchestratorError(
            f"{key} runs a command, not an agent, and gets no prompt: {command_text(task.command)}"
        )
    choice = agents.choose(task, track.definition.settings, cfg.settings)
    if choice.manual:
        raise OrchestratorError(
            f"{key}: agent {choice.requested!r} marks a task for a person; it gets no prompt"
        )
    if choice.profile is None:
        raise OrchestratorError(f"{key}: {choice.error}")
    budget = (
        task.max_iterations
        or track.definition.settings.max_iterations
        or cfg.settings.defaults.max_iterations
    )
    iteration, failure = _attempt_and_failure(cfg, key, TaskState.imported(task.owned))
    planned = Trees(cfg).planned(
        key.track, track.workdir, {name: t.workdir for name, t in tracks.items()}
    )
    note = agents.workspace_note(*planned) if planned else ""
    return agents.prompt_for(
        task,
        choice,
        cfg.settings,
        attempt=iteration,
        max_iterations=budget,
        failure=failure,
        workspace=note,
    )


@cli.command(name="prompt")
@click.argument("ref")
@_common_options
@click.pass_context
@_reports_errors
def prompt(ctx: click.Context, /, ref: str, **kwargs: Any) -> None:
    """Print the prompt the task REF (ID or track:ID) would get on its next attempt."""
    cfg = _settings(ctx, _split_common(kwargs))
    if not cfg.tracks_dir.is_dir():
        raise OrchestratorError(
            f"{cfg.tracks_dir}: tracks directory not found; pass --tracks DIR or set "
            "ORCHESTRATORD_TRACKS"
        )
    text = prompt_text(cfg, ref)
    click.echo(text, nl=not text.endswith("\n"))
