"""The control API against a real daemon: status, orders, pauses, logs, events, metrics, TCP."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from orchestrator import config
from orchestrator.control import api
from orchestrator.control.client import Client
from orchestrator.errors import ConfigError, ControlError, RefError
from orchestrator.model import Status, TaskKey
from orchestrator.store import Store

from .conftest import WriteTrack
from .control_harness import running_daemon
from .process_harness import alive

pytestmark = pytest.mark.anyio


def gate(tmp_path: Path, name: str = "gate") -> str:
    """A command that runs until the file ``name`` appears."""
    return f"while [ ! -e {tmp_path / name} ]; do sleep 0.05; done"


async def test_status_over_the_socket_follows_the_schema(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t", [{"id": "RUN", "command": gate(tmp_path), "max_iterations": 4}, {"id": "NEXT"}]
    )
    write_track("u", {"track": {"start_after": ["t:RUN"]}, "features": [{"id": "U1"}]})
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:RUN", Status.IN_PROGRESS)
        data = await live.ask("status")
        doc = api.StatusDocument.model_validate(data)
        assert doc.schema_version == 1
        assert (doc.daemon.running, doc.daemon.source) == (True, "daemon")
        assert doc.daemon.pid == os.getpid()
        t = next(track for track in doc.tracks if track.name == "t")
        [running] = t.running
        assert (running.ref, running.attempt, running.iteration, running.max_iterations) == (
            "t:RUN",
            1,
            1,
            4,
        )
        assert running.started_at is not None
        u = next(track for track in doc.tracks if track.name == "u")
        assert u.trigger is not None
        assert (u.trigger.holds, u.trigger.waiting_on) == (False, ["t:RUN"])
        one = api.StatusDocument.model_validate(await live.ask("status", "u"))
        assert [track.name for track in one.tracks] == ["u"]
        assert one.totals.total == 3
        with pytest.raises(RefError, match="unknown track 'nope'; known tracks: t, u"):
            await live.ask("status", "nope")
        board = api.BoardDocument.model_validate(await live.ask("board"))
        assert [(c.ref, c.status) for c in board.cards] == [
            ("t:RUN", "in_progress"),
            ("t:NEXT", "pending"),
            ("u:U1", "pending"),
        ]
        assert 0 < board.seq <= live.engine.store.last_seq()
        markdown = await live.ask("board_markdown")
        assert "| **u**<br>0/1 done<br>waits for t:RUN | U1 |" in markdown
        state = live.state
        assert stat.S_IMODE((state / api.SOCKET_NAME).stat().st_mode) == 0o600
        assert stat.S_IMODE((state / api.TOKEN_NAME).stat().st_mode) == 0o600
        info = json.loads((state / api.INFO_NAME).read_text())
        assert info["pid"] == os.getpid()
        assert info["http"] is None
        (tmp_path / "gate").touch()
        await live.until_status("t:RUN", Status.COMPLETE)
    assert not (state / api.SOCKET_NAME).exists()
    assert not (state / api.INFO_NAME).exists()


async def test_cancel_ends_the_process_group_and_the_file_agrees(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; wait"
    write_track(
        "t", [{"id": "LONG", "command": command}, {"id": "AFTER", "dependencies": ["LONG"]}]
    )
    async with running_daemon(tracks_dir) as live:
        await live.poll(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        children = [int(p) for p in pids.read_text().split()]
        result = await live.ask("order", "LONG", "cancel")
        assert (result.ref, result.status) == ("t:LONG", "blocked")
        # When the order returns, the attempt's process is gone and the file says what the
        # daemon says; its process group got the signal (a background child may take a moment).
        background, shell = children
        assert not alive(shell)
        task = live.doc_task("t", "LONG")
        assert (task["status"], task["error"]) == ("blocked", "cancelled")
        assert live.engine.states[TaskKey("t", "LONG")].owned.error == "cancelled"
        detail = await live.ask("task", "t:LONG")
        assert [a["state"] for a in detail["history"]] == ["interrupted"]
        explained = await live.ask("explain", "AFTER")
        assert any("t:LONG is blocked: cancelled" in line for line in explained.lines)
        await live.poll(lambda: not alive(background))


async def test_retry_gives_a_fresh_budget_and_keeps_history(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    fixed = tmp_path / "fixed"
    write_track("t", [{"id": "F", "command": f"test -e {fixed}", "max_iterations": 2}])
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:F", Status.FAILED)
        await live.poll(lambda: live.doc_task("t", "F").get("status") == "failed")
        fixed.touch()
        result = await live.ask("order", "t:F", "retry")
        assert "fresh iteration budget" in result.message
        await live.until_status("t:F", Status.COMPLETE)
        detail = await live.ask("task", "t:F")
        assert [(a["number"], a["iteration"], a["verdict"]) for a in detail["history"]] == [
            (1, 1, "FAIL"),
            (2, 2, "FAIL"),
            (3, 1, "PASS"),
        ]
        assert detail["attempts"] == 3
        await live.poll(lambda: live.doc_task("t", "F").get("status") == "complete")


async def test_the_board_shows_a_retried_attempt_in_its_fresh_budget(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The card of the attempt a retry started says where it stands in the new budget, as
    `status` does; the event stream carries that place too, for the web board's cards."""
    armed = tmp_path / "armed"
    write_track(
        "t", [{"id": "F", "command": f"test -e {armed} && {gate(tmp_path)}", "max_iterations": 1}]
    )
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:F", Status.FAILED)
        armed.touch()
        before = live.engine.store.last_seq()
        await live.ask("order", "t:F", "retry")
        await live.until_status("t:F", Status.IN_PROGRESS)
        (card,) = (await live.ask("board"))["cards"]
        assert (card["attempts"], card["iteration"], card["max_iterations"]) == (1, 0, 1)
        assert "| F (attempt 2, iteration 1/1) |" in await live.ask("board_markdown")

        def started() -> dict[str, Any]:
            with live.client() as client:
                return next(e for e in client.events(before) if e["type"] == "task_started")

        event = await live.call(started)
        assert event["task_state"] | {"error": None} == {
            "status": "in_progress",
            "attempts": 1,
            "iteration": 0,
            "verdict": "FAIL",
            "error": None,
        }
        (tmp_path / "gate").touch()
        await live.until_status("t:F", Status.COMPLETE)


