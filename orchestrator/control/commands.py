"""The commands that look at a daemon or steer it: status, explain, board, logs, and orders.

With a daemon running (one holds the state directory's lock) they ask it over its control
socket. Without one, the commands that only read answer from the queue files together with
the state database a stopped daemon left, and say that the daemon is not running; the commands
that change something fail with exit status 3 and say how to start the daemon (or which edit
of the queue file gives the same order), except `resume`, which resumes a stopped daemon that
was paused so that it starts unpaused.

Exit statuses: 0 success; 1 the order was refused, a ref names no task, or the daemon does
not answer; 2 usage or configuration errors; 3 no daemon is running (for commands that change
something).
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.live import Live

from .. import lock, statusview
from ..config import Config
from ..errors import DaemonNotRunningError, DaemonUnreachableError, OrchestratorError
from . import api, board
from .client import Client

if TYPE_CHECKING:
    from .views import OfflineView

T = TypeVar("T")

WATCH_TICK = 1.0
STOP_MARGIN = 15.0

Settings = Callable[[click.Context, dict[str, Any]], Config]


def _echo_err(text: str) -> None:
    click.echo(f"orchestratord: {text}", err=True)


@contextmanager
def _offline(cfg: Config) -> Iterator[OfflineView]:
    if not cfg.tracks_dir.is_dir():
        raise OrchestratorError(
            f"{cfg.tracks_dir}: tracks directory not found; pass --tracks DIR or set "
            "ORCHESTRATORD_TRACKS"
        )
    # Imported here: asking a running daemon needs none of the machinery to read files.
    from .views import OfflineView  # noqa: PLC0415

    view = OfflineView.load(cfg)
    try:
        yield view
    finally:
        view.close()


def read(
    cfg: Config,
    online: Callable[[Client], T],
    offline: Callable[[OfflineView], T],
    *,
    quiet: bool = False,
) -> T:
    """Ask the daemon; with none (or one that does not answer), read the files and the store."""
    pid = lock.holder(cfg.state_dir)
    if pid is not None:
        try:
            with Client.unix(cfg.state_dir) as client:
                return online(client)
        except DaemonUnreachableError as exc:
            _echo_err(f"{exc}; reading the files and the state database instead (pid {pid})")
    with _offline(cfg) as view:
        if pid is None and not quiet:
            what = "the queue files" + (" and the state database" if view.store else "")
            click.echo(f"daemon not running: read from {what}", err=True)
        return offline(view)


def daemon(cfg: Config, offline_hint: str = "") -> Client:
    """The running daemon's client; :class:`DaemonNotRunningError` when there is none."""
    if lock.holder(cfg.state_dir) is None:
        raise DaemonNotRunningError(
            f"no daemon is running with state dir {cfg.state_dir}; start one with "
            "`orchestratord start` (with the same --tracks and --state-dir)" + offline_hint
        )
    return Client.unix(cfg.state_dir)


