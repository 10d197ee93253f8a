"""Agent profiles: how each agent CLI is run, and which profile a task gets.

Built-in profiles run the common headless agent CLIs:

* ``claude``: ``claude -p PROMPT --output-format stream-json --verbose`` (``--model``,
  ``--permission-mode``, default ``acceptEdits``; ``--dangerously-skip-permissions`` only with
  ``skip_permissions = true``); its structured output gives the final text, tokens and cost.
* ``codex``: ``codex exec`` (``--model``, ``--sandbox``, default ``workspace-write``;
  ``--dangerously-bypass-approvals-and-sandbox`` only with ``skip_permissions``) PROMPT.
* ``aider``: ``aider --message PROMPT --yes-always --no-auto-commits`` (``--model``).
* ``gemini``: ``gemini -p PROMPT`` (``--model``, ``--approval-mode``, default ``auto_edit``;
  ``yolo`` only with ``skip_permissions``).

``[agents.NAME]`` in the config changes a built-in profile (only the fields it sets) or defines
a new one: ``kind`` (one of the above, or ``generic``) or a full ``argv``.

A task's ``agent`` (else its track's, else ``defaults.agent``) names a profile, or a *role*:
the old queue files' ``FeatureBuilder``, ``bugfix``, ``TestWriter``, ``codequality``, ... map
(letter case, ``-`` and ``_`` ignored) to the default profile, with a paragraph about the role
in the prompt; ``manual`` marks a task for a person. ``[roles.NAME]`` changes or adds roles.

Pure: settings and a task in, a choice out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import AGENT_KINDS, Agent, Role, Settings
from .model import TaskDef, TrackSettings
from .prompt import DEFAULT_TEMPLATE, PromptInput, build

_DEFAULT_MODES = {"claude": "acceptEdits", "codex": "workspace-write", "gemini": "auto_edit"}

BUILTIN_ROLES: Mapping[str, Role] = {
    "featurebuilder": Role(
        prompt=(
            "Your role: feature builder. Implement the feature below completely, with tests "
            "that show it works. Keep the change focused on this task."
        )
    ),
    "bugfix": Role(
        prompt=(
            "Your role: bug fixer. Find the root cause of the problem below and fix it with the "
            "smallest correct change; add a test that fails without the fix."
        )
    ),
    "testwriter": Role(
        prompt=(
            "Your role: test writer. Write tests for the behaviour below. Change production "
            "code only where a test exposes a real bug, and never weaken or skip a test."
        )
    ),
    "codequality": Role(
        prompt=(
            "Your role: code quality. Improve the code below (structure, naming, duplication, "
            "types) without changing its behaviour; every existing test must keep passing."
        )
    ),
    "refactor": Role(
        prompt=(
            "Your role: refactoring. Restructure the code below without changing its "
            "behaviour; every existing test must keep passing."
        )
    ),
    "docwriter": Role(
        prompt=(
            "Your role: documentation writer. Document the subject below accurately, with "
            "examples that work."
        )
    ),
    "manual": Role(manual=True),
}


def role_key(name: str) -> str:
    """Role names compare without letter case, ``-``, ``_`` or spaces."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True, slots=True)
class Profile:
    """An agent profile ready to run."""

    name: str
    kind: str
    argv: tuple[str, ...]
    """With ``{prompt}`` where the prompt goes (unless it goes on stdin)."""
    prompt_via: str
    output: str
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    usage_limit_patterns: tuple[str, ...] = ()
    usage_limit_wait: float = 1800.0

    def command(self, prompt: str) -> tuple[str, ...]:
        if self.prompt_via == "stdin":
            return self.argv
        return tuple(arg.replace("{prompt}", prompt) for arg in self.argv)


def _builtin_argv(kind: str, agent: Agent) -> list[str]:
    binary = agent.binary or kind
    mode = (
        agent.permission_mode
        if "permission_mode" in agent.model_fields_set
        else _DEFAULT_MODES.get(kind)
    )
    stdin = agent.prompt_via == "stdin"
    model = ["--model", agent.model] if agent.model else []
    if kind == "claude":
        argv = [binary, "-p", *([] if stdin else ["{prompt}"])]
        argv += ["--output-format", "stream-json", "--verbose", *model]
        if agent.skip_permissions:
            argv.append("--dangerously-skip-permissions")
        elif mode:
            argv += ["--permission-mode", mode]
        return argv
    if kind == "codex":
        argv = [binary, "exec", *model]
        if agent.skip_permissions:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        elif mode:
            argv += ["--sandbox", mode]
        return [*argv, *agent.args, "-" if stdin else "{prompt}"]
    if kind == "aider":
        message = ["--message-file", "/dev/stdin"] if stdin else ["--message", "{prompt}"]
        return [binary, *message, "--yes-always", "--no-auto-commits", *model]
    if kind == "gemini":
        argv = [binary, "-p", "" if stdin else "{prompt}", *model]
        if agent.skip_permissions:
            argv += ["--approval-mode", "yolo"]
        elif mode:
            argv += ["--approval-mode", mode]
        return argv
    raise ValueError(f"no built-in command for agent kind {kind!r}")


