"""A real Ray head node on 127.0.0.1 for the ``ray`` tests: one per test session.

Started with ``ray start --head --block`` in a session of its own, on free ports, with its
own temporary directory; stopped by its pid (SIGTERM, then SIGKILL to its process group), after
which no process of it may be left. Tests skip when Ray is not installed (``make test-ray``
installs it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .executor_contract import process_gone

AGENT_SLOTS = 2
CPUS = 8
"""Logical CPUs the head offers (runs reserve one each by default)."""
START_TIMEOUT = 120.0


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free_range(size: int, taken: Collection[int]) -> int:
    """The first port of ``size`` consecutive ports free right now (for Ray's workers), none
    of them in ``taken`` (ports chosen for the head's other parts: free now too, since only
    Ray binds them, and Ray refuses to start when its worker range holds one)."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000 - size)
        if any(base <= port < base + size for port in taken):
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range for Ray's workers")


def session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Ray's own name its temp dir)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


@dataclass
class RayHead:
    address: str
    """The Jobs API (dashboard) URL."""
    gcs: str
    temp_dir: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.address + path, timeout=5) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        try:
            self.get("/api/version")
            nodes = self.get("/api/v0/nodes")
        except (OSError, ValueError):
            return False
        assert isinstance(nodes, dict)
        rows = nodes.get("data", {}).get("result", {}).get("result", [])
        return any(row.get("state") == "ALIVE" for row in rows)

    def leftovers(self) -> list[int]:
        sid = self.proc.pid
        mine = processes_mentioning(str(self.temp_dir))
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and session_of(int(entry.name)) == sid:
                pid = int(entry.name)
                if not process_gone(pid) and pid not in mine:
                    mine.append(pid)
        return mine

    def stop(self) -> list[int]:
        """Stop the head by its pid; return what is left of it afterwards (nothing, we hope)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        deadline = time.monotonic() + 30
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = self.leftovers()
        for pid in left:  # do not leave them to the next test run, but report them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left


def start_head() -> RayHead:
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray is None:
        pytest.skip("the `ray` command is not installed (make test-ray installs it)")
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: socket paths
    ports = {
        "--port": _free_port(),
        "--dashboard-port": _free_port(),
        "--ray-client-server-port": _free_port(),
        "--node-manager-port": _free_port(),
        "--object-manager-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
        "--metrics-export-port": _free_port(),
    }
    workers = _free_range(64, ports.values())
    argv = [
        ray,
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={CPUS}",
        "--num-gpus=0",
        f"--resources={json.dumps({'agent_slot': AGENT_SLOTS})}",
        f"--min-worker-port={workers}",
        f"--max-worker-port={workers + 63}",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_JOB_STOP_WAIT_TIME_S="5")
    log = open(temp_dir / "head.log", "wb")  # noqa: SIM115 - closed with the head
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    log.close()
    head = RayHead(
        f"http://127.0.0.1:{ports['--dashboard-port']}",
        f"127.0.0.1:{ports['--port']}",
        temp_dir,
        proc,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while not head.ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            output = (temp_dir / "head.log").read_text(errors="replace")[-3000:]
            head.stop()
            raise RuntimeError(f"the Ray head did not come up:\n{output}")
        time.sleep(0.25)
    return head


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One Ray head for the whole session; at the end, no process of it may be left."""
    if not ray_installed():
        pytest.skip("Ray is not installed (make test-ray installs the `ray` extra)")
    head = start_head()
    try:
        yield head
    finally:
        left = head.stop()
        shutil.rmtree(head.temp_dir, ignore_errors=True)
        assert not left, f"processes of the Ray head left after stopping it: {left}"