def register(cli: click.Group, common: Callable[[Any], Any], settings: Settings) -> None:
    """Add these commands to the ``orchestratord`` group."""

    def config_of(ctx: click.Context, kwargs: dict[str, Any]) -> Config:
        return settings(ctx, {k: kwargs.pop(k) for k in ("config_file", "tracks", "state_dir")})

    def command(name: str, **extra: Any) -> Callable[[Callable[..., Any]], Any]:
        def wrap(func: Callable[..., Any]) -> Any:
            @functools.wraps(func)  # keeps the docstring and the parameters declared on func
            def run(ctx: click.Context, /, **kwargs: Any) -> None:
                try:  # a config file that does not load is an error message, not a traceback
                    cfg = config_of(ctx, kwargs)
                    func(cfg, **kwargs)
                except OrchestratorError as exc:
                    _echo_err(str(exc))
                    sys.exit(exc.exit_code)

            return cli.command(name, **extra)(common(click.pass_context(run)))

        return wrap

    # ------------------------------------------------------------------ status

    @command("status")
    @click.argument("track", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document.")
    @click.option("--watch", is_flag=True, help="Keep showing it, redrawn as things change.")
    def status(cfg: Config, track: str | None, as_json: bool, watch: bool) -> None:
        """Show every track (or TRACK): counts, what runs, what is next, blocked and failed.

        Without a daemon, it reads the queue files and the state database. --json prints the
        document described in docs/commands.md; with --watch, one compact document per change.
        """
        if watch:
            _watch(cfg, track, as_json)
            return
        data = status_data(cfg, track)
        if as_json:
            click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        else:
            console = Console()
            # Into a pipe or a file, each line whole: wrapped at 80 columns, "failed 1" was
            # split over two lines and a reason over several, which grep cannot find.
            console.soft_wrap = not console.is_terminal
            statusview.print_status(data, console)

    # ------------------------------------------------------------------ explain

    @command("explain")
    @click.argument("ref")
    def explain_cmd(cfg: Config, ref: str) -> None:
        """Say why the task REF (ID or track:ID) is or is not ready."""

        def offline(view: OfflineView) -> list[str]:
            from .views import explain_lines, resolve  # noqa: PLC0415

            return explain_lines(view, resolve(view, ref))

        lines = read(cfg, lambda c: c.explain(ref).lines, offline)
        for line in lines:
            click.echo(line)

    # ------------------------------------------------------------------ board

    @command("board")
    @click.option("--web", is_flag=True, help="Print the live web board's address instead.")
    def board_cmd(cfg: Config, web: bool) -> None:
        """Print the kanban board of every track in Markdown (a lane per track)."""
        if web:
            click.echo(web_url(cfg))
            return

        def offline(view: OfflineView) -> str:
            from .views import board_document  # noqa: PLC0415

            return board.render(board_document(view, seq=0))

        text = read(cfg, lambda c: c.board_markdown(), offline)
        click.echo(text, nl=False)

    # ------------------------------------------------------------------ logs

    @command("logs")
    @click.argument("ref")
    @click.option("--attempt", "-n", type=click.IntRange(min=1), help="Attempt number (last).")
    @click.option("--follow", "-f", is_flag=True, help="Keep printing until the attempt ends.")
    @click.option("--tail", type=click.IntRange(min=1), metavar="BYTES", help="Only the end.")
    def logs_cmd(
        cfg: Config, ref: str, attempt: int | None, follow: bool, tail: int | None
    ) -> None:
        """Print the output of an attempt of REF (the last one unless --attempt N)."""
        out = sys.stdout.buffer

        def online(client: Client) -> None:
            with client.log(ref, attempt, follow=follow, tail=tail) as (_, chunks):
                for chunk in chunks:
                    out.write(chunk)
                    out.flush()

        def offline(view: OfflineView) -> None:
            from .views import attempt_row, resolve  # noqa: PLC0415

            row = attempt_row(view, resolve(view, ref), attempt)
            try:
                data = Path(row.log_path).read_bytes()
            except OSError as exc:
                raise OrchestratorError(f"{row.log_path}: cannot read the log: {exc}") from None
            out.write(data[-tail:] if tail else data)
            out.flush()

        read(cfg, online, offline)

    # ------------------------------------------------------------------ orders

    def order(name: api.Order, hint: str, doc: str) -> None:
        @command(name, help=doc)
        @click.argument("ref")
        def run(cfg: Config, ref: str) -> None:
            with daemon(cfg, hint) as client:
                result = client.order(ref, name)
            click.echo(result.message)

    order(
        "retry",
        "; or set the task's status to pending in its queue file",
        "Run the task REF again, whatever its state, with a fresh iteration budget.",
    )
    order(
        "cancel",
        "; or set the task's status to blocked in its queue file",
        "End the running attempt of REF (its process group); the task is blocked, 'cancelled'.",
    )
    order(
        "skip",
        "; or set the task's status to skipped in its queue file",
        "Mark the task REF skipped (ending it if it runs): its dependents may proceed.",
    )

    @command("pause")
    @click.argument("track", required=False)
    @click.option("--reason", help="Why (recorded with the pause).")
    def pause(cfg: Config, track: str | None, reason: str | None) -> None:
        """Start nothing new in TRACK, or in every track; running attempts finish."""
        hint = "; or set track.paused to true in its queue file" if track else ""
        with daemon(cfg, hint) as client:
            click.echo(client.pause(track, reason).message)

    @command("resume")
    @click.argument("track", required=False)
    def resume(cfg: Config, track: str | None) -> None:
        """Start tasks again in TRACK, or in the whole daemon."""
        hint = "; or set track.paused to false in its queue file" if track else ""
        if track is None and lock.holder(cfg.state_dir) is None:
            message = resume_stopped(cfg)
            if message is not None:
                click.echo(message)
                return
        with daemon(cfg, hint) as client:
            click.echo(client.resume(track).message)

    @command("reload")
    def reload(cfg: Config) -> None:
        """Read every queue file again now (exit status 1 when some cannot be used)."""
        with daemon(cfg) as client:
            result = client.reload()
        click.echo(result.message)
        for problem in result.problems:
            click.echo(f"{problem.file}: {problem.path}: {problem.message}", err=True)
        if any(p.severity == "error" for p in result.problems):
            sys.exit(1)

    @command("stop")
    @click.option("--force", is_flag=True, help="Do not wait for running attempts to finish.")
    @click.option("--no-wait", is_flag=True, help="Return once the daemon has the order.")
    def stop(cfg: Config, force: bool, no_wait: bool) -> None:
        """Stop the daemon gracefully, as SIGTERM does, and wait until it has stopped."""
        pid = lock.holder(cfg.state_dir)
        with daemon(cfg) as client:
            result = client.stop(force)
        click.echo(result.message)
        if no_wait:
            return
        deadline = time.monotonic() + result.grace + cfg.settings.kill_grace + STOP_MARGIN
        while lock.holder(cfg.state_dir) is not None:
            if time.monotonic() > deadline:
                raise OrchestratorError(f"the daemon (pid {pid}) is still stopping; try --force")
            time.sleep(0.1)
        click.echo("stopped")


def resume_stopped(cfg: Config) -> str | None:
    """Resume a stopped daemon that was paused, so that its next start starts tasks (a daemon
    started with ``--once`` while paused exits at once, so it could never be told to resume).

    The resume is journaled in the state database under the state directory's lock, so no
    daemon starts meanwhile. None when there is no state database or the daemon was not paused.
    """
    from ..clock import SystemClock  # noqa: PLC0415  (only this command needs the store)
    from ..store import Store  # noqa: PLC0415

    if not (cfg.state_dir / "state.db").is_file():
        return None
    held = lock.StateLock(cfg.state_dir)
    held.acquire()
    try:
        store = Store.open(cfg.state_dir, SystemClock())
        try:
            last = store.last_event(("daemon_paused", "daemon_resumed"))
            if last is None or last.type != "daemon_paused":
                return None
            store.add_events(("daemon_resumed", None, {}))
        finally:
            store.close()
    finally:
        held.release()
    reason = last.data.get("reason")
    why = f": {reason}" if reason else ""
    return (
        f"the stopped daemon was paused (since {last.at}{why}); it is resumed: "
        "the next `orchestratord start` starts tasks"
    )


def status_data(cfg: Config, track: str | None, *, quiet: bool = True) -> dict[str, Any]:
    def offline(view: OfflineView) -> dict[str, Any]:
        from .views import status_document  # noqa: PLC0415

        if track is not None and track not in view.graph.tracks:
            known = ", ".join(view.graph.tracks) or "none"
            raise OrchestratorError(f"unknown track {track!r}; known tracks: {known}")
        return status_document(view, track=track)

    return read(cfg, lambda c: c.status(track), offline, quiet=quiet)


def web_url(cfg: Config) -> str:
    with daemon(cfg) as client:
        url = client.ping().http
    if url is None:
        raise OrchestratorError(
            "the daemon does not serve the web board: start it with --http 127.0.0.1:PORT "
            "(or set http in the config)"
        )
    token_path = cfg.state_dir / api.TOKEN_NAME
    try:
        token = token_path.read_text(encoding="ascii").strip()
    except OSError:
        return url
    return f"{url}#token={token}"


def _follow(cfg: Config, changed: threading.Event, done: threading.Event) -> None:
    """A thread: set ``changed`` on every event, until the stream ends."""
    try:
        with Client.unix(cfg.state_dir) as client:
            for _ in client.events():
                changed.set()
    except OrchestratorError:
        pass
    finally:
        done.set()
        changed.set()


def _watch(cfg: Config, track: str | None, as_json: bool) -> None:
    """Redraw on every event (pushed by the daemon), and each second for elapsed times.

    With ``as_json``, a document only when something happened: an event, or the daemon
    starting or stopping (no daemon to push events: its state is looked at every two ticks).
    """
    changed = threading.Event()
    follower: threading.Event | None = None
    console = Console()
    live = None if as_json else Live(console=console, auto_refresh=False, transient=False)
    was_running: bool | None = None
    happened = True
    try:
        if live is not None:
            live.start()
        while True:
            data = status_data(cfg, track)
            running = bool(data["daemon"].get("running"))
            if live is not None:
                live.update(statusview.render(data), refresh=True)
            elif happened or running != was_running:
                click.echo(orjson.dumps(data).decode())
            was_running = running
            if running and (follower is None or follower.is_set()):
                follower = threading.Event()
                threading.Thread(target=_follow, args=(cfg, changed, follower), daemon=True).start()
            tick = WATCH_TICK if running and live is not None else 2 * WATCH_TICK
            happened = changed.wait(tick)
            changed.clear()
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
