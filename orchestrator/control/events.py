"""The event hub: every journaled event, in order, to everyone who follows the daemon.

The store's journal is the one record of what happened: every transition is committed there
together with the change. The hub follows the journal. Woken by the engine's announcements, it
reads what was journaled since it last looked (one query per wake, however many events) and
hands each event, in order, to the event log (``events.jsonl`` in the state directory, rotated
at ``events_max_bytes``), to the Server-Sent Events subscribers, and to the consumers
(metrics, notifications, the board file).

Following the journal rather than the announcements means nothing journaled is missed, not
even what was recorded before the hub started (queue files found invalid at start-up), and
every event carries its sequence number: the SSE stream uses it as the event id, so a client
that reconnects with ``Last-Event-ID`` misses nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import eventtext
from ..daemon import Engine
from ..model import TaskKey
from ..store import EventRow

log = structlog.get_logger("orchestratord")

BATCH = 500
SUBSCRIBER_BUFFER = 2000
"""Events a subscriber may fall behind by before it is dropped (it reconnects and replays)."""

Consumer = Callable[[EventRow], None]
Message = dict[str, Any]


def message(row: EventRow) -> Message:
    """An event as the outside sees it (``api.Event``), without the task's current state."""
    return {
        "seq": row.seq,
        "at": row.at,
        "type": row.type,
        "track": row.track,
        "task": row.key.id if row.key is not None else None,
        "ref": str(row.key) if row.key is not None else None,
        "data": dict(row.data),
        "text": eventtext.sentence(row.type, row.key or row.track, row.data),
    }


def summary(event: Mapping[str, Any]) -> str:
    """One sentence for people (:mod:`orchestrator.eventtext`) of an event as the outside sees
    it (:func:`message`)."""
    subject = event.get("ref") or event.get("track")
    return eventtext.sentence(event["type"], subject, event.get("data") or {})


class EventLog:
    """``events.jsonl``: one JSON line per event, rotated to ``events.jsonl.1`` when full."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._handle: Any = None
        self._size = 0

    def last_seq(self) -> int | None:
        """The sequence number of the last event written (None: no usable log)."""
        for candidate in (self.path, self.path.with_name(self.path.name + ".1")):
            seq = _last_seq_in(candidate)
            if seq is not None:
                return seq
        return None

    def write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self._handle is None:
            self._open()
        for line in lines:
            if self._size + len(line) > self.max_bytes and self._size > 0:
                self._rotate()
            self._handle.write(line)
            self._size += len(line)
        self._handle.flush()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._handle = os.fdopen(fd, "ab")
        self._size = os.fstat(fd).st_size

    def _rotate(self) -> None:
        self._handle.close()
        self.rotate()
        self._open()

    def rotate(self) -> None:
        """Start a new log; the current one becomes ``events.jsonl.1``."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _last_seq_in(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return int(orjson.loads(line)["seq"])
    return None


class Subscription:
    """One follower of the stream: first the journal since ``since``, then live events."""

    def __init__(
        self, hub: Hub, receive: MemoryObjectReceiveStream[Message], since: int | None
    ) -> None:
        self.hub = hub
        self._receive = receive
        self._after = since if since is not None else hub.seq
        self._upto = hub.seq
        self._backlog: list[Message] = []

    async def next(self, idle: float) -> Message | None:
        """The next event; None after ``idle`` seconds without one.

        Raises :class:`anyio.EndOfStream` when the hub closes or dropped this subscriber.
        """
        if not self._backlog and self._after < self._upto:
            rows = self.hub.engine.store.events(self._after, BATCH)
            self._backlog = [self.hub.with_state(message(r)) for r in rows if r.seq <= self._upto]
            self._after = rows[-1].seq if rows else self._upto
        if self._backlog:
            await anyio.lowlevel.checkpoint()
            return self._backlog.pop(0)
        with anyio.move_on_after(idle):
            while True:
                item = await self._receive.receive()
                if item["seq"] > self._upto:
                    return item
        return None


class Hub:
    """Follows the journal and fans every event out, in order."""

    def __init__(self, engine: Engine, log_path: Path, max_bytes: int) -> None:
        self.engine = engine
        self.events_log = EventLog(log_path, max_bytes)
        self.seq = 0
        """The last event published."""
        self.consumers: list[Consumer] = []
        self._subscribers: set[MemoryObjectSendStream[Message]] = set()
        self._wake = anyio.Event()
        self.closed = False

    def poke(self, *_: object) -> None:
        """The engine's listener: something was journaled."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the journal until :meth:`close` (or cancellation, which closes too)."""
        engine = self.engine
        written = self.events_log.last_seq()
        if written is not None and written > engine.store.last_seq():
            # A new state database (the old one moved aside): its numbering starts again, and
            # so does the log, the old one kept as events.jsonl.1.
            self.events_log.rotate()
            written = None
        self.seq = written if written is not None else engine.boot_seq
        engine.listeners.append(self.poke)
        try:
            self.drain()
            task_status.started()
            while not self.closed:
                await self._wake.wait()
                self._wake = anyio.Event()
                if not self.closed:
                    self.drain()
        finally:
            with contextlib.suppress(ValueError):
                engine.listeners.remove(self.poke)
            self.close()

    def drain(self) -> None:
        """Publish everything journaled since the last look (synchronous, in order)."""
        store = self.engine.store
        while True:
            rows = store.events(self.seq, BATCH)
            if not rows:
                return
            lines = []
            for row in rows:
                msg = message(row)
                lines.append(orjson.dumps(msg) + b"\n")
                self._publish(row, msg)
            self.seq = rows[-1].seq
            try:
                self.events_log.write(lines)
            except OSError as exc:
                path = str(self.events_log.path)
                log.warning("cannot write the event log", path=path, error=str(exc))

    def _publish(self, row: EventRow, msg: Message) -> None:
        if row.seq > self.engine.boot_seq:
            for consumer in self.consumers:
                try:
                    consumer(row)
                except Exception:  # a consumer's bug must not stop the others or the daemon
                    log.exception("event consumer failed", consumer=repr(consumer), event=row.type)
        if self._subscribers:
            live = self.with_state(msg)
            for send in list(self._subscribers):
                try:
                    send.send_nowait(live)
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    # Too far behind (or gone): drop it; a client reconnects and replays.
                    self._subscribers.discard(send)
                    send.close()

    def with_state(self, msg: Message) -> Message:
        """The event with the task's state now (for the web board)."""
        ref = msg.get("ref")
        if ref is None:
            return msg
        key = TaskKey(msg["track"], msg["task"])
        state = self.engine.states.get(key)
        if state is None:
            return msg
        owned = state.owned
        status = self.engine.graph.status(key) if key in self.engine.graph else owned.status
        return msg | {
            "task_state": {
                "status": status.value,
                "attempts": owned.attempts,
                "iteration": state.iteration,
                "verdict": owned.verification_verdict,
                "error": owned.error,
            }
        }

    @contextlib.contextmanager
    def subscribe(self, since: int | None = None) -> Iterator[Subscription]:
        """A :class:`Subscription`; ``since`` replays the journal after that sequence number."""
        send, receive = anyio.create_memory_object_stream[Message](SUBSCRIBER_BUFFER)
        if self.closed:
            send.close()
        else:
            self._subscribers.add(send)
        try:
            yield Subscription(self, receive, since)
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

    def close(self) -> None:
        """Publish the last events, then end every subscription and the event log."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.drain()
        self.closed = True
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()
        self.events_log.close()
        self._wake.set()
