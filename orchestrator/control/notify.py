"""Notifications: webhooks and a command hook, told of the events a person should know about.

Each hook has its own bounded queue and its own worker. Handing an event over never waits: a
hook that is slow or dead fills its queue, and then its oldest events are dropped (counted and
logged), so scheduling never slows down for a notification. A webhook gets the event as JSON
(with a ``text`` sentence, which chat services such as Slack and Mattermost display), within
``timeout`` seconds, with ``retries`` more tries after a failure (exponential back-off); a
4xx answer other than 408 and 429 is not retried. The command hook runs ``argv`` with the
event in its environment, in a session of its own, ended after ``timeout``.

When the daemon stops, queued notifications get a few seconds to go out.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import orjson
import structlog
from anyio.abc import ByteReceiveStream, TaskStatus

from .. import __version__, procs
from ..config import Notify, NotifyCommand, Webhook
from ..store import EventRow
from .events import message, summary

log = structlog.get_logger("orchestratord")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STOP_GRACE = 5.0
"""Seconds queued notifications get to go out when the daemon stops."""


@dataclass(slots=True)
class _Queue:
    name: str
    events: frozenset[str]
    limit: int
    items: deque[dict[str, Any]] = field(default_factory=deque)
    wake: anyio.Event = field(default_factory=anyio.Event)

    def wants(self, kind: str) -> bool:
        return "*" in self.events or kind in self.events

    def push(self, item: dict[str, Any]) -> bool:
        """Queue an event; False when the oldest had to be dropped to make room."""
        dropped = len(self.items) >= self.limit
        if dropped:
            self.items.popleft()
        self.items.append(item)
        self.wake.set()
        return not dropped

    async def first(self) -> dict[str, Any]:
        """The oldest event, left in the queue until :meth:`done` (a delivery cut short by
        the daemon stopping is tried again in the last round)."""
        while not self.items:
            self.wake = anyio.Event()
            await self.wake.wait()
        return self.items[0]

    def done(self, item: dict[str, Any]) -> None:
        if self.items and self.items[0] is item:
            self.items.popleft()


def _text(event: dict[str, Any]) -> str:
    """The event's sentence: the one it carries (:func:`.events.message`), else made now."""
    text = event.get("text")
    return text if isinstance(text, str) and text else summary(event)


def payload(event: dict[str, Any]) -> dict[str, Any]:
    """What a webhook receives: the event, a sentence, and who sent it."""
    return {**event, "text": _text(event), "source": f"orchestratord {__version__}"}


def environment(event: dict[str, Any]) -> dict[str, str]:
    """The command hook's environment: the event, whole and in parts."""
    env = dict(os.environ)
    env.update(
        ORCHESTRATORD_EVENT=event["type"],
        ORCHESTRATORD_EVENT_JSON=orjson.dumps(event).decode(),
        ORCHESTRATORD_EVENT_SUMMARY=_text(event),
        ORCHESTRATORD_EVENT_SEQ=str(event["seq"]),
        ORCHESTRATORD_EVENT_AT=event["at"],
        ORCHESTRATORD_EVENT_TRACK=event.get("track") or "",
        ORCHESTRATORD_EVENT_TASK=event.get("task") or "",
        ORCHESTRATORD_EVENT_REF=event.get("ref") or "",
    )
    return env