async def test_a_task_of_a_file_not_loaded_is_not_said_to_exist_nowhere(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("a", [{"id": "A", "command": "true"}])
    write_track("g", [{"id": "G1", "command": "true", "dependencies": ["nowhere:X"]}])
    async with running_daemon(tracks_dir) as live:
        await live.until_status("a:A", Status.COMPLETE)
        with pytest.raises(RefError) as found:
            await live.ask("explain", "G1")
        said = str(found.value)
        assert said.startswith("unknown task 'G1': no task has this id in any track; ")
        assert said.endswith(
            "g.json could not be loaded and may have it (`orchestratord validate` says why)"
        )


async def test_skip_lets_dependents_proceed_and_refusals_say_why(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "STUCK", "command": "echo '<blocked>needs a key</blocked>'"},
            {"id": "AFTER", "command": "true", "dependencies": ["STUCK"]},
        ],
    )
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:STUCK", Status.BLOCKED)
        result = await live.ask("order", "STUCK", "skip")
        assert result.status == "skipped"
        assert live.doc_task("t", "STUCK")["status"] == "skipped"
        await live.until_status("t:AFTER", Status.COMPLETE)
        with pytest.raises(ControlError, match="t:AFTER is complete: there is nothing to cancel"):
            await live.ask("order", "AFTER", "cancel")
        with pytest.raises(RefError, match="did you mean 'AFTER'"):
            await live.ask("order", "AFTERR", "retry")
        again = await live.ask("order", "STUCK", "skip")
        assert again.message == "t:STUCK is skipped already"


