"""RayExecutor against a real Ray head on 127.0.0.1: the executor contract, and what only a
cluster does (queueing for resources, a lost supervisor, re-attaching, git workspaces)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from orchestrator.executors.base import Checkout, Executor, RunSpec, RunState
from orchestrator.executors.ray import MemoryJournal, RayCluster, RayExecutor

from .executor_contract import GRACE, ExecutorContract, process_gone, python, until
from .ray_head import AGENT_SLOTS, RayHead

pytestmark = [pytest.mark.ray, pytest.mark.anyio]
_prefixes = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cluster(head: RayHead, **fields: Any) -> RayCluster:
    values: dict[str, Any] = {
        "address": head.address,
        "job_prefix": f"t{uuid.uuid4().hex[:6]}{next(_prefixes)}-",
        "poll_interval": 0.1,
        "pending_limit": 300.0,
        "unreachable_limit": 20.0,
    }
    values.update(fields)
    return RayCluster(**values)


class TestRayExecutor(ExecutorContract):
    remote = True
    reserves_resources = True
    head: RayHead

    @pytest.fixture(autouse=True)
    def _use_head(self, ray_head: RayHead) -> None:
        self.head = ray_head

    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        return RayExecutor(cluster(self.head), kill_grace=GRACE)


# -- what only a cluster does -------------------------------------------------------------


@pytest.fixture
async def ray(ray_head: RayHead) -> AsyncIterator[RayExecutor]:
    async with RayExecutor(cluster(ray_head), kill_grace=GRACE) as executor:
        yield executor


def spec(tmp_path: Path, argv: tuple[str, ...], **fields: Any) -> RunSpec:
    return dataclasses.replace(ExecutorContract.spec(tmp_path, argv), **fields)


def gate(tmp_path: Path, name: str, mark: str = "") -> tuple[tuple[str, ...], Path]:
    """A run that waits for a file; writes ``mark`` (a file) first when given."""
    release = tmp_path / f"{name}.go"
    touch = f"open({mark!r}, 'w').close()\n" if mark else ""
    argv = python(
        f"import os, time\n{touch}while not os.path.exists({str(release)!r}): time.sleep(0.02)\n"
    )
    return argv, release


def text_of(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_log_is_tailed_in_order_while_the_run_goes_on(
    ray: RayExecutor, tmp_path: Path
) -> None:
    argv = python(
        "import sys, time\n"
        "for i in range(60):\n"
        "    print(f'line {i:03}', flush=True); time.sleep(0.03)\n"
    )
    run = spec(tmp_path, argv)
    await ray.submit(run)
    seen, offset, reads = b"", 0, 0
    while True:
        info = await ray.status(run.run_id)
        chunk, offset = await ray.read_log(run.run_id, offset)
        if chunk:
            reads += 1
            seen += chunk
        if info.state.finished and not chunk:
            break
        await anyio.sleep(0.05)
    assert info.succeeded, info
    assert seen.decode().splitlines() == [f"line {i:03}" for i in range(60)]
    assert reads >= 2, "the output arrived while the run went on, not only at its end"


async def test_agent_slots_saturated_keep_runs_pending(ray: RayExecutor, tmp_path: Path) -> None:
    slot = {"CPU": 1.0, "agent_slot": 1.0}
    gates = [gate(tmp_path, f"g{i}") for i in range(AGENT_SLOTS)]
    holders = [spec(tmp_path, argv, resources=slot) for argv, _ in gates]
    for holder in holders:
        await ray.submit(holder)
    for holder in holders:
        await until(running(ray, holder), within=30)
    marker = tmp_path / "waiter-ran"
    waiter = spec(tmp_path, python(f"open({str(marker)!r}, 'w').close()"), resources=slot)
    assert (await ray.submit(waiter)).state is RunState.PENDING
    for _ in range(20):  # two seconds of polls: it stays queued while the slots are taken
        await anyio.sleep(0.1)
        assert (await ray.status(waiter.run_id)).state is RunState.PENDING
    assert not marker.exists()
    gates[0][1].touch()
    assert (await ray.wait(holders[0].run_id)).succeeded
    assert (await ray.wait(waiter.run_id)).succeeded
    assert marker.exists()
    gates[1][1].touch()
    assert (await ray.wait(holders[1].run_id)).succeeded


def running(executor: RayExecutor, run: RunSpec) -> Callable[[], bool]:
    """Whether the run has started on a node (its status, without awaiting)."""
    return lambda: executor._runs[run.run_id].info.state is RunState.RUNNING


async def test_a_run_pending_too_long_is_reported_stuck_and_never_runs(
    ray: RayExecutor, tmp_path: Path
) -> None:
    slot = {"CPU": 1.0, "agent_slot": float(AGENT_SLOTS)}
    argv, release = gate(tmp_path, "hold")
    holder = spec(tmp_path, argv, resources=slot)
    await ray.submit(holder)
    await until(running(ray, holder), within=30)
    marker = tmp_path / "stuck-ran"
    stuck = spec(
        tmp_path, python(f"open({str(marker)!r}, 'w').close()"), resources=slot, pending_limit=1.0
    )
    await ray.submit(stuck)
    info = await ray.wait(stuck.run_id)
    assert info.state is RunState.FAILED_TO_START
    assert info.reason is not None
    assert info.reason.startswith("stuck: waited ")
    assert "agent_slot=2" in info.reason
    release.touch()
    assert (await ray.wait(holder.run_id)).succeeded
    await anyio.sleep(2)  # the slot is free now: the stopped job must not start after all
    assert not marker.exists()


async def test_a_duplicate_run_id_starts_no_second_job(ray_head: RayHead, tmp_path: Path) -> None:
    journal = MemoryJournal()
    settings = cluster(ray_head)
    counter = tmp_path / "count"
    argv = python(f"open({str(counter)!r}, 'a').write('x')")
    run = spec(tmp_path, argv)
    async with RayExecutor(settings, kill_grace=GRACE, journal=journal) as first:
        await first.submit(run)
        job = first.job_id(run.run_id)
        async with httpx.AsyncClient(base_url=ray_head.address) as client:
            response = await client.post(
                "/api/jobs/", json={"entrypoint": "true", "submission_id": job}
            )
        assert response.status_code >= 400
        assert "already exists" in response.text
        async with RayExecutor(settings, kill_grace=GRACE, journal=journal) as second:
            again = await second.submit(run)  # another daemon, the same run: it attaches
            assert again.state in (RunState.PENDING, RunState.RUNNING, RunState.EXITED)
            assert (await second.wait(run.run_id)).succeeded
        assert (await first.wait(run.run_id)).succeeded
    assert counter.read_text() == "x"


async def test_a_killed_job_supervisor_makes_the_run_lost(ray: RayExecutor, tmp_path: Path) -> None:
    pidfile = tmp_path / "leader.pid"
    argv = python(
        f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    run = spec(tmp_path, argv)
    await ray.submit(run)
    await until(lambda: pidfile.exists() and text_of(pidfile) != "", within=30)
    leader = int(text_of(pidfile))
    supervisor = leader
    while "JobSupervisor" not in cmdline(supervisor):
        supervisor = parent_of(supervisor)
        assert supervisor > 1, "no Ray job supervisor above the run"
    os.kill(supervisor, 9)
    with anyio.fail_after(30):
        info = await ray.wait(run.run_id)
    assert info.state is RunState.LOST
    assert info.reason is not None
    assert "supervisor" in info.reason
    await until(lambda: process_gone(leader), within=10)


def forty_lines(gate: Path) -> tuple[str, ...]:
    """Lines 00-05, then (once ``gate`` exists) lines 06-39, 0.05 s apart."""
    return python(
        "import os, time\n"
        "for i in range(40):\n"
        f"    while i == 6 and not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
        "    print(f'line {i:02}', flush=True); time.sleep(0.05)\n"
    )


async def test_a_new_executor_reattaches_and_keeps_tailing(
    ray_head: RayHead, tmp_path: Path
) -> None:
    journal = MemoryJournal()
    settings = cluster(ray_head)
    gate = tmp_path / "gate"
    run = spec(tmp_path, forty_lines(gate))
    log = Path(run.log_path)
    async with RayExecutor(settings, kill_grace=GRACE, journal=journal) as first:
        await first.submit(run)
        await until(lambda: log.exists() and "line 05" in text_of(log), within=30)
        first.detach()  # the daemon stops: the job goes on
    assert text_of(log).splitlines() == [f"line {i:02}" for i in range(6)]
    gate.touch()
    async with RayExecutor(settings, kill_grace=GRACE, journal=journal) as second:
        attached = await second.attach(run)
        assert attached.state in (RunState.PENDING, RunState.RUNNING)
        info = await second.wait(run.run_id)
    assert info.succeeded, info
    assert text_of(log).splitlines() == [f"line {i:02}" for i in range(40)]
    assert journal.load(run.run_id)[0] == len(text_of(log))


class KilledBeforeJournaling(MemoryJournal):
    """The journal of a daemon killed (-9) between writing output to the log file and
    journaling it: saves stop reaching :attr:`kept` (what the next daemon finds) once the file
    holds ``needle``."""

    def __init__(self, log: Path, needle: str) -> None:
        super().__init__()
        self.kept = MemoryJournal()
        self.log, self.needle = log, needle
        self.killed = False

    def save(self, run_id: str, offset: int, size: int | None) -> None:
        self.killed = self.killed or self.needle in text_of(self.log)
        if not self.killed:
            self.kept.save(run_id, offset, size)


async def test_output_written_but_not_journaled_before_a_kill_is_not_written_twice(
    ray_head: RayHead, tmp_path: Path
) -> None:
    settings = cluster(ray_head)
    gate = tmp_path / "gate"
    run = spec(tmp_path, forty_lines(gate))
    log = Path(run.log_path)
    journal = KilledBeforeJournaling(log, "line 05")
    async with RayExecutor(settings, kill_grace=GRACE, journal=journal) as first:
        await first.submit(run)
        await until(lambda: journal.killed, within=30)
        first.detach()  # the job goes on
    assert text_of(log).splitlines() == [f"line {i:02}" for i in range(6)]
    assert journal.kept.load(run.run_id)[0] < len(text_of(log)), "output was not journaled"
    gate.touch()
    async with RayExecutor(settings, kill_grace=GRACE, journal=journal.kept) as second:
        await second.attach(run)
        info = await second.wait(run.run_id)
    assert info.succeeded, info
    text = text_of(log)
    assert text.splitlines() == [f"line {i:02}" for i in range(40)]
    assert journal.kept.load(run.run_id) == (len(text), len(text.encode()))


async def test_output_is_valid_utf8_and_capped_with_its_tail(
    ray_head: RayHead, tmp_path: Path
) -> None:
    async with RayExecutor(cluster(ray_head, output_cap=1000), kill_grace=GRACE) as ray:
        argv = python(
            "import sys\n"
            "sys.stdout.buffer.write(b'bad \\xff byte\\n')\n"
            "for i in range(500): print(f'{i:05}')\n"
        )
        run = spec(tmp_path, argv)
        assert (await ray.wait((await ray.submit(run)).run_id)).succeeded
    text = text_of(run.log_path)
    assert text.startswith("bad \ufffd byte\n00000\n")
    assert "bytes of output dropped on the node" in text
    assert text.endswith("00498\n00499\n")
    assert len(text.encode()) < 2200


async def test_overlay_environment_keeps_the_nodes_own_variables(
    ray_head: RayHead, tmp_path: Path
) -> None:
    async with RayExecutor(cluster(ray_head, env_mode="overlay"), kill_grace=GRACE) as ray:
        argv = python("import os; print(os.environ['ORCH_ADDED'], 'HOME' in os.environ)")
        run = spec(tmp_path, argv, env={"ORCH_ADDED": "yes"})
        assert (await ray.wait((await ray.submit(run)).run_id)).succeeded
    assert text_of(run.log_path) == "yes True\n"


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare repository with one commit on ``main`` (a file ``app.txt``)."""
    bare, work = tmp_path / "origin.git", tmp_path / "seed"
    base = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    git(*base, "init", "-q", "--bare", str(bare))
    git(*base, "init", "-q", str(work))
    (work / "app.txt").write_text("v1\n")
    git(*base, "-C", str(work), "add", "-A")
    git(*base, "-C", str(work), "commit", "-qm", "seed")
    git(*base, "-C", str(work), "push", "-q", str(bare), "HEAD:main")
    return bare


