"""Talking to the service manager: readiness, status, watchdog, reload and stop (sd_notify).

systemd gives a ``Type=notify`` service the address of a datagram socket in ``NOTIFY_SOCKET``
(a path, or ``@name`` in the abstract namespace) and, with ``WatchdogSec=``, the watchdog
interval in ``WATCHDOG_USEC`` (meant for the process ``WATCHDOG_PID`` when that is set). A
message is newline-separated ``KEY=VALUE`` lines in one datagram: no library is needed.

:class:`Notifier` sends them, and nothing at all without ``NOTIFY_SOCKET``. :class:`NotifyService`
is the daemon service that uses it. It is started last, so that ``READY=1`` means every track
file is loaded and every earlier service (the control socket among them) is up:

- ``READY=1`` with a ``STATUS=`` line once the daemon is up;
- ``STATUS=running 2, complete 40/113, 1 failed`` kept current, at most once a second;
- ``WATCHDOG=1`` from the event loop every half watchdog interval: a stalled loop stops the
  pings and systemd restarts the daemon;
- ``RELOADING=1`` then ``READY=1`` around every reload (SIGHUP or the control API): it wraps
  ``Control.reload``, calling the reload it found inside;
- ``STOPPING=1``, with ``EXTEND_TIMEOUT_USEC`` covering the shutdown grace, when a stop begins.

The three variables are taken out of the environment when read, so that agents and the
commands they run never inherit them.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from .live import ReloadResult
from .model import Status, TaskKey
from .service import stop_timeout

if TYPE_CHECKING:
    from .daemon import Engine
    from .supervisor import Control, Runtime

log = structlog.get_logger("orchestratord")

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"
STATUS_INTERVAL = 1.0
"""Seconds between two ``STATUS=`` messages at most (changes in between are coalesced)."""


def socket_address(value: str | None) -> str | None:
    """The address to send to: a path, or ``@name`` as an abstract address; else None."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(usec: str | None, pid: str | None, own_pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half the interval, if the watchdog is ours."""
    if not usec:
        return None
    try:
        micro = int(usec)
        if pid and int(pid) != own_pid:
            return None
    except ValueError:
        return None
    return micro / 2_000_000 if micro > 0 else None


class Notifier:
    """Sends notification messages to the service manager's socket, if there is one."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one message; a failure is logged once (the daemon does not depend on it)."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "cannot notify the service manager",
                    socket=self.address.replace("\0", "@"),
                    error=exc.strerror or str(exc),
                )
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_line(engine: Engine) -> str:
    """One line for ``systemctl status``: ``running 2, complete 40/113, 1 failed``."""
    graph = engine.graph
    counts: Counter[Status] = Counter()
    for name in graph.tracks:
        counts.update(graph.status_counts(name))
    total = sum(counts.values())
    parts = [
        f"running {sum(engine.running.values())}",
        f"complete {counts[Status.COMPLETE]}/{total}",
    ]
    parts += [f"{counts[s]} {s.value}" for s in (Status.FAILED, Status.BLOCKED) if counts[s]]
    if counts[Status.SKIPPED]:
        parts.append(f"{counts[Status.SKIPPED]} skipped")
    if engine.draining:
        parts.insert(0, "stopping")
    elif engine.paused:
        parts.insert(0, "paused")
    return ", ".join(parts)


@dataclass(eq=False)
class NotifyService:
    """The daemon service that keeps the service manager told (see the module docstring)."""

    notifier: Notifier
    watchdog: float | None = None
    status_interval: float = STATUS_INTERVAL
    sent_status: str = ""
    _changed: anyio.Event = field(default_factory=anyio.Event, repr=False)
    _stopping: bool = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> NotifyService:
        """Read (and remove) ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        raw = env.pop(ENV_SOCKET, None)
        usec, pid = env.pop(ENV_WATCHDOG_USEC, None), env.pop(ENV_WATCHDOG_PID, None)
        address = socket_address(raw)
        if raw and address is None:
            log.warning(f"{ENV_SOCKET} is neither a path nor @name; not notifying", value=raw)
        interval = watchdog_interval(usec, pid, os.getpid()) if address else None
        return cls(Notifier(address), interval)

    async def __call__(
        self, rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if not self.notifier.enabled:
            task_status.started()
            return
        engine = rt.engine
        self._wrap_reload(rt.control, engine)
        engine.listeners.append(self._on_event)
        self.sent_status = status_line(engine)
        self.notifier.send("READY=1", f"STATUS={self.sent_status}")
        log.debug("service manager told: ready", watchdog=self.watchdog)
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                if self.watchdog is not None:
                    tg.start_soon(self._pings, self.watchdog)
                tg.start_soon(self._statuses, engine)
                await rt.control.stop.wait()
                self._stop(rt)
        finally:
            self._stop(rt)
            engine.listeners.remove(self._on_event)
            self.notifier.close()

    def _on_event(self, kind: str, subject: TaskKey | str | None, data: Mapping[str, Any]) -> None:
        self._changed.set()

    async def _pings(self, interval: float) -> None:
        while True:
            self.notifier.send("WATCHDOG=1")
            await anyio.sleep(interval)

    async def _statuses(self, engine: Engine) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            self._send_status(engine)
            await anyio.sleep(self.status_interval)

    def _send_status(self, engine: Engine, *lines: str) -> None:
        text = status_line(engine)
        if lines or text != self.sent_status:
            self.notifier.send(*lines, f"STATUS={text}")
            self.sent_status = text

    def _wrap_reload(self, control: Control, engine: Engine) -> None:
        inner = control.reload

        async def reload() -> ReloadResult:
            now = time.monotonic_ns() // 1000
            self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={now}", "STATUS=reloading")
            try:
                return await inner() if inner is not None else ReloadResult()
            finally:
                self._send_status(engine, "READY=1")

        control.reload = reload

    def _stop(self, rt: Runtime) -> None:
        if self._stopping:
            return
        self._stopping = True
        settings = rt.engine.cfg.settings
        budget = stop_timeout(settings.shutdown_grace, settings.kill_grace)
        self.notifier.send(
            "STOPPING=1",
            f"EXTEND_TIMEOUT_USEC={budget * 1_000_000}",
            f"STATUS=stopping: {sum(rt.engine.running.values())} attempt(s) running",
        )
