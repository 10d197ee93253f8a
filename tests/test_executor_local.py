"""LocalExecutor: the executor contract (pidfd and thread waits, both spawners), and the rest."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

from orchestrator import procs
from orchestrator.errors import ExecutorError
from orchestrator.executors import local, runbook, spawn
from orchestrator.executors.base import Executor, RunSpec, RunState
from orchestrator.executors.local import LocalExecutor

from .executor_contract import GRACE, ExecutorContract, process_gone, python, until

LINUX = sys.platform.startswith("linux")
HAS_PIDFD = hasattr(os, "pidfd_open")
UVLOOP = pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.skipif(not HAS_PIDFD, reason="no pidfds on this platform")
class TestLocalPidfd(ExecutorContract):
    @pytest.fixture(params=["asyncio", UVLOOP])
    def anyio_backend(self, request: pytest.FixtureRequest) -> object:
        return request.param

    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        return LocalExecutor(kill_grace=GRACE, use_pidfd=True)


class TestLocalThreadWait(ExecutorContract):
    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        return LocalExecutor(kill_grace=GRACE, use_pidfd=False)


@pytest.mark.skipif(not HAS_PIDFD, reason="no pidfds on this platform")
class TestLocalPidfdPopen(ExecutorContract):
    """The fallback spawner (Popen), where posix_spawn cannot be used."""

    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        return LocalExecutor(kill_grace=GRACE, use_pidfd=True, fast_spawn=False)


@pytest.mark.skipif(not spawn.AVAILABLE, reason=f"no posix_spawn: {spawn.UNAVAILABLE}")
class TestLocalPosixSpawnThreads(ExecutorContract):
    """posix_spawn from spawner threads (the default spawns on the event loop)."""

    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        return LocalExecutor(kill_grace=GRACE, fast_spawn=True, spawn_threads=2)


class TestLocalThreadWaitPopen(ExecutorContract):
    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        return LocalExecutor(kill_grace=GRACE, use_pidfd=False, fast_spawn=False)


MODES = [
    pytest.param(True, id="pidfd", marks=pytest.mark.skipif(not HAS_PIDFD, reason="no pidfd")),
    pytest.param(False, id="thread"),
]


@pytest.fixture(
    params=[
        pytest.param(
            True,
            id="posix_spawn",
            marks=pytest.mark.skipif(not spawn.AVAILABLE, reason=str(spawn.UNAVAILABLE)),
        ),
        pytest.param(False, id="popen"),
    ]
)
def spawner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each spawner in turn: executors made in the test use posix_spawn, or Popen."""
    if not request.param:
        monkeypatch.setattr(spawn, "AVAILABLE", False)
    return bool(request.param)


def spec(tmp_path: Path, argv: tuple[str, ...], **fields: object) -> RunSpec:
    return ExecutorContract.spec(tmp_path, argv, **fields)


