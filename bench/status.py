"""``status`` against a daemon running 20,000 tasks (20 tracks x 1,000), target under 200 ms.

A real ``orchestratord start`` in a child process runs the tasks (``sleep`` commands, four at
a time, the rest waiting), with the control service as users get it. Measured from this
process over the daemon's Unix socket:

* the status request through the client (``Client.status``: request, daemon's answer,
  validation against the schema), warm connection, many times: the figure the target is for;
* the same through a fresh client each time (what one ``orchestratord status`` does);
* ``orchestratord status --json`` as a whole command (Python start-up and imports included);
* references measured in the same run: ``/v1/ping`` (the transport and HTTP floor), and the
  answer without a daemon (reading and checking the 20,000 tasks from the files).

And what the control service (event hub, events.jsonl, metrics, the API) costs the daemon's
dispatch: daemon CPU per task for 3,000 ``true`` tasks with and without it, alternated, the
median of three runs each.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import config
from orchestrator.control import api
from orchestrator.control.client import Client
from orchestrator.control.service import control_service
from orchestrator.control.views import OfflineView, status_document

from .common import run_daemon, scratch_root
from .gen import write_tracks

TRACKS = 20
PER_TRACK = 1000
ROUNDS = 40
COMMAND_ROUNDS = 5
TARGET_MS = 200.0


def _timed(func: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def _line(name: str, figures: list[float]) -> str:
    p50 = statistics.median(figures)
    p90 = figures[max(0, int(len(figures) * 0.9) - 1)]
    return f"    {name:34s} p50 {p50:7.1f} ms   p90 {p90:7.1f} ms   max {figures[-1]:7.1f} ms"


def _start(tracks: Path, state: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATORD_")}
    env.update(ORCHESTRATORD_SHUTDOWN_GRACE="1", ORCHESTRATORD_KILL_GRACE="1")
    argv = [sys.executable, "-m", "orchestrator", "start", "--tracks", str(tracks)]
    argv += ["--state-dir", str(state), "--no-progress", "--log-level", "warning"]
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def _wait_running(state: Path, want: int, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if (state / api.INFO_NAME).exists():
            with Client.unix(state) as client:
                if client.status()["daemon"]["running_attempts"] >= want:
                    return time.perf_counter() - start
        time.sleep(0.1)
    raise RuntimeError("the daemon did not start its attempts in time")


def run() -> None:
    total = TRACKS * PER_TRACK
    print(f"== status (issue 5): a daemon running {total:,} tasks, {TRACKS} tracks")
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        root = Path(tmp)
        tracks, state = root / "tracks", root / "state"
        write_tracks(tracks, TRACKS, PER_TRACK, command="sleep 600", cross=0.05)
        proc = _start(tracks, state)
        try:
            ready = _wait_running(state, 4)
            print(f"  daemon up and running 4 attempts after {ready:.1f} s")
            with Client.unix(state) as client:
                doc = client.status()
                assert doc["totals"]["total"] == total
                ping = _timed(client.ping, ROUNDS)
                warm = _timed(client.status, ROUNDS)
                one_track = _timed(lambda: client.status("track07"), ROUNDS)

            def fresh() -> None:
                with Client.unix(state) as client:
                    client.status()

            cold = _timed(fresh, ROUNDS)
            argv = [sys.executable, "-m", "orchestrator", "status", "--json"]
            argv += ["--tracks", str(tracks), "--state-dir", str(state)]
            command = _timed(
                lambda: subprocess.run(argv, check=True, capture_output=True), COMMAND_ROUNDS
            )
            cfg = config.load(
                flags={"tracks": str(tracks), "state_dir": str(root / "no-daemon")}, env={}
            )

            def offline() -> None:
                view = OfflineView.load(cfg)
                try:
                    status_document(view)
                finally:
                    view.close()

            files = _timed(offline, 3)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(_line("status, warm client (target)", warm))
    print(_line("status of one track", one_track))
    print(_line("status, fresh client each time", cold))
    print(_line("`orchestratord status --json`", command))
    print(_line("reference: /v1/ping", ping))
    print(_line("reference: no daemon, from files", files))
    p50 = statistics.median(warm)
    print(
        f"    status p50 {p50:.1f} ms: {p50 / TARGET_MS:.2f}x the 200 ms target; "
        f"{statistics.median(files) / p50:.0f}x faster than reading the files; "
        f"{p50 / statistics.median(ping):.1f}x a ping"
    )
    print(f"    the document: {len(json.dumps(doc)):,} bytes")
    _service_cost()


def _service_cost() -> None:
    tasks = 3000
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(3):
        for label, services in (("without", []), ("with", [control_service])):
            with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
                tracks = Path(tmp) / "tracks"
                write_tracks(tracks, 10, tasks // 10, command="true", cross=0.05)
                result = run_daemon(tracks, Path(tmp) / "state", services=services, max_parallel=2)
                cpu[label].append(result["cpu"] / tasks * 1000)
    bare, full = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    print(
        f"  control service on dispatch ({tasks:,} tasks): daemon CPU per task {bare:.3f} ms "
        f"without, {full:.3f} ms with ({full / bare:.2f}x)"
    )


if __name__ == "__main__":
    run()
