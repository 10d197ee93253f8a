"""The queue-file boundary: JSON values in, frozen model values and problems out.

Pydantic validates the fields orchestratord reads; every other key is left alone (it stays in
the raw document and survives every write). Messages say what was expected and where, and
unknown status or priority values list the allowed ones.

Documented mappings:

* status: ``pending``, ``in_progress``, ``complete``, ``blocked``, ``failed``, ``skipped``,
  in any letter case; ``completed`` and ``done`` read as ``complete``, ``parked`` as
  ``skipped``.
* priority (lower runs first): ``P0``..``P9`` -> 0..9; an integer -> itself;
  ``high`` -> 1, ``medium`` -> 2, ``low`` -> 3; null or missing -> 2. Ties keep file order.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from .errors import RefError
from .model import (
    Command,
    ExecutorChoice,
    Owned,
    Ref,
    Status,
    TaskDef,
    TaskKey,
    TrackBudget,
    TrackDef,
    TrackSettings,
)
from .problems import ROOT, Problem, json_path

STATUS_ALIASES: Mapping[str, Status] = {
    **{s.value: s for s in Status},
    "completed": Status.COMPLETE,
    "done": Status.COMPLETE,
    "parked": Status.SKIPPED,
}
PRIORITY_WORDS: Mapping[str, int] = {"high": 1, "medium": 2, "low": 3}
DEFAULT_PRIORITY = 2
TASK_LIST_KEYS = ("features", "tasks")
_TRACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PRIORITY_P = re.compile(r"^[Pp]([0-9])$")


def _fail(message: str, index: int | None = None) -> PydanticCustomError:
    """An error with our own message; ``index`` names the list element at fault."""
    context = {} if index is None else {"index": index}
    return PydanticCustomError("orchestrator", message, context)


def describe_json(value: object) -> str:
    """Name a JSON value for a message: ``number 12``, ``string "x"``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'string "{shown}"'
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# ------------------------------------------------------------------ field parsers


def parse_status(value: object) -> Status:
    if isinstance(value, str):
        status = STATUS_ALIASES.get(value.strip().lower())
        if status is not None:
            return status
    allowed = ", ".join(s.value for s in Status)
    raise _fail(
        f"unknown status {describe_json(value)}; allowed: {allowed} "
        "(also read: completed, done -> complete; parked -> skipped)"
    )


def priority_rank(value: object) -> int:
    """Map a priority as written in a file to its rank (lower runs first)."""
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _PRIORITY_P.match(text)
        if match:
            return int(match.group(1))
        word = PRIORITY_WORDS.get(text.lower())
        if word is not None:
            return word
    raise _fail(
        f"unknown priority {describe_json(value)}; allowed: P0..P9, an integer "
        "(lower runs first), high, medium, low, or null"
    )


def _status(value: object) -> Status:
    return Status.PENDING if value is None else parse_status(value)