async def test_git_workspace_run_pushes_a_branch_named_after_the_run(
    ray_head: RayHead, tmp_path: Path, origin: Path
) -> None:
    work_root = tmp_path / "node-work"
    async with RayExecutor(cluster(ray_head, work_root=str(work_root)), kill_grace=GRACE) as ray:
        argv = python(
            "import os\n"
            "print(open('app.txt').read().strip(), os.getcwd().endswith('-change'))\n"
            "open('app.txt', 'w').write('v2\\n')\n"
        )
        run = spec(tmp_path, argv, cwd=".", checkout=Checkout(str(origin), "main", push=True))
        info = await ray.wait((await ray.submit(run)).run_id)
        assert info.succeeded, (info, text_of(run.log_path))
        assert info.branch == f"orchestratord/{ray.job_id(run.run_id)}"
        assert info.commit is not None
        assert git("-C", str(origin), "show", f"{info.branch}:app.txt") == "v2\n"
        assert git("-C", str(origin), "rev-parse", info.branch).strip() == info.commit
        # A verification run on the pushed commit sees the change, and pushes nothing.
        check = spec(
            tmp_path,
            python("print(open('app.txt').read().strip())"),
            cwd=".",
            checkout=Checkout(str(origin), info.commit),
        )
        verified = await ray.wait((await ray.submit(check)).run_id)
        assert verified.succeeded
        assert verified.branch is None
    assert text_of(run.log_path) == "v1 False\n"
    assert text_of(check.log_path) == "v2\n"
    assert not os.listdir(work_root), "checkouts are removed once the run is over"


async def test_git_workspace_with_an_unknown_ref_fails_to_start(
    ray: RayExecutor, tmp_path: Path, origin: Path
) -> None:
    run = spec(tmp_path, python("print(1)"), cwd=".", checkout=Checkout(str(origin), "nope"))
    info = await ray.wait((await ray.submit(run)).run_id)
    assert info.state is RunState.FAILED_TO_START
    assert info.reason is not None
    assert "has no ref 'nope'" in info.reason
