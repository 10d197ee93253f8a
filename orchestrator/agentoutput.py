"""What an agent's output says: its final text, what the run cost, and usage-limit reports.

Claude Code's structured output (``--output-format json`` or ``stream-json``) ends with a
``result`` object: the final text (where the completion promise and ``<blocked>`` are looked
for, instead of the raw stream, whose tool results may quote anything), the tokens used and the
cost in USD. Plain-text agents' output is taken as it is, with no figures.

An agent that reports its usage limit names a reset time in one of a few shapes: a Unix time
after a ``|``, "try again in 2 days 3 hours", "resets 4:50am (Europe/Rome)", "try again at
Jul 5th, 2026 8:19 PM". :func:`reset_time` reads them.

Pure: bytes and a ``now`` in, values out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

OutputFormat = str
"""``text`` or ``claude-json`` (Claude Code's ``json`` and ``stream-json`` alike)."""

LIMIT_PATTERNS: tuple[str, ...] = (
    r"(?i)usage limit (?:reached|has been reached|exceeded)",
    r"(?i)you'?ve hit your (?:usage )?limit",
    r"(?i)\b\d+-hour limit reached",
    r"(?i)\bweekly limit reached",
    r"(?i)\bquota exceeded",
    r"(?i)exhausted your (?:daily )?quota",
    r"\bRESOURCE_EXHAUSTED\b",
    r"\busage_limit_reached\b",
)
"""Messages of Claude Code, Codex and Gemini CLI that mean "no more runs until the reset"."""

TAIL_BYTES = 8192
"""How much of the end of a failed run's output is searched for a usage-limit message."""


@functools.cache
def compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one run used, as far as the agent told."""

    tokens_in: int | None = None
    """Input tokens, cache writes and reads included."""
    tokens_out: int | None = None
    cost_usd: float | None = None

    @property
    def tokens(self) -> int | None:
        if self.tokens_in is None and self.tokens_out is None:
            return None
        return (self.tokens_in or 0) + (self.tokens_out or 0)

    def describe(self) -> str:
        parts = []
        if self.tokens is not None:
            parts.append(
                f"{self.tokens:,} tokens ({self.tokens_in or 0:,} in, {self.tokens_out or 0:,} out)"
            )
        if self.cost_usd is not None:
            parts.append(f"${self.cost_usd:.4f}")
        return ", ".join(parts) or "no usage reported"


@dataclass(frozen=True, slots=True)
class Report:
    """A run's output as orchestratord reads it."""

    text: bytes
    """Where the promise and ``<blocked>`` are looked for."""
    usage: Usage | None = None
    is_error: bool = False
    """The agent itself said the run failed (Claude's ``is_error``)."""
    other: bytes = b""
    """Lines of a structured stream that were not JSON (what the CLI printed on stderr)."""
    structured: bool = False


def read(output_format: OutputFormat, output: bytes) -> Report:
    if output_format == "claude-json":
        return _claude(output)
    return Report(output)


def _json_values(output: bytes) -> tuple[list[object], bytes]:
    """Every JSON value of the output: one document, or one per line (JSON Lines)."""
    stripped = output.strip()
    if stripped.startswith((b"{", b"[")):
        try:
            return [orjson.loads(stripped)], b""
        except orjson.JSONDecodeError:
            pass
    values: list[object] = []
    other: list[bytes] = []
    for raw in output.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(b"{"):
            try:
                values.append(orjson.loads(line))
                continue
            except orjson.JSONDecodeError:
                pass
        other.append(line)
    return values, b"\n".join(other)


def _messages(values: Iterable[object]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for value in values:
        if isinstance(value, list):
            out.extend(v for v in value if isinstance(v, dict))
        elif isinstance(value, dict):
            out.append(value)
    return out


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(usage: object, cost: object) -> Usage:
    data = usage if isinstance(usage, dict) else {}
    tokens_in = (
        _int(data.get("input_tokens"))
        + _int(data.get("cache_creation_input_tokens"))
        + _int(data.get("cache_read_input_tokens"))
    )
    known = isinstance(usage, dict)
    return Usage(
        tokens_in=tokens_in if known else None,
        tokens_out=_int(data.get("output_tokens")) if known else None,
        cost_usd=float(cost)
        if isinstance(cost, int | float) and not isinstance(cost, bool)
        else None,
    )


def _claude(output: bytes) -> Report:
    values, other = _json_values(output)
    messages = _messages(values)
    if not messages:
        return Report(output)  # not structured at all (an old CLI, a crash before any JSON)
    result = next((m for m in reversed(messages) if m.get("type") == "result"), None)
    if result is not None:
        text = result.get("result")
        return Report(
            text=text.encode() if isinstance(text, str) else b"",
            usage=_usage(result.get("usage"), result.get("total_cost_usd", result.get("cost_usd"))),
            is_error=bool(result.get("is_error"))
            or str(result.get("subtype", "")).startswith("error"),
            other=other,
            structured=True,
        )
    # Cut short before its result: add up the assistant messages (one usage per message id).
    per_message: dict[str, object] = {}
    last_text = b""
    for message in messages:
        body = message.get("message")
        if message.get("type") != "assistant" or not isinstance(body, dict):
            continue
        per_message[str(body.get("id", len(per_message)))] = body.get("usage")
        texts = [
            str(block.get("text", ""))
            for block in body.get("content") or []
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        if texts:
            last_text = "\n".join(texts).encode()
    usages = [_usage(u, None) for u in per_message.values() if isinstance(u, dict)]
    usage = (
        Usage(
            tokens_in=sum(u.tokens_in or 0 for u in usages),
            tokens_out=sum(u.tokens_out or 0 for u in usages),
        )
        if usages
        else None
    )
    return Report(text=last_text, usage=usage, is_error=True, other=other, structured=True)


def limit_message(report: Report, output: bytes, patterns: Sequence[re.Pattern[str]]) -> str | None:
    """The agent's report that its usage limit is reached (from that line on), if it made one."""
    # Structured output: the final text and stderr, never the tool results of the stream.
    haystack = report.text + b"\n" + report.other if report.structured else output[-TAIL_BYTES:]
    text = haystack.decode("utf-8", "replace")
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            start = text.rfind("\n", 0, match.start()) + 1
            return " ".join(text[start : match.end() + 300].split())[:500]
    return None


# ------------------------------------------------------------------ reset times

_EPOCH = re.compile(r"(?:\||\"resets?_at\"\s*:\s*)(\d{10})\b")
_IN_SECONDS = re.compile(r"\"resets_in_seconds\"\s*:\s*(\d+)")
_UNIT = r"(?:days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
_RELATIVE = re.compile(rf"(?i)\b(?:in|after)\s+((?:\d+(?:\.\d+)?\s*{_UNIT}\b[\s,]*(?:and\s+)?)+)")
_PART = re.compile(rf"(?i)(\d+(?:\.\d+)?)\s*({_UNIT})\b")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DATE_TIME = re.compile(
    r"(?i)\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?"
    r",?\s+(?:(\d{4}),?\s+)?(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\.?"
)
_CLOCK = re.compile(
    r"(?i)\b(?:resets?|reset at|resets at|try again at|available at|until)\s+(?:at\s+)?"
    r"(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?(?=[\s.,;)]|$)\s*(?:\(([A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)*)\))?"
)
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _zone(name: str | None, local: tzinfo) -> tzinfo:
    if not name:
        return local
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return local


def _hour(hour: int, meridiem: str | None) -> int | None:
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        return hour % 12 + (12 if meridiem.lower().startswith("p") else 0)
    return hour if 0 <= hour <= 23 else None


def reset_time(message: str, now: datetime, local: tzinfo | None = None) -> datetime | None:
    """When a usage limit resets, as the agent's message says; None when it does not say.

    A clock time without a date is its next occurrence after ``now``, in the zone named in
    brackets, else ``local`` (the daemon's own zone).
    """
    zone = local or now.astimezone().tzinfo or UTC
    if match := _EPOCH.search(message):
        return datetime.fromtimestamp(int(match.group(1)), UTC)
    if match := _IN_SECONDS.search(message):
        return now + timedelta(seconds=int(match.group(1)))
    if match := _RELATIVE.search(message):
        seconds = 0.0
        for amount, unit in _PART.findall(match.group(1)):
            seconds += float(amount) * _SECONDS[unit[0].lower()]
        if seconds > 0:
            return now + timedelta(seconds=seconds)
    if match := _DATE_TIME.search(message):
        month = _MONTHS.index(match.group(1).lower()) + 1
        day, year = int(match.group(2)), int(match.group(3) or now.astimezone(zone).year)
        hour = _hour(int(match.group(4)), match.group(6))
        if hour is not None:
            try:
                moment = datetime(year, month, day, hour, int(match.group(5) or 0), tzinfo=zone)
            except ValueError:
                return None
            if match.group(3) is None and moment < now:
                moment = moment.replace(year=year + 1)
            return moment.astimezone(UTC)
    if match := _CLOCK.search(message):
        meridiem = match.group(3)
        if meridiem is None and match.group(2) is None:
            return None  # a bare number is not a time
        hour = _hour(int(match.group(1)), meridiem)
        if hour is None or int(match.group(2) or 0) > 59:
            return None
        where = _zone(match.group(4), zone)
        today = now.astimezone(where)
        moment = today.replace(hour=hour, minute=int(match.group(2) or 0), second=0, microsecond=0)
        if moment <= today:
            moment += timedelta(days=1)
        return moment.astimezone(UTC)
    return None
