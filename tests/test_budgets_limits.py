"""Budgets and usage limits: tracks pause, are announced, and go on (real daemon, fake agents)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import SystemClock, iso
from orchestrator.daemon import Engine
from orchestrator.model import TaskKey
from orchestrator.store import HoldRow, Store

from .agent_harness import fake_agent, record, write_config
from .conftest import WriteTrack
from .daemon_harness import run_once

pytestmark = pytest.mark.anyio


def kinds(events: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(kind, subject) for kind, subject, _ in events]


async def test_a_usage_limit_pauses_only_that_agents_tracks_until_the_reset(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    flags = tmp_path / "flags"
    flags.mkdir()
    reset = int(time.time()) + 3
    plan = {
        "tasks": {
            "L1": [
                {
                    "touch": str(flags / "limited"),
                    "limit": f"Claude AI usage limit reached|{reset}",
                    "json": True,
                    "cost": 0.01,
                },
                {"json": True, "cost": 0.02},
            ],
            "O1": [{"wait_for": str(flags / "held")}],
        }
    }
    claude = fake_agent(tmp_path / "agent", plan)
    other = fake_agent(tmp_path / "agent", plan, name="other-agent")
    write_config(
        tmp_path,
        f'[agents.claude]\nbinary = "{claude}"\n\n'
        f'[agents.other]\nargv = ["{other}", "{{prompt}}"]\n',
    )
    common = {"workdir": "../work", "agent": "claude"}
    write_track(
        "t1", {"track": common, "features": [{"id": "L1"}, {"id": "L2", "dependencies": ["L1"]}]}
    )
    write_track("t2", {"track": {**common, "start_after": ["t1:L1"]}, "features": [{"id": "M1"}]})
    write_track("t3", {"track": {**common, "agent": "other"}, "features": [{"id": "O1"}]})

    def ready(engine: Engine) -> None:
        def on_event(kind: str, subject: object, data: Mapping[str, Any]) -> None:
            if kind == "usage_limit":
                (flags / "held").touch()  # the other agent works only during the wait

        engine.listeners.append(on_event)

    run = await run_once(tracks_dir, on_ready=ready)
    assert run.code == 0, run.events
    seq = kinds(run.events)
    hit = seq.index(("usage_limit", "t1:L1"))
    other_done = seq.index(("task_complete", "t3:O1"))
    over = seq.index(("usage_limit_reset", "None"))
    assert hit < other_done < over  # the other agent's track went on during the wait
    data = run.events[hit][2]
    assert data["agent"] == "claude"
    assert data["tracks"] == ["t1", "t2"]
    assert data["until"] == time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(reset))
    assert ("track_paused", "t1") in seq[hit - 3 : hit]
    assert ("track_paused", "t3") not in seq
    assert run.events[over][2]["tracks"] == ["t1", "t2"]
    assert seq.index(("track_resumed", "t1")) > over
    # The interrupted attempt does not count; the next one passes.
    assert run.task("t1", "L1")["attempts"] == 1
    rows = run.store().attempts(TaskKey("t1", "L1"))
    assert [r.state for r in rows] == ["interrupted", "finished"]
    assert "usage limit" in (rows[0].reason or "")
    assert rows[0].details.cost_usd == 0.01
    assert run.store().holds() == []
    assert all(run.task(t, i)["status"] == "complete" for t, i in (("t1", "L2"), ("t2", "M1")))
    assert record(tmp_path / "agent", "L1", 2)  # run again after the reset


async def test_a_crossed_budget_pauses_the_track_and_resume_goes_on(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    plan = {"tasks": {t: [{"json": True, "cost": 0.3}] for t in ("T1", "T2", "T3")}}
    claude = fake_agent(tmp_path / "agent", plan)
    write_config(tmp_path, f'[agents.claude]\nbinary = "{claude}"\n')
    write_track(
        "t",
        {
            "track": {"workdir": "../work", "agent": "claude", "budget": {"usd": 0.5}},
            "features": [{"id": "T1"}, {"id": "T2"}, {"id": "T3"}],
        },
    )
    resumed: list[str] = []

    def ready(engine: Engine) -> None:
        engine.waiting.add("a person")  # --once would stop at the pause: someone will resume

        def resume(name: str) -> None:
            resumed.append(name)
            engine.waiting.discard("a person")
            engine.resume_track(name)

        def on_event(kind: str, subject: object, data: Mapping[str, Any]) -> None:
            if kind == "track_paused" and "budget" in str(data.get("reason")):
                # A person reads the notification, and resumes the track a moment later.
                asyncio.get_running_loop().call_later(0.2, resume, str(subject))

        engine.listeners.append(on_event)

    run = await run_once(tracks_dir, on_ready=ready)
    assert run.code == 0
    seq = kinds(run.events)
    crossed = [e for e in run.events if e[0] == "budget_exceeded"]
    assert len(crossed) == 1  # the same budget does not pause the track again
    assert crossed[0][1] == "t:T2"
    assert crossed[0][2] == {
        "scope": "track",
        "of": "t",
        "unit": "usd",
        "limit": 0.5,
        "spent": pytest.approx(0.6),
    }
    assert resumed == ["t"]
    paused, back = seq.index(("track_paused", "t")), seq.index(("track_resumed", "t"))
    assert (
        seq.index(("task_complete", "t:T2")) < paused < back < seq.index(("task_started", "t:T3"))
    )
    assert run.store().spend(track="t").cost_usd == pytest.approx(0.9)


async def test_a_task_over_its_budget_stops_between_attempts(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    plan = {"tasks": {"X": [{"json": True, "cost": 0.3, "tokens": [1000, 500]}]}}
    claude = fake_agent(tmp_path / "agent", plan)
    write_config(
        tmp_path, f'[budgets]\ntask_tokens = 2000\n\n[agents.claude]\nbinary = "{claude}"\n'
    )
    write_track(
        "t",
        {
            "track": {"workdir": "../work", "agent": "claude"},
            "features": [{"id": "X", "verify": "false", "max_iterations": 5}],
        },
    )
    run = await run_once(tracks_dir)
    assert run.code == 1
    state = run.store().task(TaskKey("t", "X"))
    assert state is not None
    # 1,500 tokens after the first attempt, 3,000 after the second: paused, and pending again.
    assert (state.status.value, state.owned.attempts) == ("pending", 2)
    assert run.task("t", "X").get("status", "pending") == "pending"
    crossing = next(e for e in run.events if e[0] == "budget_exceeded")
    assert crossing[2]["scope"] == "task"
    assert crossing[2]["spent"] == 3000
    assert ("attempt_interrupted", "t:X") in kinds(run.events)
    assert run.engine.graph.track_paused("t")


async def test_a_wait_under_way_when_the_daemon_stopped_goes_on_after_a_restart(
    tmp_path: Path, write_track: WriteTrack, tracks_dir: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    claude = fake_agent(tmp_path / "agent", {"tasks": {}})
    write_config(tmp_path, f'[agents.claude]\nbinary = "{claude}"\n')
    write_track(
        "t",
        {"track": {"workdir": "../work", "agent": "claude"}, "features": [{"id": "A"}]},
    )
    store = Store.open(tmp_path / "state", SystemClock())
    now = datetime.now(UTC)
    until = iso(now + timedelta(seconds=1.5))
    store.put_hold(HoldRow("claude", iso(now), until, "usage limit reached", ("t",)))
    store.close()
    run = await run_once(tracks_dir)
    assert run.code == 0
    seq = kinds(run.events)
    assert seq.index(("usage_limit_reset", "None")) < seq.index(("task_started", "t:A"))
    assert run.store().holds() == []
