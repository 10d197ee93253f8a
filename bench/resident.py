"""A daemon holding 20 tracks of 1,000 tasks: its memory, and its CPU while every track waits.

The daemon runs as a child process (its RSS is its own). Every task waits on a gate task that
is ``blocked``, so nothing runs; the daemon is then watched for ``BENCH_IDLE_SECONDS``
(default 60), once watching the tracks directory (the default) and once not. Targets: RSS
under 150 MB, idle CPU under 0.15% of one core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import scratch_root
from .gen import write_tracks

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measure(tracks: Path, root: Path, seconds: float, env: dict[str, str]) -> dict[str, float]:
    """Start a daemon on ``tracks``; its start-up time, RSS and CPU share while idle."""
    log = root / "daemon.log"
    argv = [sys.executable, "-m", "orchestrator", "start", "--tracks", str(tracks)]
    argv += ["--state-dir", str(root / "state"), "--no-progress", "--log-format", "json"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    try:
        started = time.monotonic()
        while b'"daemon started"' not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() - started > 120:
                raise SystemExit(f"the daemon did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        ready = time.monotonic() - started
        time.sleep(2)  # let start-up work (the first write-back) finish
        rss = _rss_mb(proc.pid)
        cpu0, wall0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu = _cpu_seconds(proc.pid) - cpu0
        wall = time.monotonic() - wall0
    finally:
        proc.terminate()
        proc.wait(30)
    return {"ready": ready, "rss": rss, "share": cpu / wall * 100, "wall": wall}


def run() -> None:
    seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
    print("== resident daemon (issue 3): 20 tracks x 1,000 tasks loaded, every track waiting")
    if not Path("/proc/self/stat").exists():
        print("  (needs /proc: skipped)")
        return
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        root = Path(tmp)
        tracks = root / "tracks"
        write_tracks(tracks, 20, 1000, command="true", cross=0.05)
        gate = {"features": [{"id": "GATE", "status": "blocked", "command": "true"}]}
        (tracks / "gate.json").write_text(json.dumps(gate))
        for path in tracks.glob("track*.json"):
            doc = json.loads(path.read_text())
            doc["track"] = {"start_after": ["gate:GATE"]}
            path.write_text(json.dumps(doc, indent=2))
        # On Linux the watcher waits on inotify (no cost while idle); where watchfiles is
        # used instead, its thread looks for changes every few milliseconds.
        runs = [
            ("watching the tracks (default)", {}, 0.15),
            ("not watching (watch = false)", {"ORCHESTRATORD_WATCH": "false"}, 0.15),
        ]
        for label, env, target in runs:
            m = _measure(tracks, root, seconds, env)
            print(f"  {label}:")
            print(f"    start-up to ready: {m['ready']:.2f} s")
            print(f"    RSS: {m['rss']:.1f} MB (target < 150 MB: {m['rss'] / 150:.2f}x of budget)")
            print(
                f"    idle CPU over {m['wall']:.0f} s: {m['share']:.3f}% of a core "
                f"(target < {target}%: {m['share'] / target:.2f}x)"
            )


if __name__ == "__main__":
    run()
