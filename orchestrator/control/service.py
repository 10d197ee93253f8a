"""The control service: the part of the daemon that others talk to and hear from.

Started with the daemon (a :class:`~orchestrator.supervisor.Service`), it runs the event hub,
the metrics, the notifications, the board file, and the control API on a Unix socket in the
state directory (mode 0600) and, when ``http`` is set, on a TCP address (loopback unless
``http_allow_remote``). It reports itself ready only once the socket listens, so whatever
waits for the daemon to be ready (a service manager) can talk to it at once.

The daemon's own files here: ``control.sock``; ``http.token`` (mode 0600, kept across
restarts), the bearer token for requests over TCP that change something; ``control.json``
(mode 0600), where the daemon listens, removed when it stops; ``events.jsonl``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson
import structlog
from anyio.abc import TaskStatus
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

from .. import __version__
from ..clock import iso
from ..errors import ConfigError, StateError
from ..supervisor import Runtime
from . import api
from .boardfile import BoardFile
from .events import Hub
from .metrics import Metrics
from .notify import Notifier
from .server import Context, Guard, build_app
from .views import DaemonMeta, EngineView

log = structlog.get_logger("orchestratord")

SOCKET_PATH_MAX = 100
"""Unix socket paths longer than this (the limit is 104 to 108 bytes) are bound through the
directory's descriptor on Linux."""
GRACEFUL = 2.0


class _ToStructlog(logging.Handler):
    """The HTTP server's warnings and errors, in the daemon's log."""

    def emit(self, record: logging.LogRecord) -> None:
        log.warning("control API", problem=record.getMessage(), exc_info=record.exc_info)


def _server_logger() -> logging.Logger:
    logger = logging.getLogger("orchestratord.http")
    if not logger.handlers:
        logger.addHandler(_ToStructlog())
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits a Unix socket's short limit."""
    if len(os.fsencode(str(path))) <= SOCKET_PATH_MAX:
        yield str(path)
        return
    if not sys.platform.startswith("linux"):
        raise OSError(f"{path}: too long for a Unix socket; choose a shorter --state-dir")
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def bind_unix(path: Path) -> socket.socket:
    """Listen on ``path`` (mode 0600), replacing a socket a dead daemon left behind.

    The state directory's lock is held: any socket already there is a dead daemon's.
    """
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
        else:
            raise StateError(f"{path}: in the way of the control socket; move it elsewhere")
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket_address(path) as address:
            sock.bind(address)
        # Not listening yet: nobody can connect before the mode is right.
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise StateError(
            f"{path}: cannot listen for the control API: {exc.strerror or exc}"
        ) from None
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ConfigError(
            f"cannot serve the control API on {shown}: {exc.strerror or exc}; choose another "
            "address with --http (port 0 picks a free one)"
        ) from None
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def ensure_token(state_dir: Path) -> str:
    """The bearer token for TCP requests: kept across restarts, mode 0600, made when missing."""
    path = state_dir / api.TOKEN_NAME
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077 == 0:
            token = path.read_text(encoding="ascii").strip()
            if len(token) >= 32:
                return token
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def http_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


async def _serve(app: ASGIApp, sock: socket.socket, closing: anyio.Event) -> None:
    """Serve ``app`` on a listening socket until ``closing`` is set (not before)."""
    config = HypercornConfig()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.graceful_timeout = GRACEFUL
    config.accesslog = None
    config.errorlog = _server_logger()
    with anyio.CancelScope(shield=True):
        # starlette and hypercorn spell the ASGI types differently; the protocol is the same.
        await hypercorn_serve(app, config, shutdown_trigger=closing.wait)  # type: ignore[arg-type]


async def control_service(
    rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """The daemon service: see the module's docstring."""
    cfg = rt.cfg
    settings = cfg.settings
    state_dir = cfg.state_dir
    engine = rt.engine
    meta = DaemonMeta(started_at=iso(engine.clock.now()))
    view = EngineView(engine, meta)
    hub = Hub(engine, state_dir / api.EVENTS_LOG_NAME, settings.events_max_bytes)
    metrics = Metrics(engine)
    notifier = Notifier(
        settings.notify, on_failure=lambda hook: metrics.undelivered.labels(hook).inc()
    )
    hub.consumers.append(metrics.observe)
    if notifier.active:
        hub.consumers.append(notifier.offer)
    keeper = None
    if settings.board_path:
        keeper = BoardFile(view, Path(settings.board_path), settings.writeback_delay)
        hub.consumers.append(keeper.mark)
    closing = anyio.Event()
    ctx = Context(rt, view, hub, metrics, closing)
    socket_path = state_dir / api.SOCKET_NAME
    sockets: list[socket.socket] = []
    try:
        unix = bind_unix(socket_path)
        sockets.append(unix)
        tcp: socket.socket | None = None
        token = ensure_token(state_dir)
        if settings.http is not None:
            host, port = api.parse_address(settings.http, allow_remote=settings.http_allow_remote)
            tcp = bind_tcp(host, port)
            sockets.append(tcp)
            meta.http = http_url(host, tcp.getsockname()[1])
        _write_private(
            state_dir / api.INFO_NAME,
            orjson.dumps(
                {
                    "pid": meta.pid,
                    "version": __version__,
                    "started_at": meta.started_at,
                    "socket": str(socket_path),
                    "http": meta.http,
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
            + "\n",
        )
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            await tg.start(notifier.run)
            if keeper is not None:
                await tg.start(keeper.run)
            app = build_app(ctx)
            tg.start_soon(_serve, app, unix, closing)
            if tcp is not None:
                remote = settings.http_allow_remote
                guarded = Guard(app, token, tcp.getsockname()[1], remote=remote)
                tg.start_soon(_serve, guarded, tcp, closing)
                log.info("web board", url=meta.http)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                # The last events (the daemon stopping) reach every consumer first; then the
                # streams end and the servers close; notifications get their grace.
                hub.close()
                notifier.finish()
                closing.set()
    finally:
        for sock in sockets:
            sock.close()
        with contextlib.suppress(OSError):
            (state_dir / api.INFO_NAME).unlink()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(socket_path.lstat().st_mode):
                socket_path.unlink()
