"""Write-back is batched: 1,000 tasks of one file, against a write per transition.

Runs 1,000 quick tasks in one track (concurrency 2) and counts the file writes the daemon
made for its ~3,000 transitions; the reference is the measured time of one synchronous
full-file write of that file (``json.dumps(indent=2)`` plus an atomic replace), which caps
dispatch at 1 / that time if done per transition.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from orchestrator.queuefile import write_atomic

from .common import run_daemon, scratch_root
from .gen import write_tracks


def run() -> None:
    print("== write-back (issue 3): one file of 1,000 tasks")
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        root = Path(tmp)
        tracks = root / "tracks"
        write_tracks(tracks, 1, 1000, command="true", cross=0)
        path = next(tracks.glob("*.json"))
        doc = json.loads(path.read_text())
        start = time.perf_counter()
        for _ in range(20):
            write_atomic(root / "copy.json", json.dumps(doc, indent=2))
        per_write = (time.perf_counter() - start) / 20
        result = run_daemon(tracks, root / "state", max_parallel=2)
        engine = result["engine"]
        writes = engine.stats["file_writes"]
        transitions = 3 * 1000
        rate = 1000 / result["wall"]
        cap = 1 / per_write / 3
        print(f"  one synchronous full-file write: {per_write * 1000:.1f} ms")
        print(f"    -> at most {cap:.0f} tasks/s if the file were written per transition")
        per = transitions / max(writes, 1)
        print(f"  daemon: {rate:.0f} tasks/s, {writes} writes for {transitions} transitions")
        print(f"    ({per:.0f} transitions per write)")
        final = json.loads(path.read_text())
        size = os.path.getsize(path) // 1024
        print(f"  summary after the run: {final['summary']} ({size} KB file)")


if __name__ == "__main__":
    run()