class Notifier:
    """Delivers events to the configured hooks, in the background."""

    def __init__(
        self,
        settings: Notify,
        on_failure: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.on_failure = on_failure or (lambda hook: None)
        self._transport = transport
        self._webhooks = [
            (hook, _Queue(hook.url, frozenset(hook.events), settings.queue))
            for hook in settings.webhooks
        ]
        command = settings.command
        self._command = (
            (command, _Queue("command", frozenset(command.events), settings.queue))
            if command is not None
            else None
        )
        self.delivered = 0
        self._finishing = False
        self._finish_called = anyio.Event()
        self._drained = anyio.Event()

    def finish(self) -> None:
        """No more events will come: deliver what is queued (within :data:`STOP_GRACE`) and
        end :meth:`run`."""
        self._finishing = True
        self._finish_called.set()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._finishing and not any(q.items for q in self._queues):
            self._drained.set()

    @property
    def _queues(self) -> list[_Queue]:
        queues = [queue for _, queue in self._webhooks]
        if self._command is not None:
            queues.append(self._command[1])
        return queues

    @property
    def active(self) -> bool:
        return bool(self._queues)

    def offer(self, row: EventRow) -> None:
        """The event hub's consumer: queue the event for every hook that wants it (no wait)."""
        queues = [q for q in self._queues if q.wants(row.type)]
        if not queues:
            return
        event = message(row)
        for queue in queues:
            if not queue.push(event):
                log.warning("notification queue full: oldest event dropped", hook=queue.name)
                self.on_failure(queue.name)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until :meth:`finish`; then give what is still queued :data:`STOP_GRACE`
        seconds. Deliveries are never cut short by the daemon's own cancellation: a
        notification half sent would be sent twice, or not at all."""
        if not self.active:
            task_status.started()
            return
        async with httpx.AsyncClient(transport=self._transport) as client:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    for hook, queue in self._webhooks:
                        tg.start_soon(self._webhook_worker, client, hook, queue)
                    if self._command is not None:
                        tg.start_soon(self._command_worker, *self._command)
                    task_status.started()
                    await self._drained_or_late()
                    tg.cancel_scope.cancel()

    async def _drained_or_late(self) -> None:
        await self._finish_called.wait()
        with anyio.move_on_after(STOP_GRACE):
            await self._drained.wait()

    # ------------------------------------------------------------------ webhooks

    async def _webhook_worker(
        self, client: httpx.AsyncClient, hook: Webhook, queue: _Queue
    ) -> None:
        while True:
            event = await queue.first()
            await self._post(client, hook, event, hook.retries)
            queue.done(event)
            self._check_drained()

    async def _post(
        self, client: httpx.AsyncClient, hook: Webhook, event: dict[str, Any], retries: int
    ) -> bool:
        body = orjson.dumps(payload(event))
        headers = {"content-type": "application/json", **hook.headers}
        problem = ""
        for attempt in range(retries + 1):
            if attempt:
                await anyio.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1)))
            try:
                with anyio.fail_after(hook.timeout):
                    response = await client.post(
                        hook.url, content=body, headers=headers, timeout=hook.timeout
                    )
            except (httpx.HTTPError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code < 300:
                self.delivered += 1
                return True
            problem = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break
        log.warning(
            "webhook not delivered",
            url=hook.url,
            event=event["type"],
            seq=event["seq"],
            problem=problem,
        )
        self.on_failure(hook.url)
        return False

    # ------------------------------------------------------------------ command hook

    async def _command_worker(self, command: NotifyCommand, queue: _Queue) -> None:
        while True:
            event = await queue.first()
            await self._run_command(command, event)
            queue.done(event)
            self._check_drained()

    async def _run_command(self, command: NotifyCommand, event: dict[str, Any]) -> bool:
        try:
            process = await anyio.open_process(
                command.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=environment(event),
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("notification command cannot start", argv=command.argv, error=str(exc))
            self.on_failure("command")
            return False
        errors = bytearray()
        code: int | None = None
        async with process:
            with anyio.move_on_after(command.timeout):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_collect, process.stderr, errors)
                    code = await process.wait()
                    tg.cancel_scope.cancel()
            if code is None:
                with anyio.CancelScope(shield=True):
                    procs.terminate_group(process.pid, signal.SIGKILL)
                    await process.wait()
        if code is None:
            log.warning(
                "notification command timed out", argv=command.argv, timeout=command.timeout
            )
        elif code != 0:
            log.warning(
                "notification command failed",
                argv=command.argv,
                status=code,
                stderr=errors.decode("utf-8", "replace").strip()[:400],
            )
        else:
            self.delivered += 1
            return True
        self.on_failure("command")
        return False


async def _collect(stream: ByteReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    async for chunk in stream:
        if len(into) < 8192:
            into.extend(chunk)