def _merged(name: str, configured: Agent | None) -> Agent:
    """A built-in profile with the fields the config sets for it."""
    base = Agent.model_validate({"kind": name})
    if configured is None:
        return base
    return base.model_copy(update={k: getattr(configured, k) for k in configured.model_fields_set})


def profile(name: str, settings: Settings) -> Profile | None:
    """The profile called ``name``: configured, built in, or both; None when there is none."""
    configured = settings.agents.get(name)
    if name in AGENT_KINDS[:-1]:
        agent = _merged(name, configured)
    elif configured is not None:
        agent = configured
    else:
        return None
    kind = agent.kind or ("generic" if agent.argv is not None else name)
    if agent.argv is not None:
        argv = list(agent.argv)
    elif kind in AGENT_KINDS[:-1]:
        argv = _builtin_argv(kind, agent)
        if kind != "codex":
            argv += agent.args
    else:
        return None  # refused by the config check already
    output = agent.output or ("claude-json" if kind == "claude" else "text")
    return Profile(
        name=name,
        kind=kind,
        argv=tuple(argv),
        prompt_via=agent.prompt_via,
        output=output,
        env=dict(agent.env),
        timeout=agent.timeout,
        usage_limit_patterns=tuple(agent.usage_limit_patterns),
        usage_limit_wait=agent.usage_limit_wait,
    )


def roles(settings: Settings) -> dict[str, Role]:
    out = dict(BUILTIN_ROLES)
    for name, role in settings.roles.items():
        key = role_key(name)
        base = out.get(key)
        out[key] = (
            role
            if base is None
            else base.model_copy(update={k: getattr(role, k) for k in role.model_fields_set})
        )
    return out


@dataclass(frozen=True, slots=True)
class Choice:
    """Which profile runs a task, and why."""

    requested: str | None
    """The name as written (task, track or ``defaults.agent``)."""
    source: str
    profile: Profile | None = None
    role: str | None = None
    role_text: str = ""
    manual: bool = False
    error: str | None = None

    def describe(self) -> str:
        if self.manual:
            return f"agent {self.requested!r} (from the {self.source}) marks a task for a person"
        if self.profile is None:
            return f"no agent: {self.error}"
        what = f"agent profile {self.profile.name!r} ({self.profile.kind})"
        if self.role is not None:
            return f"{what} for role {self.requested!r} (from the {self.source})"
        return f"{what} (from the {self.source})"


def requested(task: TaskDef, track: TrackSettings, settings: Settings) -> tuple[str | None, str]:
    if task.agent is not None:
        return task.agent, "task"
    if track.agent is not None:
        return track.agent, "track"
    return settings.defaults.agent, "config's defaults.agent"


def choose(task: TaskDef, track: TrackSettings, settings: Settings) -> Choice:
    """The profile (and role) a task's agent name stands for, or the reason there is none."""
    name, source = requested(task, track, settings)
    if not name:
        return Choice(
            name,
            source,
            error=(
                "the task has no `command` and no agent is configured: set `agent` on the task "
                "or its track, or `defaults.agent` in the config"
            ),
        )
    found = profile(name, settings)
    if found is not None:
        return Choice(name, source, profile=found)
    known_roles = roles(settings)
    role = known_roles.get(role_key(name))
    if role is None:
        profiles = ", ".join(sorted({*settings.agents, *AGENT_KINDS[:-1]}))
        return Choice(
            name,
            source,
            error=(
                f"unknown agent {name!r}: define [agents.{name}] in the config, or map it to a "
                f"role with [roles.{name}] (profiles: {profiles}; roles: "
                f"{', '.join(sorted(known_roles))})"
            ),
        )
    key = role_key(name)
    if role.manual:
        return Choice(name, source, role=key, manual=True)
    target = role.agent or settings.defaults.agent
    if not target:
        return Choice(
            name,
            source,
            role=key,
            error=(
                f"agent {name!r} is a role: it runs the default agent profile, and none is set; "
                'set defaults.agent in the config (e.g. "claude"), or agent on [roles.'
                f"{key}]"
            ),
        )
    found = profile(target, settings)
    if found is None:
        return Choice(
            name, source, role=key, error=f"role {name!r} runs agent {target!r}, which is unknown"
        )
    return Choice(name, source, profile=found, role=key, role_text=role.prompt)


def workspace_note(branch: str | None, own: bool) -> str:
    """What the prompt says about the git tree the agent works in."""
    if branch is None and not own:
        return ""
    where = f"on branch {branch}" if branch else "in a git working tree"
    return (
        f"You are working in a git working tree {where}. Do not commit, push or switch "
        "branches: once verification passes, orchestratord commits exactly your changes."
    )


def template(settings: Settings) -> str:
    path = settings.defaults.prompt_template
    if not path:
        return DEFAULT_TEMPLATE
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def prompt_for(
    task: TaskDef,
    choice: Choice,
    settings: Settings,
    *,
    attempt: int,
    max_iterations: int,
    failure: str = "",
    workspace: str = "",
) -> str:
    """The prompt of one attempt (the daemon's and ``orchestratord prompt``'s)."""
    data = PromptInput(
        task, attempt, max_iterations, failure, role=choice.role_text, workspace=workspace
    )
    return build(data, template(settings))
