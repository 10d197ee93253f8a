"""Logging: structlog, human-readable on a terminal, JSON lines otherwise, and a log file.

The daemon logs one canonical line per attempt (task, track, attempt, verdict, duration) and
a line for every change worth knowing about. Logs go to stderr; journald and launchd collect
them when the daemon runs as a service. With ``log_file`` set they also go, as JSON lines, to
that file, which is rotated by size (``log_file_max_bytes``, ``log_file_backups`` old files
kept as ``FILE.1`` ... ``FILE.N``).

structlog renders through the standard library's ``logging`` so that one event can go to
several outputs, each with its own renderer; the level is filtered before any of that work.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

import structlog

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Settings

Format = Literal["auto", "console", "json"]

LOGGER = "orchestratord"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(
    level: str = "info",
    fmt: Format = "auto",
    stream: TextIO | None = None,
    *,
    file: Path | None = None,
    file_max_bytes: int = 10_485_760,
    file_backups: int = 5,
) -> None:
    """Send the daemon's log to ``stream`` (stderr) and, when given, to a rotated ``file``.

    Raises :class:`ConfigError` when the file cannot be opened; the previous set-up then
    stays in force.
    """
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(out))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=_isatty(out))
    )
    handlers: list[logging.Handler] = [
        _handler(logging.StreamHandler(out), renderer, drop_none=not use_json)
    ]
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            rotating = logging.handlers.RotatingFileHandler(
                file, maxBytes=file_max_bytes, backupCount=file_backups, encoding="utf-8"
            )
        except OSError as exc:
            raise ConfigError(f"{file}: cannot write the log file: {exc.strerror}") from None
        handlers.append(_handler(rotating, structlog.processors.JSONRenderer()))
    logger = logging.getLogger(LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for handler in handlers:
        logger.addHandler(handler)
    threshold = LEVELS.get(level, logging.INFO)
    logger.setLevel(threshold)
    logger.propagate = False
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_factory,
        cache_logger_on_first_use=False,
    )
    BoundOnce.generation += 1


class BoundOnce:
    """``structlog.get_logger(name)`` for code that logs on every attempt: bound once per
    :func:`configure` instead of at every call (a lazy proxy binds each time)."""

    generation = 0
    """Bumped by every :func:`configure`: loggers bound before it are stale."""

    def __init__(self, name: str = LOGGER) -> None:
        self._name = name
        self._generation = -1
        self._bound: structlog.typing.FilteringBoundLogger | None = None

    def get(self) -> structlog.typing.FilteringBoundLogger:
        bound = self._bound
        if bound is None or self._generation != BoundOnce.generation:
            bound = self._bound = structlog.get_logger(self._name).bind()
            self._generation = BoundOnce.generation
        return bound


def configure_from(settings: Settings, stream: TextIO | None = None) -> None:
    """:func:`configure` with the log settings of the config (at start-up and on SIGHUP)."""
    configure(
        settings.log_level,
        settings.log_format,
        stream,
        file=Path(settings.log_file) if settings.log_file else None,
        file_max_bytes=settings.log_file_max_bytes,
        file_backups=settings.log_file_backups,
    )


def _factory(*args: object) -> logging.Logger:
    """Every structlog logger of the package writes through the one ``orchestratord`` logger."""
    return logging.getLogger(LOGGER)


def _handler(
    handler: logging.Handler, renderer: structlog.typing.Processor, *, drop_none: bool = False
) -> logging.Handler:
    """``drop_none``: leave out keys without a value (for people; JSON keeps every key)."""
    processors: list[structlog.typing.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta
    ]
    if drop_none:
        processors.append(_without_none)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[*processors, renderer]))
    return handler


def _without_none(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The attempt line of a command has no agent, tokens, cost or commit: a console shows
    ``agent=None`` for each, noise to a person."""
    return {k: v for k, v in event.items() if v is not None}


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
