"""The prompt an agent gets for one attempt of a task.

It holds the task id, description, ``file``, ``tests``, acceptance criteria, the exact
completion promise to print, how to report being blocked, the previous attempt's failure
output (truncated), and, where they apply, a paragraph about the task's role (an old queue
file's ``agent`` role name) and a note about the git tree the agent works in. The template
uses ``$name`` placeholders (:class:`string.Template`); users can replace it with a file
(``defaults.prompt_template``).

Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from .model import TaskDef

DEFAULT_TEMPLATE = """\
You are working on task $id of track $track.

$role$title$description
$details
$finish
If you cannot make progress without help from a person, print
<blocked>one line saying why</blocked>
and stop.
$workspace$failure"""

PLACEHOLDERS = (
    "id",
    "track",
    "title",
    "description",
    "details",
    "promise",
    "promise_line",
    "finish",
    "failure",
    "attempt",
    "max_iterations",
    "role",
    "workspace",
)


@dataclass(frozen=True, slots=True)
class PromptInput:
    task: TaskDef
    attempt: int
    """The iteration within the current budget (1 for the first)."""
    max_iterations: int
    failure: str = ""
    """The previous attempt's failure output, already truncated."""
    role: str = ""
    """A paragraph about the task's role, when its agent name is a role."""
    workspace: str = ""
    """A note about the working tree (git), when there is one."""


def promise_text(task: TaskDef) -> str | None:
    return task.completion_promise or None


def promise_tag(promise: str) -> str:
    return f"<promise>{promise}</promise>"


def _details(task: TaskDef) -> str:
    lines: list[str] = []
    if task.file:
        lines.append(f"File: {task.file}")
    if task.tests:
        lines.append("Tests: " + ", ".join(task.tests))
    if task.acceptance_criteria:
        lines.append("Acceptance criteria:")
        lines.extend(f"- {item}" for item in task.acceptance_criteria)
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def build(data: PromptInput, template: str = DEFAULT_TEMPLATE) -> str:
    """Fill ``template`` for one attempt. Unknown ``$names`` are left as they are."""
    task = data.task
    promise = promise_text(task)
    failure = ""
    if data.failure.strip():
        failure = (
            f"\nThis is attempt {data.attempt} of {data.max_iterations}. "
            "The previous attempt failed:\n"  # (its output begins with how: a run, a check)
            f"----- previous failure -----\n{data.failure.rstrip()}\n"
            "----- end of previous failure -----\n"
        )
    values = {
        "id": task.key.id,
        "track": task.key.track,
        "title": f"{task.title}\n\n" if task.title else "",
        "description": (task.description or "").strip(),
        "details": _details(task),
        "promise": promise or "",
        "promise_line": promise_tag(promise) if promise else "",
        "finish": (
            "When the task is completely done and its tests pass, print exactly this line:\n"
            + promise_tag(promise)
            if promise
            else "When the task is completely done and its tests pass, say so and stop."
        ),
        "failure": failure,
        "attempt": str(data.attempt),
        "max_iterations": str(data.max_iterations),
        "role": f"{data.role.strip()}\n\n" if data.role.strip() else "",
        "workspace": f"\n{data.workspace.strip()}\n" if data.workspace.strip() else "",
    }
    return Template(template).safe_substitute(values)
