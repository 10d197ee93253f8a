"""Generated queue files for benchmarks: many tracks, cross-track dependencies."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

Command = str | list[str]

TRUE = "/bin/true"
"""The benchmarks' task: the program, not the shell builtin. As ``[TRUE]``, and as the string
(no shell syntax), the daemon execs it directly, as make runs a recipe with no shell syntax;
``TRUE + ";"`` runs through ``/bin/sh -c``, as ninja runs every edge."""


def task(track: int, i: int, deps: list[str], command: Command | None) -> dict[str, Any]:
    """A task shaped like the old loop's, so file sizes are realistic."""
    body: dict[str, Any] = {
        "id": f"T{track:02d}-{i:04d}",
        "description": f"Generated task {i} of track {track}: implement and verify a change",
        "file": f"src/track{track}/module_{i}.py",
        "status": "pending",
        "tests": [f"tests/track{track}/test_module_{i}.py"],
        "passes": False,
        "error": None,
        "attempts": 0,
        "last_attempt": None,
        "completed_at": None,
        "completion_promise": None,
        "max_iterations": 3,
        "verification_verdict": None,
        "files_actually_changed": [],
        "type": "feature",
        "agent": None,
        "priority": "P1" if i % 7 else "P0",
        "dependencies": deps,
    }
    if command is not None:
        body["command"] = command
    return body


def write_tracks(
    directory: Path,
    tracks: int,
    per_track: int,
    *,
    seed: int = 7,
    command: Command | None = None,
    cross: float = 0.05,
) -> int:
    """Write ``tracks`` queue files of ``per_track`` tasks; return the number of edges."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    edges = 0
    for t in range(tracks):
        items = []
        for i in range(per_track):
            deps: list[str] = []
            if i and rng.random() < 0.5:
                deps.append(f"T{t:02d}-{rng.randrange(i):04d}")
            if t and rng.random() < cross:
                other = rng.randrange(t)
                deps.append(f"track{other:02d}:T{other:02d}-{rng.randrange(per_track):04d}")
            edges += len(deps)
            items.append(task(t, i, deps, command))
        doc = {"project": "bench", "features": items}
        (directory / f"track{t:02d}.json").write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        )
    return edges


def write_chain(directory: Path, links: int, command: Command | None = None) -> None:
    """One track, ``chain``, of ``links`` tasks running ``command`` (by default ``[TRUE]``,
    exec'd directly), each depending on the previous."""
    command = command or [TRUE]
    items = [
        {"id": f"C{i}", "command": command, "dependencies": [f"C{i - 1}"] if i else []}
        for i in range(links)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chain.json").write_bytes(orjson.dumps({"features": items}))
