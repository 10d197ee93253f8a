"""The examples in README.md and docs/ are run: they must stay true.

Fenced ``json file=PATH`` and ``toml file=PATH`` blocks of every page under docs/ make one example
project in a scratch directory; the ``console`` blocks of docs/ run there, and those of the README
in the project itself. Output is compared line by line. Other ``json`` blocks must parse, and other
``toml`` blocks must be valid settings (a ``toml file=`` block may show a bad file on purpose).
The settings table of docs/configuration.md names every setting there is, and each one's variable.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import get_origin

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from orchestrator.cli import cli
from orchestrator.config import ENV_KEYS, ENV_PREFIX, Settings

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


_ROW = re.compile(r"^\| (`[^|]*`) \|([^|]*)\|", re.MULTILINE)


def _documented_settings() -> dict[str, str]:
    """The settings table of docs/configuration.md: each setting it names, with its env cell."""
    text = (REPO / "docs" / "configuration.md").read_text()
    table = text.split("\n## Settings\n", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    return {
        name: env.strip()
        for names, env in _ROW.findall(table)
        for name in re.findall(r"`([^`]+)`", names)
    }


def _setting_names() -> set[str]:
    """Every setting: top-level values, each field of a section, ``KEY.NAME`` for a map."""
    names = set()
    for key, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= {f"{key}.{sub}" for sub in kind.model_fields}
        elif get_origin(kind) is dict:
            names.add(f"{key}.NAME")
        else:
            names.add(key)
    return names


def test_the_settings_table_names_every_setting_and_its_variable() -> None:
    rows = _documented_settings()
    known = _setting_names()
    wholes = {n.removesuffix("*") for n in rows if n.endswith(".*")}  # ray.*: see its own page
    documented = {n for n in known if n in rows or n.startswith(tuple(wholes))}
    assert known - documented == set(), "settings missing in docs/configuration.md"
    assert set(rows) - known - {w + "*" for w in wholes} == set(), "no such settings"
    variables = {key: f"`{ENV_PREFIX}{suffix}`" for suffix, key in ENV_KEYS.items()}
    assert {n: e for n, e in rows.items() if "." not in n} == {
        n: variables.get(n, "") for n in rows if "." not in n
    }, "the env column of docs/configuration.md is not ENV_KEYS"
    assert set(variables) <= set(Settings.model_fields), "ENV_KEYS names no such setting"