@pytest.mark.anyio
@pytest.mark.parametrize("use_pidfd", MODES)
@pytest.mark.usefixtures("spawner")
class TestLocalOnly:
    async def test_leftovers_of_a_finished_command_get_sigterm(
        self, tmp_path: Path, use_pidfd: bool
    ) -> None:
        pidfile = tmp_path / "sleep.pid"
        argv = ("/bin/sh", "-c", f"sleep 30 & echo $! > '{pidfile}'")
        async with LocalExecutor(kill_grace=GRACE, use_pidfd=use_pidfd) as executor:
            info = await executor.submit(spec(tmp_path, argv))
            info = await executor.wait(info.run_id)
        assert info.succeeded, info
        background = int(pidfile.read_text())
        await until(lambda: process_gone(background), within=3)

    async def test_exit_by_signal_is_named(self, tmp_path: Path, use_pidfd: bool) -> None:
        async with LocalExecutor(kill_grace=GRACE, use_pidfd=use_pidfd) as executor:
            for sig in (signal.SIGKILL, signal.SIGTERM):
                argv = python(f"import os; os.kill(os.getpid(), {sig.value})")
                info = await executor.submit(spec(tmp_path, argv))
                info = await executor.wait(info.run_id)
                assert info.state is RunState.EXITED
                assert info.exit_code == -sig.value
                assert info.reason == f"killed by signal {sig.name}"

    async def test_own_session_and_group(self, tmp_path: Path, use_pidfd: bool) -> None:
        argv = python("import os; print(os.getpid(), os.getpgid(0), os.getsid(0))")
        async with LocalExecutor(kill_grace=GRACE, use_pidfd=use_pidfd) as executor:
            info = await executor.submit(run := spec(tmp_path, argv))
            await executor.wait(info.run_id)
            log = await ExecutorContract.log_of(executor, run.run_id)
            assert log.split() == [str(info.pid).encode()] * 3

    async def test_timeout_in_progress_is_shortened_by_cancel(
        self, tmp_path: Path, use_pidfd: bool
    ) -> None:
        pidfile = tmp_path / "ready"
        argv = python(
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"open({str(pidfile)!r}, 'w').close()\n"
            "time.sleep(60)\n"
        )
        async with LocalExecutor(kill_grace=30, use_pidfd=use_pidfd) as executor:
            info = await executor.submit(spec(tmp_path, argv, timeout=0.2))
            await until(pidfile.exists)
            with anyio.move_on_after(0.5):
                await executor.wait(info.run_id)
            assert (await executor.status(info.run_id)).state is RunState.RUNNING
            with anyio.fail_after(5):
                ended = await executor.cancel(info.run_id, 0)
        assert ended.state is RunState.TIMED_OUT, "the first stop decides the state"
        assert ended.exit_code == -signal.SIGKILL.value

    async def test_leaving_the_block_ends_runs(self, tmp_path: Path, use_pidfd: bool) -> None:
        with anyio.CancelScope() as scope:
            async with LocalExecutor(kill_grace=GRACE, use_pidfd=use_pidfd) as executor:
                info = await executor.submit(spec(tmp_path, python("import time; time.sleep(60)")))
                scope.cancel()
                await anyio.sleep_forever()
        assert info.pid is not None
        assert process_gone(info.pid)
        assert (await executor.status(info.run_id)).state is RunState.CANCELLED

    async def test_leaving_by_force_kills(
        self, tmp_path: Path, use_pidfd: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(local, "_CLOSE_MARGIN", -0.9)  # leaving gives up after 0.1 s
        ready = tmp_path / "ready"
        argv = python(
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"open({str(ready)!r}, 'w').close()\n"
            "time.sleep(60)\n"
        )
        before = time.monotonic()
        async with LocalExecutor(kill_grace=1.0, use_pidfd=use_pidfd) as executor:
            info = await executor.submit(spec(tmp_path, argv))
            await until(ready.exists)
        assert time.monotonic() - before < 5
        ended = await executor.status(info.run_id)
        assert ended.state is RunState.CANCELLED
        assert ended.reason == "killed because the executor was shut down"
        assert ended.exit_code == -signal.SIGKILL.value

    async def test_not_executable(self, tmp_path: Path, use_pidfd: bool) -> None:
        script = tmp_path / "script.sh"
        script.write_text("#!/bin/sh\necho hi\n")
        script.chmod(0o644)
        async with LocalExecutor(use_pidfd=use_pidfd) as executor:
            info = await executor.submit(run := spec(tmp_path, ("./script.sh",)))
            assert info.state is RunState.FAILED_TO_START
            assert info.reason == "not executable: './script.sh'"
            log = await ExecutorContract.log_of(executor, run.run_id)
            assert log == info.reason.encode() + b"\n"
            info = await executor.submit(spec(tmp_path, (str(tmp_path / "nothing"),)))
            assert info.reason == f"command not found: '{tmp_path / 'nothing'}'"

    async def test_path_lookup_uses_the_childs_path(self, tmp_path: Path, use_pidfd: bool) -> None:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        tool = bindir / "orch-tool"
        tool.write_text("#!/bin/sh\necho tool ran\n")
        tool.chmod(0o755)
        async with LocalExecutor(use_pidfd=use_pidfd) as executor:
            run = spec(tmp_path, ("orch-tool",), env={"PATH": f"{bindir}:/usr/bin:/bin"})
            info = await executor.wait((await executor.submit(run)).run_id)
            assert info.succeeded, info
            assert await ExecutorContract.log_of(executor, run.run_id) == b"tool ran\n"
            missing = spec(tmp_path, ("orch-tool",), env={"PATH": "/usr/bin:/bin"})
            info = await executor.submit(missing)
            assert info.reason == "command not found: 'orch-tool' (searched PATH=/usr/bin:/bin)"

    async def test_bad_interpreter_is_reported(self, tmp_path: Path, use_pidfd: bool) -> None:
        work = tmp_path / "work"  # not the daemon's working directory
        work.mkdir()
        script = work / "script"
        script.write_text("#!/no/such/interpreter\n")
        script.chmod(0o755)
        async with LocalExecutor(use_pidfd=use_pidfd) as executor:
            info = await executor.submit(spec(work, (str(script),)))
            # Found along a relative PATH entry, taken from the run's cwd as the child does.
            found = await executor.submit(spec(work, ("script",), env={"PATH": "."}))
        assert info.state is RunState.FAILED_TO_START
        assert info.reason == f"cannot start '{script}': No such file or directory"
        assert found.reason == "cannot start 'script': No such file or directory"

    async def test_missing_stdin_file_and_log_dir(self, tmp_path: Path, use_pidfd: bool) -> None:
        argv = python("pass")
        async with LocalExecutor(use_pidfd=use_pidfd) as executor:
            info = await executor.submit(spec(tmp_path, argv, stdin_path=str(tmp_path / "no")))
            assert info.state is RunState.FAILED_TO_START
            assert info.reason is not None
            assert info.reason.startswith("cannot open stdin file")
            info = await executor.submit(spec(tmp_path, argv, log_path=str(tmp_path / "x/y.log")))
            assert info.state is RunState.FAILED_TO_START
            assert info.reason is not None
            assert info.reason.startswith("cannot open log file")

    async def test_log_is_appended_and_read_in_capped_chunks(
        self, tmp_path: Path, use_pidfd: bool
    ) -> None:
        log = tmp_path / "big.log"
        log.write_bytes(b"before\n")
        size = runbook.READ_CAP + 4096
        argv = python(f"import sys; sys.stdout.buffer.write(b'x' * {size})")
        async with LocalExecutor(use_pidfd=use_pidfd) as executor:
            info = await executor.submit(spec(tmp_path, argv, log_path=str(log)))
            assert (await executor.wait(info.run_id)).succeeded
            first, offset = await executor.read_log(info.run_id, 0)
            assert len(first) == runbook.READ_CAP
            assert first.startswith(b"before\nxxx")
            rest, end = await executor.read_log(info.run_id, offset)
            assert end == len(b"before\n") + size == offset + len(rest)
            with pytest.raises(ExecutorError):
                await executor.read_log(info.run_id, -1)
        assert log.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.anyio
@pytest.mark.usefixtures("spawner")
async def test_thread_path_without_waitid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``waitid`` is missing the thread reaps the child: runs still end and report."""
    monkeypatch.setattr(local, "_WAITID", False)
    async with LocalExecutor(kill_grace=GRACE, use_pidfd=False) as executor:
        info = await executor.submit(spec(tmp_path, python("import sys; sys.exit(5)")))
        assert (await executor.wait(info.run_id)).exit_code == 5
        info = await executor.submit(spec(tmp_path, python("import time; time.sleep(60)")))
        cancelled = await executor.cancel(info.run_id, GRACE)
        assert cancelled.state is RunState.CANCELLED
        assert cancelled.exit_code == -signal.SIGTERM
        info = await executor.submit(spec(tmp_path, python("import time; time.sleep(60)")))
    assert (await executor.status(info.run_id)).state is RunState.CANCELLED


@pytest.mark.anyio
@pytest.mark.skipif(not LINUX, reason="counts /proc/self/fd")
@pytest.mark.usefixtures("spawner")
async def test_pidfd_path_does_not_leak_fds(tmp_path: Path) -> None:
    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    outside = count()
    async with LocalExecutor(use_pidfd=True) as executor:
        inside = count()
        for _ in range(50):
            info = await executor.submit(spec(tmp_path, ("/bin/true",)))
            assert (await executor.wait(info.run_id)).succeeded
        info = await executor.submit(spec(tmp_path, ("/bin/sleep", "30")))
        assert (await executor.cancel(info.run_id, GRACE)).state is RunState.CANCELLED
        assert count() == inside
    assert count() == outside


@pytest.mark.anyio
async def test_executor_must_be_open(tmp_path: Path) -> None:
    executor = LocalExecutor()
    with pytest.raises(ExecutorError, match="not open"):
        await executor.submit(spec(tmp_path, ("/bin/true",)))
    await executor.aclose()
    async with LocalExecutor() as entered:
        with pytest.raises(ExecutorError, match="only once"):
            await entered.__aenter__()


# -- procs ---------------------------------------------------------------------------------


def test_parse_stat_with_a_hostile_command_name() -> None:
    rest = " ".join(str(n) for n in range(7, 53))  # fields 7 to 52
    line = f"4242 (a b) (c) ) ) S 1 777 777 {rest}\n"
    stat = procs.parse_stat(line)
    assert stat == procs.ProcStat(pid=4242, state="S", pgid=777, start_ticks=22)
    assert procs.parse_stat("garbage") is None
    assert procs.parse_stat("12 (x) S 1 2") is None


@pytest.mark.skipif(not LINUX, reason="/proc")
def test_start_ticks_and_boot_id() -> None:
    ticks = procs.process_start_ticks(os.getpid())
    assert isinstance(ticks, int)
    assert ticks > 0
    assert procs.process_start_ticks(2**22 + 12345) is None
    boot = procs.boot_id()
    assert boot
    assert boot == procs.boot_id()


def test_terminate_group() -> None:
    child = subprocess.Popen(["/bin/sleep", "30"], start_new_session=True)
    try:
        assert procs.group_members(child.pid) == [child.pid]
        assert procs.terminate_group(child.pid, signal.SIGTERM)
        assert child.wait(timeout=5) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()
    assert not procs.terminate_group(child.pid, signal.SIGTERM)
    assert procs.group_members(child.pid) == []
    with pytest.raises(ExecutorError):
        procs.terminate_group(0, signal.SIGTERM)
    with pytest.raises(ExecutorError):
        procs.terminate_group(os.getpgrp(), signal.SIGTERM)


def _detached_group(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A leader in its own session with a child that ignores SIGTERM; both running."""
    pidfile = tmp_path / "child.pid"
    child = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pidfile)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"os.rename({str(pidfile)!r} + '.tmp', {str(pidfile)!r})\n"
        "time.sleep(60)\n"
    )
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(60)\n",
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not pidfile.exists():
        assert time.monotonic() < deadline, "the group did not start"
        time.sleep(0.01)
    return leader, int(pidfile.read_text())


