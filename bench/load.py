"""Load, validate and build the graph: 20 tracks x 1,000 tasks, and the 398-task example.

Each measurement runs in a fresh child process so that its peak memory is its own. The
reference is ``orjson.loads`` of the same files in the same child: the part no loader avoids.
Targets (issue 2): under 0.5 s and under 150 MB for the 20,000 tasks.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from orchestrator import queuefile, workspace

from .gen import write_tracks

EXAMPLE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "examples"


def measure(directory: str, only: str | None) -> dict[str, float]:
    paths = queuefile.discover(Path(directory))
    if only:
        paths = [p for p in paths if p.name == only]
    start = time.perf_counter()
    for path in paths:
        orjson.loads(path.read_bytes())
    reference = time.perf_counter() - start
    start = time.perf_counter()
    ws = workspace.load(paths)
    loaded = time.perf_counter()
    graph = ws.graph()
    built = time.perf_counter()
    assert ws.report.ok, ws.report.errors[:3]
    return {
        "tasks": len(graph),
        "load_validate_s": loaded - start,
        "graph_s": built - loaded,
        "total_s": built - start,
        "reference_parse_s": reference,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(directory: Path, only: str | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.load", "--child", str(directory), only or ""],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _show(name: str, r: dict[str, float], target_s: float | None, target_mb: float | None) -> None:
    print(f"{name}: {int(r['tasks'])} tasks")
    print(
        f"  load+validate {r['load_validate_s'] * 1000:7.1f} ms"
        f"   graph {r['graph_s'] * 1000:6.1f} ms"
        f"   total {r['total_s'] * 1000:7.1f} ms"
        + (
            f"   (target < {target_s * 1000:.0f} ms: {r['total_s'] / target_s:.2f}x of budget)"
            if target_s
            else ""
        )
    )
    print(
        f"  reference orjson.loads {r['reference_parse_s'] * 1000:6.1f} ms -> total is "
        f"{r['total_s'] / r['reference_parse_s']:.1f}x the raw parse"
    )
    print(
        f"  peak RSS {r['peak_rss_mb']:.1f} MB"
        + (
            f"   (target < {target_mb:.0f} MB: {r['peak_rss_mb'] / target_mb:.2f}x of budget)"
            if target_mb
            else ""
        )
    )


def run() -> None:
    print("== load, validate, graph (issue 2)")
    with tempfile.TemporaryDirectory() as tmp:
        edges = write_tracks(Path(tmp), 20, 1000)
        print(f"generated 20 tracks x 1,000 tasks, {edges} dependency edges (5% cross-track)")
        _show("20 x 1,000", _child(Path(tmp)), 0.5, 150)
    _show("km-queue-active.json", _child(EXAMPLE, "km-queue-active.json"), None, None)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], sys.argv[3] or None)))
    else:
        run()
