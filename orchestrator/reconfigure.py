"""A changed config applied to the running daemon, on SIGHUP or ``orchestratord reload``.

The config is loaded again the way it was at start-up (same file, same flags, the environment
as it is now). What the daemon reads as it goes takes effect at once (:data:`RELOADABLE`): the
limit on parallel attempts (more may start right away), the log level, format and file, the
task defaults, the agent profiles, and the retention of attempt logs. The rest (the tracks and
state directories, the graces, the write-back delay, the size cap of attempt logs) is fixed at
start-up: a change to it is reported and takes effect at the next start. A config that does not
load is reported with its ``FILE:LINE`` errors and the settings in force stay.

:class:`ConfigReloader` is the daemon service that does it: it wraps ``Control.reload`` so
that the config is reloaded first, then whatever reload it wrapped (the queue files).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus

from . import config, logs
from .config import Config, Settings
from .errors import ConfigError
from .live import ReloadResult

if TYPE_CHECKING:
    from .supervisor import Runtime

log = structlog.get_logger("orchestratord")

RELOADABLE = frozenset(
    {
        "max_parallel",
        "log_level",
        "log_format",
        "log_file",
        "log_file_max_bytes",
        "log_file_backups",
        "logs_keep_days",
        "logs_max_total_bytes",
        "defaults",
        "agents",
    }
)
LOG_KEYS = frozenset(
    {"log_level", "log_format", "log_file", "log_file_max_bytes", "log_file_backups"}
)


@dataclass(frozen=True, slots=True)
class Change:
    """The config to put in force, what changed in it, and what changed but must wait."""

    config: Config
    applied: tuple[str, ...]
    at_restart: tuple[str, ...]


def merge(running: Config, fresh: Config) -> Change:
    """Take from ``fresh`` what can change at run time; keep the rest of ``running``."""
    applied: list[str] = []
    at_restart: list[str] = []
    for key in Settings.model_fields:
        if getattr(running.settings, key) == getattr(fresh.settings, key):
            continue
        (applied if key in RELOADABLE else at_restart).append(key)
    settings = running.settings.model_copy(
        update={key: getattr(fresh.settings, key) for key in applied}
    )
    sources = {
        key: source
        for key, source in running.sources.items()
        if key.split(".", 1)[0] not in RELOADABLE
    }
    sources.update(
        (key, source) for key, source in fresh.sources.items() if key.split(".", 1)[0] in RELOADABLE
    )
    effective = dataclasses.replace(running, settings=settings, sources=sources)
    return Change(effective, tuple(applied), tuple(at_restart))


def reload_config(rt: Runtime) -> Change | None:
    """Load the config again and put what can change in force; None if it does not load."""
    engine = rt.engine
    try:
        fresh = config.reload(engine.cfg)
    except ConfigError as exc:
        _report_invalid(rt, str(exc).splitlines())
        return None
    change = merge(engine.cfg, fresh)
    if LOG_KEYS.intersection(change.applied):
        problem = _configure_logs(change.config.settings)
        if problem:
            log.error("log settings not reloaded: the ones in force stay", problem=problem)
            kept = {key: getattr(engine.cfg.settings, key) for key in LOG_KEYS}
            fresh = dataclasses.replace(fresh, settings=fresh.settings.model_copy(update=kept))
            change = merge(engine.cfg, fresh)
    engine.cfg = rt.cfg = change.config
    if change.applied or change.at_restart:
        data = {"changed": list(change.applied), "at_restart": list(change.at_restart)}
        engine.journal("config_reloaded", None, **data)
    where = str(engine.cfg.config_file or "no config file")
    log.info("config reloaded", file=where, changed=list(change.applied))
    if change.at_restart:
        log.warning(
            "config changes that take effect at the next start", settings=list(change.at_restart)
        )
    if "max_parallel" in change.applied:
        engine.dispatch()
    return change


def _configure_logs(settings: Settings) -> str | None:
    try:
        logs.configure_from(settings)
    except ConfigError as exc:
        return str(exc)
    return None


def _report_invalid(rt: Runtime, problems: list[str]) -> None:
    rt.engine.journal("config_invalid", None, problems=problems)
    log.error("config not reloaded: the settings in force stay", problems=problems)


@dataclass(eq=False)
class ConfigReloader:
    """The daemon service that reloads the config on every reload request."""

    reloads: int = 0

    async def __call__(
        self, rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        inner = rt.control.reload

        async def reload() -> ReloadResult:
            self.reloads += 1
            try:
                reload_config(rt)
            finally:
                result = await inner() if inner is not None else ReloadResult()
            return result

        rt.control.reload = reload
        task_status.started()
