"""The daemon with tracks on a Ray cluster (a real head on 127.0.0.1): queues run to the end,
a restarted daemon re-attaches to its jobs instead of running them again, git workspaces."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import WriteTrack
from .daemon_harness import run_once
from .process_harness import alive, daemon, stop, wait_for
from .ray_head import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.anyio]


def ray_settings(head: RayHead, **extra: Any) -> dict[str, Any]:
    return {"address": head.address, "poll_interval": 0.1, **extra}


RETRIED = (
    'if [ -s "$ORCHESTRATORD_FAILURE_FILE" ]; then cp "$ORCHESTRATORD_FAILURE_FILE" seen; '
    "echo B2 >> ledger; else echo first-try; exit 7; fi"
)
"""Fails once; the second attempt finds the failure in the file its environment names."""


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger"
    return path.read_text().split() if path.exists() else []


def note(ident: str, tmp_path: Path) -> str:
    return f"echo {ident} >> {tmp_path / 'ledger'}; echo ran $ORCHESTRATORD_TASK_ID"


def processes(state: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(state / "state.db") as db:
        rows = db.execute("SELECT role, executor, run_id FROM processes ORDER BY id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_a_multi_track_queue_runs_to_completion_on_ray(
    ray_head: RayHead, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "backend",
        {
            "track": {"executor": "ray", "concurrency": 2, "workdir": ".."},
            "features": [
                {"id": "B1", "command": note("B1", tmp_path), "verify": "test -s ledger"},
                {"id": "B2", "command": RETRIED, "max_iterations": 2},
                {"id": "B3", "command": note("B3", tmp_path), "dependencies": ["B1", "B2"]},
            ],
        },
    )
    write_track(
        "ui",
        {
            "track": {
                "executor": {"type": "ray", "resources": {"agent_slot": 1}},
                "start_after": ["backend:B1"],
                "workdir": "..",
            },
            "features": [
                {"id": "U1", "command": note("U1", tmp_path), "verify": "test -s ledger"},
                {"id": "U2", "command": note("U2", tmp_path), "dependencies": ["backend:B3"]},
            ],
        },
    )
    write_track(
        "docs",
        {
            "track": {"executor": "local"},
            "features": [{"id": "D1", "command": note("D1", tmp_path)}],
        },
    )
    run = await run_once(tracks_dir, executor="ray", ray=ray_settings(ray_head), max_parallel=4)
    assert run.code == 0
    order = ledger(tmp_path)
    assert sorted(order) == ["B1", "B2", "B3", "D1", "U1", "U2"]
    assert order.index("U1") > order.index("B1")
    assert order.index("B3") > max(order.index("B1"), order.index("B2"))
    assert order.index("U2") > order.index("B3")
    for name, total in (("backend", 3), ("ui", 2), ("docs", 1)):
        doc = run.doc(name)
        assert doc["summary"]["complete"] == total, doc
    assert run.task("backend", "B2")["attempts"] == 2
    assert "the command exited with status 7" in (tmp_path / "seen").read_text()
    log = (run.state / "logs" / "ui" / "U1.attempt-1.log").read_text()
    assert "=== ui:U1 attempt 1 ===" in log
    assert "ran U1\n" in log
    assert "--- PASS (1 verification command)" in log
    where = {(role, executor.split(":", 1)[0]) for role, executor, _ in processes(run.state)}
    assert ("run", "ray") in where
    assert ("verify 1", "ray") in where
    assert ("run", "local") in where  # the docs track ran here


async def test_a_run_no_node_can_hold_fails_the_attempt_at_once(
    ray_head: RayHead, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "big",
        {
            "track": {"executor": {"type": "ray", "resources": {"agent_slot": 99}}},
            "features": [{"id": "X", "command": "true", "max_iterations": 1}],
        },
    )
    run = await run_once(tracks_dir, ray=ray_settings(ray_head))
    task = run.task("big", "X")
    assert task["status"] == "failed"
    assert "can ever run it" in task["error"]
    assert "agent_slot=99" in task["error"]


def slow(gate: Path) -> str:
    """A run that prints ticks 00-05, waits for ``gate`` to exist, then prints ticks 06-29 (0.1 s
    apart) and its promise: it cannot end before the test lets it."""
    return (
        f'{sys.executable} -c "import time, os\n'
        "open('runs', 'a').write('x')\n"
        "for i in range(30):\n"
        f"    while i == 6 and not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
        "    print(f'tick {i:02}', flush=True); time.sleep(0.1)\n"
        "print('<promise>DONE</promise>')\""
    )


def config_file(tmp_path: Path, head: RayHead) -> Path:
    path = tmp_path / "orchestratord.toml"
    path.write_text(f'executor = "ray"\n[ray]\naddress = "{head.address}"\npoll_interval = 0.1\n')
    return path


def attempts(state: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(state / "state.db") as db:
        rows = db.execute("SELECT number, state, verdict FROM attempts ORDER BY id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_restarted_daemon_reattaches_and_keeps_tailing(
    ray_head: RayHead, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, how: str
) -> None:
    """``kill``: the daemon is killed (-9); ``stop``: it stops on SIGTERM, leaving its job."""
    work, gate = tmp_path / "work", tmp_path / "gate"
    work.mkdir()
    write_track(
        "t",
        {
            "track": {"workdir": "../work"},
            "features": [
                {
                    "id": "SLOW",
                    "command": slow(gate),
                    "completion_promise": "DONE",
                    "verify": "test -s runs",
                }
            ],
        },
    )
    state = tmp_path / "state"
    cfg = config_file(tmp_path, ray_head)
    log = state / "logs" / "t" / "SLOW.attempt-1.log"
    first = daemon(tracks_dir, state, "--config", str(cfg))
    try:
        wait_for(lambda: log.exists() and "tick 05" in log.read_text(), timeout=60)
        if how == "kill":
            first.kill()
            first.wait(10)
        else:
            assert stop(first) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    ticks = [line for line in log.read_text().splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {i:02}" for i in range(6)]
    assert attempts(state) == [(1, "running", None)]
    gate.touch()  # the run goes on with no daemon watching, then with the next one
    second = daemon(tracks_dir, state, "--config", str(cfg), "--once")
    try:
        assert second.wait(90) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    assert (work / "runs").read_text() == "x", "the run was attached to, not started again"
    text = log.read_text()
    assert [line for line in text.splitlines() if line.startswith("tick")] == [
        f"tick {i:02}" for i in range(30)
    ]
    assert text.count("=== t:SLOW attempt 1 ===") == 1
    assert text.count("$ ") == 1
    assert "--- PASS (1 verification command)" in text
    assert attempts(state) == [(1, "finished", "PASS")]
    doc = json.loads((tracks_dir / "t.json").read_text())
    assert doc["features"][0]["status"] == "complete"
    assert doc["features"][0]["attempts"] == 1
    with sqlite3.connect(state / "state.db") as db:
        kinds = [r[0] for r in db.execute("SELECT type FROM events ORDER BY seq")]
    assert "attempt_reattached" in kinds
    assert "attempt_interrupted" not in kinds
    assert not alive(first.pid)


def git(*args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    return subprocess.run([*base, *args], capture_output=True, text=True, check=True).stdout


async def test_git_workspace_changes_arrive_as_a_fetched_branch(
    ray_head: RayHead, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    git("init", "-q", "--bare", str(origin))
    git("clone", "-q", str(origin), str(clone))
    (clone / "app").mkdir()
    (clone / "app" / "version").write_text("1\n")
    git("-C", str(clone), "add", "-A")
    git("-C", str(clone), "commit", "-qm", "seed")
    git("-C", str(clone), "push", "-q", "origin", "HEAD:main")
    write_track(
        "g",
        {
            "track": {
                "executor": {"type": "ray", "workspace": "git"},
                "workdir": "../clone/app",
            },
            "features": [
                {
                    "id": "BUMP",
                    "command": "echo 2 > version",
                    "verify": "grep -qx 2 version",
                }
            ],
        },
    )
    run = await run_once(tracks_dir, ray=ray_settings(ray_head, work_root=str(tmp_path / "node")))
    assert run.code == 0, run.task("g", "BUMP")
    finished = [data for kind, _, data in run.events if kind == "attempt_finished"]
    assert finished[0]["verdict"] == "PASS"
    branch, commit = finished[0]["branch"], finished[0]["commit"]
    assert branch.startswith("orchestratord/")
    assert git("-C", str(clone), "rev-parse", branch).strip() == commit
    assert git("-C", str(clone), "show", f"{branch}:app/version") == "2\n"
    assert (clone / "app" / "version").read_text() == "1\n", "the daemon's tree is untouched"


def test_sigterm_still_stops_a_local_track_with_ray_configured(
    ray_head: RayHead, tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """Detaching is for remote runs only: local runs end with the daemon, as before."""
    pidfile = tmp_path / "pid"
    write_track(
        "local",
        {
            "track": {"executor": "local"},
            "features": [{"id": "L", "command": f"echo $$ > {pidfile}; exec sleep 60"}],
        },
    )
    state = tmp_path / "state"
    proc = daemon(tracks_dir, state, "--config", str(config_file(tmp_path, ray_head)))
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "", timeout=30)
        child = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    wait_for(lambda: not alive(child), timeout=10)
    assert attempts(state) == [(1, "interrupted", None)]
