"""The control API's server: an ASGI application over the running daemon's engine.

Handlers run on the daemon's event loop and read the engine directly; a request never waits
for anything but what it asked for (an order waits until its queue file is written, a cancel
until the attempt's processes are gone). Requests and responses are the models of
:mod:`orchestrator.control.api`. On TCP, :class:`Guard` admits only loopback ``Host`` headers
(no DNS rebinding) and requires the bearer token for every request that changes something
(for every request when the daemon listens beyond loopback).
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import anyio
import orjson
import structlog
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..errors import OrchestratorError, RefError, StateError
from ..model import TaskKey
from ..supervisor import Runtime
from . import api, board, orders
from .events import Hub
from .metrics import CONTENT_TYPE, Metrics
from .views import (
    EngineView,
    attempt_row,
    board_document,
    explain_lines,
    problem_info,
    resolve,
    status_document,
    task_detail,
)

log = structlog.get_logger("orchestratord")

HEARTBEAT = 15.0
"""Seconds between SSE comments that keep idle connections (and proxies) alive."""
LOG_POLL = 0.25
CHUNK = 65536
ORDER_WAIT_EXTRA = 10.0
PUBLIC_PATHS = frozenset({api.WEB_BOARD, "/favicon.ico"})

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class Context:
    rt: Runtime
    view: EngineView
    hub: Hub
    metrics: Metrics
    closing: anyio.Event


class _Failure(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def json_response(data: Any, status: int = 200) -> Response:
    body = data.model_dump_json().encode() if isinstance(data, BaseModel) else orjson.dumps(data)
    return Response(body, status_code=status, media_type="application/json")


def error_response(status: int, message: str, kind: str) -> Response:
    return json_response(api.ErrorBody(error=message, kind=kind), status)


def _handles_errors(func: Handler, rt: Runtime) -> Handler:
    @functools.wraps(func)
    async def wrapper(request: Request) -> Response:
        try:
            return await func(request)
        except StateError as exc:
            # The order could not be recorded: nothing more can be, and the daemon stops with
            # this error, as when a runner meets it (not a refusal it would run on after).
            rt.tg.start_soon(_stops_the_daemon, exc)
            return error_response(503, str(exc), "error")
        except _Failure as exc:
            return error_response(exc.status, str(exc), exc.kind)
        except RefError as exc:
            return error_response(404, str(exc), "not_found")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return error_response(400, f"bad request: {problems}", "bad_request")
        except OrchestratorError as exc:
            return error_response(409, str(exc), "refused")

    return wrapper


async def _stops_the_daemon(error: StateError) -> None:
    raise error


async def _body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    return model.model_validate_json(raw or b"{}")


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise _Failure(400, f"the {name!r} query parameter is required", "bad_request")
    return value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise _Failure(400, f"{name}={value!r}: expected a whole number", "bad_request") from None


class Handlers:
    """One method per endpoint."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.engine = ctx.rt.engine

    # ------------------------------------------------------------------ reading

    async def ping(self, request: Request) -> Response:
        meta = self.ctx.view.meta
        return json_response(
            api.Ping(pid=meta.pid, version=__version__, started_at=meta.started_at, http=meta.http)
        )

    async def status(self, request: Request) -> Response:
        track = request.query_params.get("track") or None
        if track is not None and track not in self.engine.tracks:
            known = ", ".join(self.engine.tracks) or "none"
            raise _Failure(404, f"unknown track {track!r}; known tracks: {known}", "not_found")
        now = self.engine.clock.now()
        return json_response(status_document(self.ctx.view, track=track, now=now))

    async def task(self, request: Request) -> Response:
        key = resolve(self.ctx.view, _param(request, "ref"))
        return json_response(task_detail(self.ctx.view, key))

    async def explain(self, request: Request) -> Response:
        key = resolve(self.ctx.view, _param(request, "ref"))
        return json_response({"ref": str(key), "lines": explain_lines(self.ctx.view, key)})

    async def board(self, request: Request) -> Response:
        doc = board_document(self.ctx.view, seq=self.ctx.hub.seq, now=self.engine.clock.now())
        return json_response(doc)

    async def board_markdown(self, request: Request) -> Response:
        doc = board_document(self.ctx.view, seq=self.ctx.hub.seq, now=self.engine.clock.now())
        return Response(board.render(doc), media_type="text/markdown; charset=utf-8")

    async def metrics(self, request: Request) -> Response:
        return Response(self.ctx.metrics.render(), media_type=CONTENT_TYPE)

    async def web(self, request: Request) -> Response:
        return Response(_page(), media_type="text/html; charset=utf-8")

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204)

    async def log(self, request: Request) -> Response:
        key = resolve(self.ctx.view, _param(request, "ref"))
        row = attempt_row(self.ctx.view, key, _int(request, "attempt"))
        number = row.number
        tail = _int(request, "tail")
        follow = _flag(request, "follow")
        stream = self._log_stream(key, number, row.log_path, tail, follow)
        return StreamingResponse(
            stream,
            media_type="text/plain; charset=utf-8",
            headers={"X-Attempt": str(number), "Cache-Control": "no-cache"},
        )

    def _attempt_running(self, key: TaskKey, number: int) -> bool:
        state = self.engine.states.get(key)
        return (
            state is not None
            and key in self.engine.running_keys()
            and state.owned.attempts + 1 == number
        )

    async def _log_stream(
        self, key: TaskKey, number: int, path: str, tail: int | None, follow: bool
    ) -> AsyncIterator[bytes]:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0
            if not follow or not self._attempt_running(key, number):
                yield f"[no log file at {path}]\n".encode()
                return
        position = max(0, size - tail) if tail else 0
        while True:
            chunk, position = await anyio.to_thread.run_sync(_read_from, path, position)
            if chunk:
                yield chunk
                continue
            if not follow or self.ctx.closing.is_set() or not self._attempt_running(key, number):
                chunk, position = await anyio.to_thread.run_sync(_read_from, path, position)
                if chunk:
                    yield chunk
                return
            with anyio.move_on_after(LOG_POLL):
                await self.ctx.closing.wait()

    async def events(self, request: Request) -> Response:
        # A browser's EventSource reconnects to the same address (its ``since``) and says in
        # ``Last-Event-ID`` what it already has: that is the newer of the two.
        since_text = request.headers.get("last-event-id") or request.query_params.get("since")
        since = int(since_text) if since_text and since_text.isdigit() else None
        return StreamingResponse(
            self._event_stream(since),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _event_stream(self, since: int | None) -> AsyncIterator[bytes]:
        with self.ctx.hub.subscribe(since) as subscription:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                try:
                    item = await subscription.next(HEARTBEAT)
                except anyio.EndOfStream:
                    return
                if item is None:
                    yield b": ping\n\n"
                    continue
                yield b"id: %d\ndata: %s\n\n" % (item["seq"], orjson.dumps(item))

    # ------------------------------------------------------------------ orders

    async def order(self, request: Request) -> Response:
        req = await _body(request, api.OrderRequest)
        engine = self.engine
        key = resolve(self.ctx.view, req.ref)
        running = key in engine.running_keys()
        status = engine.status(key)
        decision = orders.decide(req.order, str(key), status, running)
        if decision.refused:
            raise _Failure(409, decision.message, "refused")
        if decision.event is not None:
            engine.order(key, decision.event, orders.reason(req.order))
            log.info("order", order=req.order, task=str(key))
            if running and req.order != "retry":
                await self._until_ended(key)
            await self.ctx.rt.writeback.flush()
        after = engine.status(key)
        return json_response(
            api.OrderResult(
                ref=str(key), order=req.order, status=after.value, message=decision.message
            )
        )

    async def _until_ended(self, key: TaskKey) -> None:
        engine = self.engine
        with anyio.move_on_after(engine.cfg.settings.kill_grace + ORDER_WAIT_EXTRA):
            while key in engine.running_keys():
                await engine.wait_changed()

    async def pause(self, request: Request) -> Response:
        return await self._pause(await _body(request, api.PauseRequest), True)

    async def resume(self, request: Request) -> Response:
        return await self._pause(await _body(request, api.PauseRequest), False)

    async def _pause(self, req: api.PauseRequest, pause: bool) -> Response:
        engine = self.engine
        verb = "paused" if pause else "resumed"
        if req.track is None:
            was = engine.paused
            if pause:
                engine.pause_daemon(req.reason or "paused with `orchestratord pause`")
            else:
                engine.resume_daemon()
            changed = was != engine.paused
            message = f"the daemon is {verb}" if changed else f"the daemon was {verb} already"
            if pause and changed:
                message += "; running attempts finish, nothing new starts"
            return json_response(api.PauseResult(track=None, paused=engine.paused, message=message))
        if req.track not in engine.tracks:
            known = ", ".join(engine.tracks) or "none"
            raise _Failure(404, f"unknown track {req.track!r}; known tracks: {known}", "not_found")
        was = engine.graph.track_paused(req.track)
        if pause:
            engine.pause_track(req.track, req.reason or "paused with `orchestratord pause`")
        else:
            engine.resume_track(req.track)
        await self.ctx.rt.writeback.flush()
        now = engine.graph.track_paused(req.track)
        message = (
            f"track {req.track} is {verb}"
            if was != now
            else f"track {req.track} was {verb} already"
        )
        if pause and was != now:
            message += "; its running attempts finish, nothing new starts"
        return json_response(api.PauseResult(track=req.track, paused=now, message=message))

    async def reload(self, request: Request) -> Response:
        control = self.ctx.rt.control
        if control.reload is None:
            raise _Failure(503, "the daemon is not ready to reload yet", "refused")
        await control.reload()
        await self.ctx.rt.writeback.flush()
        problems = [problem_info(p) for p in self.ctx.view.problems()]
        message = "every queue file was read again"
        if problems:
            message += f"; {len(problems)} problem(s): the last good version of those files stays"
        return json_response({"message": message, "problems": problems})

    async def stop(self, request: Request) -> Response:
        req = await _body(request, api.StopRequest)
        running = len(self.engine.running_keys())
        grace = 0.0 if req.force else self.engine.cfg.settings.shutdown_grace
        self.ctx.rt.control.request_stop(force=req.force)
        if running:
            message = f"stopping: {running} running attempt(s) get up to {grace:g} s to finish"
        else:
            message = "stopping"
        return json_response(api.StopResult(message=message, running=running, grace=grace))


def _read_from(path: str, position: int) -> tuple[bytes, int]:
    """Up to :data:`CHUNK` bytes from ``position``; a trimmed log restarts from its start."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < position:
                handle.seek(0)
                data = handle.read(CHUNK)
                return b"\n[... the log was trimmed; from its new start ...]\n" + data, len(data)
            handle.seek(position)
            data = handle.read(CHUNK)
    except OSError:
        return b"", position
    return data, position + len(data)


@functools.cache
def _page() -> str:
    return resources.files("orchestrator.control").joinpath("board.html").read_text("utf-8")


def build_app(ctx: Context) -> Starlette:
    h = Handlers(ctx)
    get = [
        (api.PING, h.ping),
        (api.STATUS, h.status),
        (api.TASK, h.task),
        (api.EXPLAIN, h.explain),
        (api.BOARD, h.board),
        (api.BOARD_MARKDOWN, h.board_markdown),
        (api.LOG, h.log),
        (api.EVENTS, h.events),
        (api.METRICS, h.metrics),
        (api.WEB_BOARD, h.web),
        ("/favicon.ico", h.favicon),
    ]
    post = [
        (api.ORDER, h.order),
        (api.PAUSE, h.pause),
        (api.RESUME, h.resume),
        (api.RELOAD, h.reload),
        (api.STOP, h.stop),
    ]
    routes = [Route(p, _handles_errors(f, ctx.rt), methods=["GET", "HEAD"]) for p, f in get]
    routes += [Route(p, _handles_errors(f, ctx.rt), methods=["POST"]) for p, f in post]
    return Starlette(routes=routes)


class Guard:
    """TCP only: loopback ``Host`` headers, and the bearer token where it is required."""

    def __init__(self, app: ASGIApp, token: str, port: int, *, remote: bool) -> None:
        self.app = app
        self.token = token.encode()
        self.remote = remote
        self.hosts = {f"{host}:{port}".encode() for host in ("127.0.0.1", "localhost", "[::1]")} | {
            b"127.0.0.1",
            b"localhost",
            b"[::1]",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not self.remote and headers.get(b"host", b"").lower() not in self.hosts:
            message = "the control API answers only to loopback host names"
            await _refuse(error_response(403, message, "forbidden"), scope, receive, send)
            return
        reading = scope["method"] in ("GET", "HEAD")
        # The page itself holds no data: it must load before it can send the token.
        page = reading and scope.get("path") in PUBLIC_PATHS
        needed = not reading or (self.remote and not page)
        if needed and not self._authorized(scope, headers, reading):
            message = (
                "this request needs the daemon's token: send 'Authorization: Bearer TOKEN' "
                "(the token is in the state directory's http.token)"
            )
            await _refuse(error_response(401, message, "unauthorized"), scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope, headers: dict[bytes, bytes], reading: bool) -> bool:
        given = headers.get(b"authorization", b"")
        if given.lower().startswith(b"bearer "):
            return hmac.compare_digest(given[7:].strip(), self.token)
        if reading:
            # EventSource cannot send headers: a read may carry the token as ?token=.
            for pair in scope.get("query_string", b"").split(b"&"):
                name, _, value = pair.partition(b"=")
                if name == b"token":
                    return hmac.compare_digest(value, self.token)
        return False


async def _refuse(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a refused request without reading its body, and close the connection.

    The client may still be sending that body. Left open, the connection would be closed by
    the server once it sees the unread body, possibly under the client's next request on it
    ("server disconnected without sending a response").
    """
    response.headers["connection"] = "close"
    await response(scope, receive, send)
