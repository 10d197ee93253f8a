"""Problems found in queue files: values that say which file, which JSON location, and what.

``validate`` prints them one per line as ``FILE: JSON.PATH: message``; the daemon logs the same
lines and shows them in ``status``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

ROOT = "$"
"""The JSON location of a whole document."""


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    path: str
    message: str
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def render(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}: {self.path}: {prefix}{self.message}"

    def __str__(self) -> str:
        return self.render()


def json_path(*parts: str | int) -> str:
    """Spell a JSON location: ``json_path("features", 3, "dependencies", 0)``.

    >>> json_path("features", 3, "dependencies", 0)
    'features[3].dependencies[0]'
    >>> json_path()
    '$'
    """
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or ROOT


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.is_error for p in problems)
