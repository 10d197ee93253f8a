"""Budgets: limits in USD and tokens per task, per track and per day, and when one is crossed.

Limits come from the config's ``[budgets]`` (``task_usd``, ``task_tokens``, ``track_usd``,
``track_tokens``, ``day_usd``, ``day_tokens``) and a track's ``budget`` object (``usd``,
``tokens``, ``task_usd``, ``task_tokens``), which wins for that track. Spending is what the
agents reported for their attempts (the store adds it up); a day is a UTC calendar day.

A budget is *crossed* once: the first time an attempt ends with the spending over the limit.
The daemon then pauses the track (every track, for the day's budget), without stopping the
running attempt, and announces ``budget_exceeded``; ``resume`` goes on, and the same budget
does not pause it again (a raised limit, or the next day, can).

Pure: limits and spending in, crossings out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .config import Budgets
from .model import TaskKey, TrackBudget
from .store import Spend

Scope = Literal["task", "track", "day"]
Unit = Literal["usd", "tokens"]


@dataclass(frozen=True, slots=True)
class Limit:
    scope: Scope
    unit: Unit
    limit: float


@dataclass(frozen=True, slots=True)
class Crossing:
    scope: Scope
    subject: str
    """The task ref, the track, or the day (``2026-03-10``)."""
    unit: Unit
    limit: float
    spent: float

    @property
    def key(self) -> tuple[str, str, str, float]:
        return (self.scope, self.subject, self.unit, self.limit)

    def describe(self) -> str:
        def amount(value: float) -> str:
            return f"${value:.2f}" if self.unit == "usd" else f"{int(value):,} tokens"

        what = {"task": "task", "track": "track", "day": "day"}[self.scope]
        return (
            f"{what} budget of {amount(self.limit)} crossed by {self.subject} "
            f"(spent {amount(self.spent)})"
        )

    def as_data(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "of": self.subject,
            "unit": self.unit,
            "limit": self.limit,
            "spent": self.spent,
        }


def limits(config: Budgets, track: TrackBudget | None) -> list[Limit]:
    """The limits that apply to a task of a track (the track's own win over the config's)."""
    own = track or TrackBudget()
    pairs: list[tuple[Scope, Unit, float | None]] = [
        ("task", "usd", own.task_usd if own.task_usd is not None else config.task_usd),
        ("task", "tokens", own.task_tokens if own.task_tokens is not None else config.task_tokens),
        ("track", "usd", own.usd if own.usd is not None else config.track_usd),
        ("track", "tokens", own.tokens if own.tokens is not None else config.track_tokens),
        ("day", "usd", config.day_usd),
        ("day", "tokens", config.day_tokens),
    ]
    return [Limit(scope, unit, value) for scope, unit, value in pairs if value is not None]


def crossings(
    key: TaskKey,
    day: str,
    applicable: list[Limit],
    spend: Callable[[Scope], Spend],
    seen: set[tuple[str, str, str, float]],
) -> list[Crossing]:
    """The budgets over their limit that have not been reported yet (``seen`` is updated)."""
    cache: dict[Scope, Spend] = {}
    out: list[Crossing] = []
    for limit in applicable:
        if limit.scope not in cache:
            cache[limit.scope] = spend(limit.scope)
        used = cache[limit.scope]
        spent = used.cost_usd if limit.unit == "usd" else float(used.tokens)
        subject = {"task": str(key), "track": key.track, "day": day}[limit.scope]
        crossing = Crossing(limit.scope, subject, limit.unit, limit.limit, spent)
        if spent > limit.limit and crossing.key not in seen:
            seen.add(crossing.key)
            out.append(crossing)
    return out