def _refs(value: object) -> tuple[Ref, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _fail(f"expected a list of task refs, got {describe_json(value)}")
    refs: list[Ref] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _fail(
                f"expected a task ref string (ID, track:ID or track:*), got {describe_json(item)}",
                index,
            )
        try:
            refs.append(Ref.parse(item))
        except RefError as exc:
            raise _fail(str(exc), index) from None
    return tuple(refs)


def _argv(value: object, index: int | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(
            f"expected a command string or a non-empty argv list of strings, "
            f"got {describe_json(value)}",
            index,
        )
    return tuple(value)


def _command(value: object) -> Command | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise _fail("empty command; give a shell command string or an argv list")
        return value
    return _argv(value)


def _commands(value: object) -> tuple[Command, ...] | None:
    """``verify``: a string, or a list whose items are strings or argv lists; [] means none."""
    if value is None:
        return None
    if isinstance(value, str):
        return (_command(value) or "",)
    if not isinstance(value, list):
        raise _fail(f"expected a command string or a list of commands, got {describe_json(value)}")
    out: list[Command] = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            if not item.strip():
                raise _fail("empty command; give a shell command string or an argv list", index)
            out.append(item)
        else:
            out.append(_argv(item, index))
    return tuple(out)


def _strings(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _fail(f"expected a string or a list of strings, got {describe_json(value)}")


def _optional_strings(value: object) -> tuple[str, ...] | None:
    return None if value is None else _strings(value)


def _attempts(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _fail(f"expected a count (an integer >= 0), got {describe_json(value)}")


def _task_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"task id must be a non-empty string, got {describe_json(value)}")
    if value != value.strip():
        raise _fail(f"task id {value!r} has spaces at its ends; remove them")
    if ":" in value or value == "*":
        raise _fail(f"task id {value!r} may not contain ':' or be '*' (they are used in task refs)")
    return value


EXECUTOR_KEYS = (
    "type",
    "address",
    "cpus",
    "gpus",
    "memory_mb",
    "resources",
    "pending_limit",
    "workspace",
    "repo",
    "ref",
)


def _number(raw: dict[str, Any], key: str, *, positive: bool = False) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(f"executor {key}: expected a number >= 0, got {describe_json(value)}")
    if positive and value == 0:
        raise _fail(f"executor {key}: must be > 0, got {describe_json(value)}")
    return float(value)


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise _fail(f"executor {key}: expected a non-empty string, got {describe_json(value)}")


def _executor(value: object) -> ExecutorChoice | None:
    """``track.executor``: ``"local"``, ``"ray"``, or an object with ``type`` and overrides."""
    if value is None:
        return None
    kinds = ("local", "ray")
    if isinstance(value, str):
        if value in kinds:
            return ExecutorChoice(value)  # type: ignore[arg-type]
        raise _fail(
            f'unknown executor {describe_json(value)}; allowed: "local", "ray", or an object '
            'such as {"type": "ray", "cpus": 2}'
        )
    if not isinstance(value, dict):
        raise _fail(f'expected "local", "ray" or an object, got {describe_json(value)}')
    for key in value:
        if key not in EXECUTOR_KEYS:
            close = difflib.get_close_matches(str(key), EXECUTOR_KEYS, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(EXECUTOR_KEYS)}"
            )
            raise _fail(f"unknown executor setting {key!r}{hint}")
    kind = value.get("type")
    if kind not in kinds:
        raise _fail(f'executor "type" must be "local" or "ray", got {describe_json(kind)}')
    resources = value.get("resources") or {}
    if not isinstance(resources, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for k, v in resources.items()
    ):
        raise _fail(
            "executor resources: expected an object of names to amounts > 0, "
            f'such as {{"agent_slot": 1}}, got {describe_json(resources)}'
        )
    memory = _number(value, "memory_mb")
    if memory is not None and memory != int(memory):
        raise _fail(f"executor memory_mb: expected a whole number, got {memory:g}")
    workspace = value.get("workspace")
    if workspace not in (None, "shared", "git"):
        raise _fail(f'executor workspace: "shared" or "git", got {describe_json(workspace)}')
    choice = ExecutorChoice(
        kind=kind,
        address=_text(value, "address"),
        cpus=_number(value, "cpus"),
        gpus=_number(value, "gpus"),
        memory_mb=None if memory is None else int(memory),
        resources=tuple(sorted((k, float(v)) for k, v in resources.items())),
        pending_limit=_number(value, "pending_limit", positive=True),
        workspace=workspace,
        repo=_text(value, "repo"),
        ref=_text(value, "ref"),
    )
    if choice.cpus == 0 and not (choice.gpus or choice.memory_mb or choice.resources):
        raise _fail(
            "executor cpus: 0 with no other resource would reserve nothing (Ray would start "
            "any number of runs at once); keep cpus > 0 or add a resource such as agent_slot"
        )
    return choice


StatusField = Annotated[Status, PlainValidator(_status)]
RefsField = Annotated[tuple[Ref, ...], PlainValidator(_refs)]
CommandField = Annotated[Command | None, PlainValidator(_command)]
CommandsField = Annotated[tuple[Command, ...] | None, PlainValidator(_commands)]
StringsField = Annotated[tuple[str, ...], PlainValidator(_strings)]
OptStringsField = Annotated[tuple[str, ...] | None, PlainValidator(_optional_strings)]
PriorityField = Annotated[int, PlainValidator(priority_rank)]
CountField = Annotated[int, PlainValidator(_attempts)]
Seconds = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, arbitrary_types_allowed=True)


class TaskFields(_Strict):
    """The task fields orchestratord reads. Other keys are ignored here and kept on disk."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, PlainValidator(_task_id)]
    description: str | None = None
    title: str | None = None
    file: str | None = None
    tests: StringsField = ()
    status: StatusField = Status.PENDING
    priority: PriorityField = DEFAULT_PRIORITY
    dependencies: RefsField = ()
    depends_on: RefsField = ()
    max_iterations: Annotated[int, Field(ge=1)] | None = None
    completion_promise: str | None = None
    agent: str | None = None
    type: str | None = None
    command: CommandField = None
    verify: CommandsField = None
    timeout: Seconds | None = None
    verify_timeout: Seconds | None = None
    acceptance_criteria: StringsField = ()
    allow_no_changes: bool = False
    paused: bool = False
    attempts: CountField = 0
    last_attempt: str | None = None
    completed_at: str | None = None
    passes: bool | None = None
    error: str | None = None
    verification_verdict: str | None = None
    files_actually_changed: OptStringsField = None


class BudgetFields(_Strict):
    """The ``budget`` object of ``track``: limits in USD and tokens."""

    model_config = ConfigDict(extra="forbid")

    usd: Annotated[float, Field(gt=0)] | None = None
    tokens: Annotated[int, Field(gt=0)] | None = None
    task_usd: Annotated[float, Field(gt=0)] | None = None
    task_tokens: Annotated[int, Field(gt=0)] | None = None


class TrackFields(_Strict):
    """The optional ``track`` object. Unknown keys are errors: this object is ours."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    start_after: RefsField = ()
    concurrency: Annotated[int, Field(ge=1)] = 1
    paused: bool = False
    agent: str | None = None
    workdir: str | None = None
    verify: CommandsField = None
    env: dict[str, str] = Field(default_factory=dict)
    on_block: Literal["continue", "pause"] = "continue"
    timeout: Seconds | None = None
    verify_timeout: Seconds | None = None
    max_iterations: Annotated[int, Field(ge=1)] | None = None
    executor: Annotated[ExecutorChoice | None, PlainValidator(_executor)] = None
    integration: Literal["merge", "branch"] | None = None
    budget: BudgetFields | None = None


TRACK_SETTINGS: tuple[str, ...] = tuple(TrackFields.model_fields)
BUDGET_SETTINGS: tuple[str, ...] = tuple(BudgetFields.model_fields)
_TASKS = TypeAdapter(list[TaskFields])


# ------------------------------------------------------------------ error messages


def _message(err: Mapping[str, Any], known: Sequence[str] = ()) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "orchestrator":
        return str(err["msg"])
    expected = {
        "string_type": "a string",
        "int_type": "an integer",
        "bool_type": "true or false",
        "float_type": "a number",
        "dict_type": "an object",
        "list_type": "a list",
        "tuple_type": "a list",
        "model_type": "an object",
    }.get(kind)
    if expected is not None:
        return f"expected {expected}, got {describe_json(value)}"
    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        name = str(err["loc"][-1])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(known)}"
        return f"unknown setting {name!r}{hint}"
    if kind in ("greater_than", "greater_than_equal"):
        bound = ctx.get("gt", ctx.get("ge"))
        op = ">" if kind == "greater_than" else ">="
        return f"must be {op} {bound:g}, got {describe_json(value)}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {describe_json(value)}"
    return str(err["msg"])