async def test_track_pause_is_written_to_the_file_and_holds_tasks(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [
            {"id": "FIRST", "command": gate(tmp_path)},
            {"id": "SECOND", "command": "true", "dependencies": ["FIRST"]},
        ],
    )
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:FIRST", Status.IN_PROGRESS)
        paused = await live.ask("pause", "t", "waiting for review")
        assert paused.paused
        assert json.loads((tracks_dir / "t.json").read_text())["track"]["paused"] is True
        (tmp_path / "gate").touch()
        # The running attempt finishes; nothing new starts.
        await live.until_status("t:FIRST", Status.COMPLETE)
        assert live.engine.graph.status(TaskKey("t", "SECOND")) is Status.PENDING
        assert not live.engine.graph.is_ready(TaskKey("t", "SECOND"))
        assert ("track_paused", "t", {"reason": "waiting for review"}) in live.events
        resumed = await live.ask("resume", "t")
        assert not resumed.paused
        assert json.loads((tracks_dir / "t.json").read_text())["track"]["paused"] is False
        await live.until_status("t:SECOND", Status.COMPLETE)
        with pytest.raises(RefError, match="unknown track 'x'"):
            await live.ask("pause", "x")


async def test_daemon_pause_survives_a_restart(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t", [{"id": "HOLD", "command": gate(tmp_path)}, {"id": "LATER", "command": "true"}]
    )
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:HOLD", Status.IN_PROGRESS)
        result = await live.ask("pause")
        assert (result.paused, result.track) == (True, None)
        again = await live.ask("pause")
        assert again.message == "the daemon was paused already"
    async with running_daemon(tracks_dir) as live:
        assert live.engine.paused
        data = await live.ask("status")
        assert data["daemon"]["paused"] is True
        assert live.engine.running_keys() == []
        explained = await live.ask("explain", "LATER")
        assert "- the daemon is paused (`orchestratord resume` continues)." in explained.lines
        (tmp_path / "gate").touch()
        await live.ask("resume")
        await live.until_status("t:LATER", Status.COMPLETE)
        await live.until_status("t:HOLD", Status.COMPLETE)


