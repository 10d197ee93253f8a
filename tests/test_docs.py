"""The examples in README.md and docs/ are run: they must stay true.

Fenced ``json file=PATH`` and ``toml file=PATH`` blocks of every page under docs/ make one example
project in a scratch directory; the ``console`` blocks of docs/ run there, and those of the README
in the project itself. Output is compared line by line. Other ``json`` blocks must parse, and other
``toml`` blocks must be valid settings (a ``toml file=`` block may show a bad file on purpose).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.config import Settings

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(path: Path) -> list[tuple[str, str, str]]:
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in _FENCE.finditer(path.read_text())]


def sessions(text: str) -> list[tuple[list[str], list[str]]]:
    """``$ command`` lines and the output lines that follow each."""
    out: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            out.append((shlex.split(line[2:]), []))
        elif out:
            out[-1][1].append(line.rstrip())
    return out


def example_project(root: Path) -> None:
    for doc in DOCS[1:]:
        for lang, info, body in blocks(doc):
            if lang in ("json", "toml") and info.startswith("file="):
                target = root / info.removeprefix("file=")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(body)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_examples_in_docs_hold(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = blocks(doc)
    for lang, info, body in found:
        if lang == "json" and not info:
            json.loads(body)
        if lang == "toml" and not info:  # a toml file= block may be wrong on purpose
            Settings.model_validate(tomllib.loads(body))
    if doc.name == "README.md":
        monkeypatch.chdir(REPO)
    else:
        example_project(tmp_path)
        monkeypatch.chdir(tmp_path)
    for lang, _, body in found:
        if lang != "console":
            continue
        for argv, expected in sessions(body):
            assert argv[0] == "orchestratord", argv
            result = CliRunner().invoke(cli, argv[1:])
            got = [line.rstrip() for line in result.output.splitlines()]
            assert got == [line for line in expected if line or got], (
                f"{doc.name}: $ {shlex.join(argv)}"
            )