def _loc_parts(err: Mapping[str, Any]) -> list[int | str]:
    """The error's JSON location, down to the list element our own validators name."""
    # Pydantic adds the type of a union member to the location; drop those labels.
    parts = [p for p in err["loc"] if isinstance(p, int) or not any(c in p for c in "[]|(")]
    index = (err.get("ctx") or {}).get("index")
    if isinstance(index, int):
        parts.append(index)
    return parts


# ------------------------------------------------------------------ documents


def track_name_problem(name: str) -> str | None:
    if _TRACK_NAME.match(name):
        return None
    return (
        f"track name {name!r} may only contain letters, digits, '.', '_' and '-' "
        "(and must start with a letter or digit)"
    )


def load_document(
    display: str, stem: str, doc: object, memo: TaskMemo | None = None
) -> tuple[TrackDef | None, list[Problem]]:
    """Turn a parsed queue file into a track, with every problem found in it.

    A track is returned whenever the file's tasks can be identified, even when some fields are
    invalid (those fields take their defaults), so that cross-file checks still see every task.
    ``memo`` remembers the tasks of the previous read of the same file.
    """
    problems: list[Problem] = []

    def problem(path: str, message: str) -> None:
        problems.append(Problem(display, path, message))

    if not isinstance(doc, dict):
        problem(ROOT, f"a queue file must be a JSON object, got {describe_json(doc)}")
        return None, problems
    present = [k for k in TASK_LIST_KEYS if k in doc]
    if not present:
        problem(ROOT, "no 'features' or 'tasks' array; put the tasks in one of them")
        return None, problems
    if len(present) == 2:
        problem(ROOT, "both 'features' and 'tasks' are present; keep the tasks in one of them")
    list_key = present[0]
    raw_tasks = doc[list_key]
    if not isinstance(raw_tasks, list):
        problem(list_key, f"expected a list of tasks, got {describe_json(raw_tasks)}")
        return None, problems

    settings = _track_settings(doc.get("track"), problem)
    name = settings.name if settings.name else stem
    where = json_path("track", "name") if settings.name else ROOT
    bad_name = track_name_problem(name)
    if bad_name:
        fix = "set track.name" if not settings.name else "choose another track.name"
        problem(where, f"{bad_name}; {fix}")
    tasks = _tasks(name, list_key, raw_tasks, problem, memo)
    project = doc.get("project")
    track = TrackDef(
        name=name,
        path=display,
        list_key=list_key,
        tasks=tuple(tasks),
        settings=settings,
        project=project if isinstance(project, str) else None,
    )
    return track, problems