async def test_logs_follow_an_attempt_until_it_ends(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    command = f"echo first line; {gate(tmp_path)}; echo last line"
    write_track("t", [{"id": "L", "command": command}])
    async with running_daemon(tracks_dir) as live:
        await live.poll(lambda: b"first line" in _log_bytes(live.state, "t", "L", 1))

        def follow() -> bytes:
            with live.client() as client, client.log("L", follow=True) as (number, chunks):
                assert number == 1
                out = b""
                for chunk in chunks:
                    out += chunk
                    if b"first line" in out and not (tmp_path / "gate").exists():
                        (tmp_path / "gate").touch()
                return out

        text = (await live.call(follow)).decode()
        assert text.index("first line") < text.index("last line") < text.index("--- PASS")
        tail = await live.call(_read_log, live.client(), "t:L", 1, 20)
        assert tail == b"ification commands)\n"
        with pytest.raises(RefError, match=r"t:L has no attempt 7 \(attempts: 1\)"):
            await live.call(_read_log, live.client(), "t:L", 7, None)


def _log_bytes(state: Path, track: str, ident: str, number: int) -> bytes:
    path = state / "logs" / track / f"{ident}.attempt-{number}.log"
    return path.read_bytes() if path.exists() else b""


def _read_log(client: Client, ref: str, attempt: int, tail: int | None) -> bytes:
    with client, client.log(ref, attempt, tail=tail) as (_, chunks):
        return b"".join(chunks)


async def test_events_stream_replays_and_matches_the_event_log(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": gate(tmp_path)}])
    write_track("u", [{"id": "B", "command": "exit 1", "max_iterations": 1}])
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:A", Status.IN_PROGRESS)

        def collect(since: int | None, until: str) -> list[dict[str, Any]]:
            seen = []
            with live.client() as client:
                for event in client.events(since):
                    seen.append(event)
                    if event["type"] == until:
                        return seen
            return seen

        before = live.engine.store.last_seq()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                result: list[list[dict[str, Any]]] = []

                async def follow() -> None:
                    events = await anyio.to_thread.run_sync(
                        collect, before, "track_complete", abandon_on_cancel=True
                    )
                    result.append(events)

                tg.start_soon(follow)
                await live.until_status("u:B", Status.FAILED)
                (tmp_path / "gate").touch()
        live_events = result[0]
        kinds = [e["type"] for e in live_events]
        assert kinds[-3:] == ["attempt_finished", "task_complete", "track_complete"]
        finished = [e for e in live_events if e["type"] == "attempt_finished"]
        assert finished[-1]["ref"] == "t:A"
        assert finished[-1]["data"] == {"attempt": 1, "verdict": "PASS", "reason": None}
        for event in live_events:
            api.Event.model_validate(event)
        replay = await live.call(collect, 0, "track_complete")
        seqs = [e["seq"] for e in replay]
        assert seqs == sorted(set(seqs))
        types = [e["type"] for e in replay]
        for kind in ("daemon_started", "task_started", "task_failed", "task_complete"):
            assert kind in types
        lines = (live.state / api.EVENTS_LOG_NAME).read_text().splitlines()
        logged = [json.loads(line) for line in lines]
        assert [e["seq"] for e in logged] == seqs
        # The log has the events without the task's current state.
        assert [{k: v for k, v in e.items() if k != "task_state"} for e in replay] == logged


async def test_metrics_in_prometheus_text(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track(
        "t",
        [{"id": "OK", "command": "true"}, {"id": "BAD", "command": "exit 1", "max_iterations": 2}],
    )
    async with running_daemon(tracks_dir) as live:
        await live.until_status("t:BAD", Status.FAILED)
        await live.until_status("t:OK", Status.COMPLETE)
        (tracks_dir / "t.json").write_text("{ not json")
        reloaded = await live.ask("reload")
        [problem] = reloaded.problems
        assert problem.message.startswith("invalid JSON")
        text = await live.ask("metrics")
    assert 'orchestratord_tasks{status="complete",track="t"} 1.0' in text
    assert 'orchestratord_tasks{status="failed",track="t"} 1.0' in text
    assert 'orchestratord_attempts_total{track="t",verdict="PASS"} 1.0' in text
    assert 'orchestratord_attempts_total{track="t",verdict="FAIL"} 2.0' in text
    assert 'orchestratord_attempt_duration_seconds_count{track="t"} 3.0' in text
    assert 'orchestratord_running_attempts{track="t"} 0.0' in text
    assert "orchestratord_queue_file_invalid_total 1.0" in text
    assert 'orchestratord_queue_file_errors{file="' in text
    assert "_created" not in text


async def test_tcp_needs_the_token_for_changes_and_a_loopback_host(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": gate(tmp_path)}])
    async with running_daemon(tracks_dir, http="127.0.0.1:0") as live:
        url = json.loads((live.state / api.INFO_NAME).read_text())["http"]
        assert url.startswith("http://127.0.0.1:")
        token = (live.state / api.TOKEN_NAME).read_text().strip()

        def exchange() -> tuple[dict[str, int], set[str]]:
            with httpx.Client(base_url=url, timeout=10) as http:
                answers = {
                    "read": http.get(api.STATUS),
                    "page": http.get("/"),
                    "no token": http.post(api.PAUSE, json={}),
                    "wrong token": http.post(
                        api.PAUSE, json={}, headers={"authorization": "Bearer nope"}
                    ),
                    "token in query": http.post(api.PAUSE + f"?token={token}", json={}),
                    "foreign host": http.get(api.STATUS, headers={"host": "evil.example"}),
                }
            codes = {name: answer.status_code for name, answer in answers.items()}
            closed = {n for n, a in answers.items() if a.headers.get("connection") == "close"}
            with Client.tcp(url, token) as client:
                codes["with token"] = 200 if client.pause().paused else 0
            return codes, closed

        codes, closed = await live.call(exchange)
        # A refusal leaves the body it did not read behind: the connection is not reused.
        assert closed == {"no token", "wrong token", "token in query", "foreign host"}
        assert codes == {
            "read": 200,
            "page": 200,
            "no token": 401,
            "wrong token": 401,
            "token in query": 401,
            "foreign host": 403,
            "with token": 200,
        }
        assert live.engine.paused


def test_only_loopback_addresses_unless_forced(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a loopback address"):
        config.load(flags={"http": "0.0.0.0:8080"}, env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="write HOST:PORT"):
        config.load(flags={"http": "8080"}, env={}, cwd=tmp_path)
    forced = config.load(
        flags={"http": "0.0.0.0:8080", "http_allow_remote": True}, env={}, cwd=tmp_path
    )
    assert forced.settings.http == "0.0.0.0:8080"
    assert api.parse_address("[::1]:9") == ("::1", 9)
    assert api.parse_address("localhost:9") == ("127.0.0.1", 9)


async def test_stop_over_the_api(tmp_path: Path, tracks_dir: Path, write_track: WriteTrack) -> None:
    write_track("t", [{"id": "A", "command": gate(tmp_path)}])
    async with running_daemon(tracks_dir, shutdown_grace=0.2) as live:
        await live.until_status("t:A", Status.IN_PROGRESS)
        result = await live.ask("stop")
        assert result.running == 1
        assert "get up to 0.2 s to finish" in result.message
    assert live.code == 0
    store = Store.open(live.state, live.engine.clock)
    try:
        [attempt] = store.attempts(TaskKey("t", "A"))
        assert attempt.state == "interrupted"
    finally:
        store.close()


async def test_a_state_dir_too_long_for_a_socket_path_still_works(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}])
    state = tmp_path / ("very-long-state-directory-name-" * 4) / "state"
    assert len(str(state / api.SOCKET_NAME)) > 108
    async with running_daemon(tracks_dir, state) as live:
        await live.until_status("t:A", Status.COMPLETE)
        data = await live.ask("status")
        assert data["totals"]["complete"] == 1


async def test_a_busy_port_is_a_clear_error(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": "A", "command": "true"}])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve the control API on 127.0.0.1:{port}"):
            async with running_daemon(tracks_dir, http=f"127.0.0.1:{port}"):
                pass


async def test_a_running_daemon_reports_the_warnings_an_offline_status_reports(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    from click.testing import CliRunner

    from orchestrator.cli import cli

    copied = {"id": "SHARED", "command": gate(tmp_path)}
    write_track("a", {"project": "p", "features": [copied]})
    write_track("b", {"project": "p", "features": [copied]})
    state = tmp_path / "state"
    where = ["--tracks", str(tracks_dir), "--state-dir", str(state)]
    offline = CliRunner().invoke(cli, ["status", "--json", *where], catch_exceptions=False)
    offline_warnings = json.loads(offline.stdout)["problems"]
    assert [p["severity"] for p in offline_warnings] == ["warning"]
    assert "also in track 'a' of project 'p'" in offline_warnings[0]["message"]
    async with running_daemon(tracks_dir, state) as live:
        data = await live.ask("status")
        assert data["problems"] == offline_warnings
        # The copy goes: so does the warning, at the next look after the reload.
        write_track("b", {"project": "p", "features": [{"id": "OWN", "command": "true"}]})
        await live.ask("reload")
        data = await live.ask("status")
        assert data["problems"] == []
