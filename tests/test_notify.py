"""Notifications: webhooks (with retries, and a dead one that never slows the daemon) and the
command hook, with real servers and real processes."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from orchestrator import config
from orchestrator.clock import SystemClock
from orchestrator.config import Notify
from orchestrator.control import notify
from orchestrator.control.notify import Notifier
from orchestrator.errors import ConfigError
from orchestrator.model import Status, TaskKey
from orchestrator.store import EventRow

from .conftest import WriteTrack
from .control_harness import running_daemon

pytestmark = pytest.mark.anyio


@dataclass
class HookServer:
    """An HTTP endpoint that fails its first ``failures`` requests, or never answers."""

    failures: int = 0
    silent: bool = False
    requests: int = 0
    accepted: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    received: anyio.Event = field(default_factory=anyio.Event)
    url: str = ""

    async def handle(self, stream: SocketStream) -> None:
        self.accepted += 1
        async with stream:
            if self.silent:
                await anyio.sleep_forever()
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            found = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            length = int(found.group(1)) if found else 0
            while len(body) < length:
                body += await stream.receive()
            self.requests += 1
            status = 500 if self.requests <= self.failures else 200
            if status == 200:
                self.bodies.append(json.loads(body))
                self.received.set()
                self.received = anyio.Event()
            reply = f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            await stream.send(reply.encode())


@asynccontextmanager
async def serving(server: HookServer) -> AsyncIterator[HookServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}/hook"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


async def test_a_webhook_gets_the_events_it_asked_for_after_retries(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "OK", "command": "true"},
            {"id": "BAD", "command": "exit 2", "max_iterations": 1},
        ],
    )
    async with serving(HookServer(failures=1)) as server:
        hooks = {"webhooks": [{"url": server.url, "events": ["task_failed", "task_complete"]}]}
        async with running_daemon(tracks_dir, notify=hooks) as live:
            with anyio.fail_after(30):
                while len(server.bodies) < 2:
                    await server.received.wait()
            await live.until_status("t:OK", Status.COMPLETE)
    assert server.requests == 3  # the first answer was a 500: that event went again
    kinds = sorted((b["type"], b["ref"]) for b in server.bodies)
    assert kinds == [("task_complete", "t:OK"), ("task_failed", "t:BAD")]
    failed = next(b for b in server.bodies if b["type"] == "task_failed")
    assert failed["text"] == "t:BAD FAILED after 1 attempt: the command exited with status 2"
    assert failed["data"] == {"reason": "the command exited with status 2", "attempts": 1}
    assert isinstance(failed["seq"], int)
    assert failed["source"].startswith("orchestratord ")


async def test_a_dead_webhook_never_slows_scheduling(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "STOP_GRACE", 0.2)
    chain = [
        {"id": f"C{i}", "command": "true", "dependencies": [f"C{i - 1}"] if i else []}
        for i in range(30)
    ]
    write_track("t", chain)
    async with serving(HookServer(silent=True)) as server:
        # Every event, a 50 s timeout and 3 retries: one event alone would hold a waiting
        # daemon for minutes, and the test for far longer than its 60 s limit.
        hooks = {"webhooks": [{"url": server.url, "events": ["*"], "timeout": 50, "retries": 3}]}
        async with running_daemon(tracks_dir, notify=hooks) as live:
            await live.until_status("t:C29", Status.COMPLETE)
            assert all(
                live.engine.graph.status(TaskKey("t", f"C{i}")) is Status.COMPLETE
                for i in range(30)
            )
            assert server.accepted == 1  # the first event is still being delivered
            assert server.requests == 0


async def test_the_command_hook_gets_the_event_in_its_environment(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    out = tmp_path / "notified"
    script = (
        "import os, sys; "
        "open(sys.argv[1], 'a').write(os.environ['ORCHESTRATORD_EVENT'] + '|' "
        "+ os.environ['ORCHESTRATORD_EVENT_REF'] + '|' + os.environ['ORCHESTRATORD_EVENT_SUMMARY']"
        " + '|' + os.environ['ORCHESTRATORD_EVENT_JSON'] + '\\n')"
    )
    write_track("t", [{"id": "STUCK", "command": "echo '<blocked>no credentials</blocked>'"}])
    hooks = {"command": {"argv": [sys.executable, "-c", script, str(out)]}}
    async with running_daemon(tracks_dir, notify=hooks) as live:
        await live.until_status("t:STUCK", Status.BLOCKED)
        await live.poll(out.exists)
    # The default events: what needs a person, and the daemon stopping (sent as it stops).
    blocked, stopping = out.read_text().splitlines()
    kind, ref, summary, body = blocked.split("|", 3)
    assert (kind, ref, summary) == ("task_blocked", "t:STUCK", "t:STUCK is BLOCKED: no credentials")
    assert json.loads(body)["data"] == {"reason": "no credentials"}
    assert stopping.startswith(
        "daemon_stopping||orchestratord is stopping (0 running): asked to stop|"
    )


async def test_a_full_queue_drops_the_oldest_and_says_so() -> None:
    dropped: list[str] = []
    settings = Notify.model_validate(
        {"webhooks": [{"url": "http://127.0.0.1:9/", "events": ["task_failed"]}], "queue": 2}
    )
    notifier = Notifier(settings, on_failure=dropped.append)
    now = SystemClock().now().isoformat()
    for seq in range(1, 5):
        kind = "task_failed" if seq != 2 else "task_started"
        notifier.offer(EventRow(seq, now, 0.0, kind, TaskKey("t", "A"), {}, "t"))
    [(_, queue)] = notifier._webhooks
    assert [item["seq"] for item in queue.items] == [3, 4]
    assert dropped == ["http://127.0.0.1:9/"]


def test_notification_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown event 'task_faild'; did you mean 'task_failed'"):
        config.load(
            flags={"notify": {"webhooks": [{"url": "http://x/", "events": ["task_faild"]}]}}, env={}
        )
    with pytest.raises(ConfigError, match="starts with http:// or https://"):
        config.load(flags={"notify": {"webhooks": [{"url": "ftp://x/"}]}}, env={})
    default = config.load(flags={"notify": {"command": {"argv": ["notify-send"]}}}, env={})
    assert default.settings.notify.command is not None
    assert "task_failed" in default.settings.notify.command.events
    assert "budget_exceeded" in default.settings.notify.command.events
    # Every kind the daemon journals can be named (tests/conftest.py checks each one emitted).
    named = config.load(
        flags={"notify": {"webhooks": [{"url": "http://x/", "events": ["usage_limit"]}]}}, env={}
    )
    assert list(named.settings.notify.webhooks[0].events) == ["usage_limit"]