def _track_settings(raw: object, problem: Any) -> TrackSettings:
    if raw is None:
        return TrackSettings()
    if not isinstance(raw, dict):
        problem("track", f"expected an object of track settings, got {describe_json(raw)}")
        return TrackSettings()
    try:
        fields = TrackFields.model_validate(raw)
    except ValidationError as exc:
        bad: set[str] = set()
        for err in exc.errors():
            parts = _loc_parts(err)
            known = BUDGET_SETTINGS if parts[:1] == ["budget"] and len(parts) > 1 else None
            problem(json_path("track", *parts), _message(err, known or TRACK_SETTINGS))
            if parts:
                bad.add(str(parts[0]))
        fields = TrackFields.model_validate({k: v for k, v in raw.items() if k not in bad})
    return TrackSettings(
        name=fields.name,
        start_after=fields.start_after,
        concurrency=fields.concurrency,
        paused=fields.paused,
        agent=fields.agent,
        workdir=fields.workdir,
        verify=fields.verify,
        env=tuple(sorted(fields.env.items())),
        on_block=fields.on_block,
        timeout=fields.timeout,
        verify_timeout=fields.verify_timeout,
        max_iterations=fields.max_iterations,
        executor=fields.executor,
        integration=fields.integration,
        budget=None if fields.budget is None else TrackBudget(**fields.budget.model_dump()),
    )


class TaskMemo:
    """Tasks read before, by a digest of their JSON: a file saved again is validated only
    where its tasks changed (a save that adds one task to 1,000 validates one).

    Keeps what the last read found; a read looks up the previous one's tasks.
    """

    __slots__ = ("_before", "_now")

    def __init__(self) -> None:
        self._before: dict[bytes, TaskDef] = {}
        self._now: dict[bytes, TaskDef] = {}

    @staticmethod
    def key(track: str, item: object) -> bytes | None:
        if not isinstance(item, dict):
            return None
        try:
            text = orjson.dumps(item)
        except TypeError:
            return None
        return hashlib.blake2b(track.encode() + b"\0" + text, digest_size=16).digest()

    def get(self, key: bytes) -> TaskDef | None:
        return self._before.get(key)

    def keep(self, key: bytes, task: TaskDef) -> None:
        self._now[key] = task

    def turn(self) -> None:
        self._before, self._now = self._now, {}


