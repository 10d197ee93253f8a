"""sd_notify: readiness, status, watchdog, reload and stop, against real datagram sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from orchestrator.daemon import Engine
from orchestrator.executors.local import LocalExecutor
from orchestrator.sdnotify import Notifier, NotifyService, socket_address, watchdog_interval
from orchestrator.supervisor import Control, serve

from .conftest import WriteTrack
from .daemon_harness import settings
from .process_harness import DEADLINE, daemon, stop


class Manager:
    """The service manager's end: a bound datagram socket and the messages it got."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(DEADLINE)
        self.address = address
        self.messages: list[dict[str, str]] = []

    @property
    def env_value(self) -> str:
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(65536).decode()
        message = dict(line.split("=", 1) for line in data.split("\n"))
        self.messages.append(message)
        return message

    def until(self, what: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        """Receive until a message matches (each recv times out after the deadline)."""
        while True:
            message = self.receive()
            if what(message):
                return message

    def drain(self) -> None:
        """Take in every message already sent."""
        self.sock.setblocking(False)
        try:
            while True:
                self.receive()
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(DEADLINE)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["abstract", "path"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    if request.param == "abstract":
        address = f"\0orchestratord-test-{uuid.uuid4().hex}"
    else:
        address = str(tmp_path / "notify.sock")
    end = Manager(address)
    yield end
    end.close()


def test_addresses_and_watchdog_interval() -> None:
    assert socket_address("@systemd/notify") == "\0systemd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("relative/path") is None
    assert socket_address("@") is None
    assert socket_address(None) is None
    assert watchdog_interval("30000000", None, 42) == 15.0
    assert watchdog_interval("30000000", "42", 42) == 15.0
    assert watchdog_interval("30000000", "7", 42) is None  # meant for another process
    assert watchdog_interval("0", None, 42) is None
    assert watchdog_interval("soon", None, 42) is None
    assert watchdog_interval(None, None, 42) is None


def test_reading_the_environment_takes_the_variables_out(manager: Manager) -> None:
    env = {
        "NOTIFY_SOCKET": manager.env_value,
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid()),
        "HOME": "/home/ana",
    }
    service = NotifyService.from_environ(env)
    assert env == {"HOME": "/home/ana"}  # children never inherit them
    assert service.watchdog == 1.0
    assert service.notifier.send("STATUS=hello")
    service.notifier.close()
    assert manager.receive() == {"STATUS": "hello"}
    without = NotifyService.from_environ({"WATCHDOG_USEC": "2000000"})
    assert not without.notifier.enabled
    assert without.watchdog is None


def test_a_vanished_socket_is_reported_once_and_not_fatal(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert not notifier.send("READY=1")
    assert not notifier.send("WATCHDOG=1")
    notifier.close()


@pytest.mark.anyio
async def test_in_process_ready_status_reload_and_stop(
    manager: Manager, tracks_dir: Path, write_track: WriteTrack, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    write_track(
        "t",
        [
            {"id": "A", "command": "true"},
            {"id": "B", "command": f"while [ ! -f {gate} ]; do sleep 0.02; done"},
            {"id": "C", "command": "exit 3", "max_iterations": 1},
        ],
    )
    cfg = settings(tracks_dir, tmp_path / "state")
    control = Control()
    service = NotifyService(Notifier(manager.address), watchdog=0.05, status_interval=0.01)

    async def later() -> None:
        await anyio.to_thread.run_sync(
            manager.until, lambda m: m.get("STATUS", "").startswith("running 1, complete 1/3")
        )
        assert control.reload is not None
        await control.reload()
        await anyio.to_thread.run_sync(manager.until, lambda m: "READY" in m)
        gate.touch()
        await anyio.to_thread.run_sync(
            manager.until, lambda m: m.get("STATUS") == "running 0, complete 2/3, 1 failed"
        )
        control.request_stop()

    async with LocalExecutor(1.0) as executor, anyio.create_task_group() as tg:

        def ready(engine: Engine) -> None:
            tg.start_soon(later)

        code = await serve(
            cfg,
            executor,
            control=control,
            handle_signals=False,
            services=[service],
            on_ready=ready,
        )
    assert code == 0
    manager.drain()
    kinds = [next(iter(m)) for m in manager.messages]
    first = manager.messages[0]
    assert first["READY"] == "1"
    assert first["STATUS"].startswith("running 0, complete 0/3")
    reloading = kinds.index("RELOADING")
    assert manager.messages[reloading]["MONOTONIC_USEC"].isdigit()
    # The reload takes a moment (it waits for the files to be quiet): watchdog pings and status
    # lines go on meanwhile; READY comes back before the daemon stops.
    back = next(i for i, m in enumerate(manager.messages) if i > reloading and "READY" in m)
    stops = next(i for i, m in enumerate(manager.messages) if "STOPPING" in m)
    assert reloading < back < stops
    stopping = next(m for m in manager.messages if "STOPPING" in m)
    assert (
        int(stopping["EXTEND_TIMEOUT_USEC"])
        > (cfg.settings.shutdown_grace + cfg.settings.kill_grace) * 1_000_000
    )
    assert "WATCHDOG" in kinds


def test_a_real_daemon_notifies_its_service_manager(
    manager: Manager, tracks_dir: Path, write_track: WriteTrack, tmp_path: Path
) -> None:
    seen_env = tmp_path / "env.txt"
    gate = tmp_path / "gate"
    write_track(
        "t",
        [
            {"id": "DONE", "command": f'echo "[$NOTIFY_SOCKET$WATCHDOG_USEC]" > {seen_env}'},
            {"id": "WAIT", "command": f"while [ ! -f {gate} ]; do sleep 0.05; done"},
        ],
    )
    config_file = tmp_path / "orchestratord.toml"
    config_file.write_text("max_parallel = 2\n")
    log = tmp_path / "daemon.log"
    proc = daemon(
        tracks_dir,
        tmp_path / "state",
        "--config",
        str(config_file),
        log=log,
        extra_env={"NOTIFY_SOCKET": manager.env_value, "WATCHDOG_USEC": "200000"},
    )
    try:
        ready = manager.until(lambda m: "READY" in m)
        assert ready["STATUS"].startswith("running 0, complete 0/2")
        manager.until(lambda m: m.get("STATUS", "").startswith("running 1, complete 1/2"))
        pings = sum("WATCHDOG" in m for m in manager.messages)
        while pings < 3:  # every 0.1 s, from the event loop
            pings += "WATCHDOG" in manager.receive()
        config_file.write_text("max_parallel = 3\n")
        proc.send_signal(signal.SIGHUP)
        manager.until(lambda m: "RELOADING" in m)
        manager.until(lambda m: "READY" in m)
        gate.touch()
        manager.until(lambda m: m.get("STATUS", "").startswith("running 0, complete 2/2"))
        proc.send_signal(signal.SIGTERM)
        manager.until(lambda m: "STOPPING" in m)
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            stop(proc, signal.SIGKILL)
    assert seen_env.read_text() == "[]\n"  # the agents' environment has none of it
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    attempt = next(line for line in lines if line["event"] == "attempt")
    assert {"task", "track", "attempt", "verdict", "duration"} <= attempt.keys()
    assert attempt["task"] == "t:DONE"
    assert attempt["verdict"] == "PASS"
    reloaded = next(line for line in lines if line["event"] == "config reloaded")
    assert reloaded["changed"] == ["max_parallel"]


@pytest.mark.anyio
async def test_watchdog_pings_come_from_the_event_loop(
    tracks_dir: Path, write_track: WriteTrack, tmp_path: Path
) -> None:
    """While the loop is stalled no ping goes out: systemd sees the stall and restarts."""
    write_track("t", [{"id": "A", "command": "true"}])
    manager = Manager(str(tmp_path / "notify.sock"))
    cfg = settings(tracks_dir, tmp_path / "state")
    control = Control()
    service = NotifyService(Notifier(manager.address), watchdog=0.01)
    during: list[int] = []

    def stall() -> None:
        manager.drain()
        before = len(manager.messages)
        time.sleep(0.3)  # the event loop is blocked: 30 intervals
        manager.drain()
        during.append(sum("WATCHDOG" in m for m in manager.messages[before:]))

    async def scenario() -> None:
        await anyio.to_thread.run_sync(manager.until, lambda m: "WATCHDOG" in m)
        stall()
        await anyio.to_thread.run_sync(manager.until, lambda m: "WATCHDOG" in m)
        control.request_stop()

    async with LocalExecutor(1.0) as executor, anyio.create_task_group() as tg:

        def ready(engine: Engine) -> None:
            tg.start_soon(scenario)

        await serve(
            cfg, executor, control=control, handle_signals=False, services=[service], on_ready=ready
        )
    manager.close()
    assert during == [0]