def _kill_group(leader: subprocess.Popen[bytes]) -> None:
    procs.terminate_group(leader.pid, signal.SIGKILL)
    leader.wait()


@pytest.mark.skipif(not LINUX, reason="needs /proc and a boot id")
def test_end_leftovers_ends_a_recorded_group(tmp_path: Path) -> None:
    leader, child = _detached_group(tmp_path)
    try:
        ticks = procs.process_start_ticks(leader.pid)
        assert procs.group_members(leader.pid) == sorted([leader.pid, child])
        assert sorted(procs._members_ps(leader.pid)) == sorted([leader.pid, child])
        before = time.monotonic()
        ended = procs.end_leftovers(leader.pid, ticks, procs.boot_id(), grace=0.3)
        assert ended == sorted([leader.pid, child])
        assert time.monotonic() - before >= 0.3, "the child ignoring SIGTERM had its grace"
        assert leader.wait(timeout=5) == -signal.SIGTERM
        deadline = time.monotonic() + 3
        while not process_gone(child):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert procs.end_leftovers(leader.pid, ticks, procs.boot_id(), grace=0.3) == []
    finally:
        _kill_group(leader)


@pytest.mark.skipif(not LINUX, reason="needs /proc and a boot id")
def test_end_leftovers_leaves_what_is_not_provably_ours(tmp_path: Path) -> None:
    leader, child = _detached_group(tmp_path)
    try:
        ticks = procs.process_start_ticks(leader.pid)
        assert ticks is not None
        boot = procs.boot_id()
        assert procs.end_leftovers(leader.pid, ticks, "another-boot", grace=0.1) == []
        assert procs.end_leftovers(leader.pid, ticks, None, grace=0.1) == []
        assert procs.end_leftovers(leader.pid, ticks + 10**9, boot, grace=0.1) == []
        assert leader.poll() is None
        assert not process_gone(child)
        # The leader is there but started at another time than recorded: a reused pid.
        other = ticks + procs.TICK_SLACK + 1
        assert procs.end_leftovers(leader.pid, other, boot, grace=0.1) == []
        assert procs.end_leftovers(0, None, boot, grace=0.1) == []
        assert procs.end_leftovers(os.getpgrp(), None, boot, grace=0.1) == []
        assert leader.poll() is None
        assert not process_gone(child)
    finally:
        _kill_group(leader)