def _tasks(
    track: str, list_key: str, raw: list[object], problem: Any, memo: TaskMemo | None = None
) -> list[TaskDef]:
    if memo is None:
        return _read_tasks(track, list_key, raw, problem)
    keys = [memo.key(track, item) for item in raw]
    found: list[TaskDef | None] = [memo.get(k) if k is not None else None for k in keys]
    misses = [i for i, task in enumerate(found) if task is None]
    if misses:
        spotted: list[str] = []

        def spot(path: str, message: str) -> None:
            spotted.append(message)

        fresh = _read_tasks(track, list_key, [raw[i] for i in misses], spot)
        if spotted or len(fresh) != len(misses):
            memo.turn()
            return _read_tasks(track, list_key, raw, problem)  # problems named at their place
        for index, task in zip(misses, fresh, strict=True):
            found[index] = task if task.index == index else replace(task, index=index)
    tasks: list[TaskDef] = []
    for index, (key, known) in enumerate(zip(keys, found, strict=True)):
        assert known is not None
        task = known if known.index == index else replace(known, index=index)
        if key is not None:
            memo.keep(key, task)
        tasks.append(task)
    memo.turn()
    return tasks


def _read_tasks(track: str, list_key: str, raw: list[object], problem: Any) -> list[TaskDef]:
    try:
        validated: list[TaskFields | None] = list(_TASKS.validate_python(raw))
    except ValidationError as exc:
        validated = _lenient(list_key, raw, exc, problem)
    tasks: list[TaskDef] = []
    for index, fields in enumerate(validated):
        if fields is None:
            continue
        if fields.dependencies and fields.depends_on:
            problem(
                json_path(list_key, index, "depends_on"),
                "both 'dependencies' and 'depends_on' are set; keep one of them",
            )
        deps_field = (
            "depends_on" if fields.depends_on and not fields.dependencies else "dependencies"
        )
        tasks.append(
            TaskDef(
                key=TaskKey(track, fields.id),
                index=index,
                priority=fields.priority,
                owned=Owned(
                    status=fields.status,
                    attempts=fields.attempts,
                    last_attempt=fields.last_attempt,
                    completed_at=fields.completed_at,
                    passes=fields.passes,
                    error=fields.error,
                    verification_verdict=fields.verification_verdict,
                    files_actually_changed=fields.files_actually_changed,
                ),
                description=fields.description,
                title=fields.title,
                file=fields.file,
                tests=fields.tests,
                deps=fields.dependencies or fields.depends_on,
                deps_field=deps_field,
                max_iterations=fields.max_iterations,
                completion_promise=fields.completion_promise,
                agent=fields.agent,
                type=fields.type,
                command=fields.command,
                verify=fields.verify,
                timeout=fields.timeout,
                verify_timeout=fields.verify_timeout,
                acceptance_criteria=fields.acceptance_criteria,
                allow_no_changes=fields.allow_no_changes,
                paused=fields.paused,
            )
        )
    return tasks


def _lenient(
    list_key: str, raw: list[object], exc: ValidationError, problem: Any
) -> list[TaskFields | None]:
    """Report every error, then re-read the bad tasks with their bad fields left out."""
    bad_fields: dict[int, set[str]] = {}
    for err in exc.errors():
        parts = _loc_parts(err)
        index = parts[0]
        assert isinstance(index, int)
        item = raw[index]
        if not isinstance(item, dict):
            problem(
                json_path(list_key, index),
                f"expected a task object, got {describe_json(item)}",
            )
            bad_fields[index] = {"*"}
            continue
        if len(parts) == 1:
            continue
        field_name = str(parts[1])
        if field_name == "id" and err["type"] == "missing":
            problem(json_path(list_key, index), "task has no 'id'; every task needs a unique id")
        else:
            problem(json_path(list_key, *parts), _message(err))
        bad_fields.setdefault(index, set()).add(field_name)
    out: list[TaskFields | None] = []
    for index, item in enumerate(raw):
        bad = bad_fields.get(index)
        if not bad:
            out.append(TaskFields.model_validate(item))
        elif "*" in bad or "id" in bad or not isinstance(item, dict):
            out.append(None)
        else:
            out.append(TaskFields.model_validate({k: v for k, v in item.items() if k not in bad}))
    return out