@pytest.mark.skipif(not LINUX, reason="needs /proc and a boot id")
def test_end_leftovers_after_the_leader_is_gone(tmp_path: Path) -> None:
    leader, child = _detached_group(tmp_path)
    try:
        ticks = procs.process_start_ticks(leader.pid)
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait()
        assert procs.group_members(leader.pid) == [child]
        ended = procs.end_leftovers(leader.pid, ticks, procs.boot_id(), grace=0.1)
        assert ended == [child]
        deadline = time.monotonic() + 3
        while not process_gone(child):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        _kill_group(leader)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("argv", "state"),
    [(("true",), RunState.EXITED), ((), RunState.FAILED_TO_START)],
    ids=["exited", "failed to start"],
)
async def test_finished_runs_are_forgotten_beyond_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], state: RunState
) -> None:
    monkeypatch.setattr(runbook, "KEEP_FINISHED", 3)
    async with local.LocalExecutor(1.0) as executor:
        for i in range(5):
            spec = RunSpec(f"r{i}", argv, str(tmp_path), dict(os.environ), str(tmp_path / "log"))
            await executor.submit(spec)
            assert (await executor.wait(spec.run_id)).state is state
        assert (await executor.status("r4")).state is state
        assert (await executor.status("r0")).state is RunState.LOST  # forgotten


@pytest.mark.anyio
async def test_forgotten_runs_are_freed_before_their_timeout_would_have_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each run's timer held the finished run until its deadline: a daemon running short
    # tasks with the default timeout (an hour) kept every run of the last hour in memory.
    monkeypatch.setattr(runbook, "KEEP_FINISHED", 3)
    monkeypatch.setattr(local, "_STALE_TIMERS", 4)
    async with local.LocalExecutor(1.0) as executor:
        for i in range(20):
            spec = RunSpec(
                f"r{i}", ("true",), str(tmp_path), dict(os.environ), str(tmp_path / "log"), 3600.0
            )
            await executor.submit(spec)
            assert (await executor.wait(spec.run_id)).state is RunState.EXITED
        gc.collect()
        alive = sum(type(o) is local._Run for o in gc.get_objects())
        assert alive <= 3 + 4 + 1, alive  # kept, stale timers tolerated, one being rebuilt


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_start_ticks_taken_after_spawning_match_the_kernels() -> None:
    """Never before the kernel's, and within TICK_SLACK as a rule: on a loaded machine this
    process may be descheduled between the spawn and the clock (a late record is then refused,
    and the launch marker proves the group; see test_recovery)."""
    late: list[int] = []
    for _ in range(20):
        child = subprocess.Popen(["sleep", "5"], start_new_session=True)
        estimate = procs.start_ticks_now()
        try:
            actual = procs.process_start_ticks(child.pid)
            assert estimate is not None
            assert actual is not None
            assert estimate >= actual
            late.append(estimate - actual)
        finally:
            child.kill()
            child.wait()
    assert sorted(late)[len(late) // 2] <= procs.TICK_SLACK, late
