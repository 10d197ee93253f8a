"""The executor contract: what every :class:`~orchestrator.executors.base.Executor` must do.

A test module subclasses :class:`ExecutorContract` (a class whose name starts with ``Test``)
and implements :meth:`ExecutorContract.open_executor`. The commands are real child processes
(``sys.executable -c ...``) built by the ``prog_*`` methods; an executor without processes
(a fake) overrides them to script the same behaviour, and sets ``real_processes = False`` to
skip the checks that only a real process tree can show. A remote executor (a cluster) sets
``remote = True``: its runs may be queued (``PENDING``) when submitted, are known to have
failed to start only once they reach a node, and have no pid on this machine.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import pytest

from orchestrator.errors import ExecutorError
from orchestrator.executors.base import Executor, RunInfo, RunSpec, RunState, unfit

Argv = tuple[str, ...]
_ids = itertools.count()

GRACE = 0.4
"""Grace period of the cancel tests: short, but long enough to see that it is honoured."""


def python(code: str) -> Argv:
    return (sys.executable, "-c", code)


def process_gone(pid: int) -> bool:
    """No such process, or a zombie (ended; waiting for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a pid reused by another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not sys.platform.startswith("linux")
    return stat.rpartition(")")[2].split()[0] == "Z"


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll an outside fact (a file appears, a process goes) until it holds, bounded."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {within} s: {condition}")
        await anyio.sleep(0.01)


@pytest.mark.anyio
class ExecutorContract:
    """Tests every executor must pass. Subclasses provide :meth:`open_executor`."""

    real_processes: ClassVar[bool] = True
    """False for executors without processes: the process-tree checks are skipped."""
    remote: ClassVar[bool] = False
    """True for executors whose runs happen elsewhere (queued, no local pid)."""
    reserves_resources: ClassVar[bool] = False
    """True for executors that reserve ``RunSpec.resources`` (and refuse what cannot fit)."""

    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        raise NotImplementedError

    @pytest.fixture
    async def executor(self) -> AsyncIterator[Executor]:
        async with self.open_executor() as executor:
            yield executor

    def needs_processes(self, why: str) -> None:
        if not self.real_processes:
            pytest.skip(f"needs real processes: {why}")

    # -- programs: how each behaviour is run (a fake scripts them instead) -------------------

    def prog_exit(self, executor: Executor, code: int, output: bytes = b"") -> Argv:
        """Writes ``output`` to stdout, then exits with ``code``."""
        return python(f"import sys; sys.stdout.buffer.write({output!r}); sys.exit({code})")

    def prog_forever(self, executor: Executor) -> Argv:
        """Runs until it is ended (SIGTERM ends it)."""
        return python("import time; time.sleep(60)")

    def prog_env_cwd(self, executor: Executor, name: str, absent: str) -> Argv:
        """Prints the variable ``name``, whether ``absent`` is set, and the working directory."""
        return python(
            f"import os; print(os.environ[{name!r}]); print({absent!r} in os.environ);"
            " print(os.getcwd())"
        )

    def prog_cat(self, executor: Executor) -> Argv:
        """Copies stdin to stdout."""
        return python("import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())")

    def prog_interleaved(self, executor: Executor) -> Argv:
        """Writes ``out1`` to stdout, ``err1`` to stderr, ``out2`` to stdout, in that order."""
        return python(
            "import sys\n"
            "for stream, text in ((sys.stdout, 'out1'), (sys.stderr, 'err1'),"
            " (sys.stdout, 'out2')):\n"
            "    stream.write(text + '\\n'); stream.flush()\n"
        )

    def prog_gated(self, executor: Executor, directory: Path) -> tuple[Argv, Callable[[], None]]:
        """Exits 0 once released by calling the returned function."""
        gate = directory / f"gate-{next(_ids)}"
        argv = python(
            f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.005)\n"
        )
        return argv, gate.touch

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def spec(cwd: Path, argv: Argv, **fields: Any) -> RunSpec:
        values: dict[str, Any] = {
            "run_id": f"run-{next(_ids)}",
            "argv": argv,
            "cwd": str(cwd),
            "env": {"PATH": os.environ.get("PATH", os.defpath)},
            "log_path": str(cwd / f"run-{next(_ids)}.log"),
        }
        values.update(fields)
        return RunSpec(**values)

    @staticmethod
    async def log_of(executor: Executor, run_id: str) -> bytes:
        data, offset, chunk = b"", 0, b"-"
        while chunk:
            chunk, offset = await executor.read_log(run_id, offset)
            data += chunk
        return data

    async def run(self, executor: Executor, spec: RunSpec) -> RunInfo:
        info = await executor.submit(spec)
        assert info.run_id == spec.run_id
        return await executor.wait(spec.run_id)

    def assert_started(self, info: RunInfo) -> None:
        """What ``submit`` returns for a run that can start."""
        if self.remote:
            assert info.state in (RunState.PENDING, RunState.RUNNING), info
            assert info.pid is None
        else:
            assert info.state is RunState.RUNNING
            assert info.pid is not None
            assert info.pgid == info.pid
            assert info.started is not None

    async def submit_and_settle(self, executor: Executor, spec: RunSpec) -> RunInfo:
        """Submit; for a remote executor, a run that cannot start is known once it ends."""
        info = await executor.submit(spec)
        if self.remote and not info.state.finished:
            info = await executor.wait(spec.run_id)
        return info

    def running_states(self) -> tuple[RunState, ...]:
        return (RunState.PENDING, RunState.RUNNING) if self.remote else (RunState.RUNNING,)

    # -- exit codes, environment, working directory, stdin, output ----------------------------

    async def test_exit_zero(self, executor: Executor, tmp_path: Path) -> None:
        spec = self.spec(tmp_path, self.prog_exit(executor, 0, b"hi\n"))
        started = await executor.submit(spec)
        self.assert_started(started)
        info = await executor.wait(spec.run_id)
        assert info.state is RunState.EXITED
        assert info.exit_code == 0
        assert info.succeeded
        assert info.reason is None
        assert info.pid == started.pid
        assert info.duration is not None
        assert info.duration >= 0
        assert await self.log_of(executor, spec.run_id) == b"hi\n"
        assert await executor.status(spec.run_id) == info

    async def test_exit_nonzero(self, executor: Executor, tmp_path: Path) -> None:
        info = await self.run(executor, self.spec(tmp_path, self.prog_exit(executor, 3)))
        assert info.state is RunState.EXITED
        assert info.exit_code == 3
        assert not info.succeeded

    async def test_env_and_cwd_reach_the_child(
        self, executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        workdir = tmp_path / "work dir"
        workdir.mkdir()
        monkeypatch.setenv("ORCH_CONTRACT_DAEMON_ONLY", "1")
        argv = self.prog_env_cwd(executor, "ORCH_CONTRACT_VALUE", "ORCH_CONTRACT_DAEMON_ONLY")
        env = {"PATH": os.environ.get("PATH", os.defpath), "ORCH_CONTRACT_VALUE": "a b=c"}
        spec = self.spec(workdir, argv, env=env)
        info = await self.run(executor, spec)
        assert info.succeeded, info
        log = await self.log_of(executor, spec.run_id)
        assert log.decode().splitlines() == ["a b=c", "False", str(workdir)]

    async def test_stdin_is_dev_null(self, executor: Executor, tmp_path: Path) -> None:
        self.needs_processes("only a real child has a stdin")
        argv = python(
            "import os, sys\n"
            "print(repr(sys.stdin.buffer.read()))\n"
            "print(os.path.samestat(os.fstat(0), os.stat(os.devnull)))\n"
        )
        spec = self.spec(tmp_path, argv)
        with anyio.fail_after(10):
            info = await self.run(executor, spec)
        assert info.succeeded, info
        assert (await self.log_of(executor, spec.run_id)).split() == [b"b''", b"True"]

    async def test_stdin_from_a_file(self, executor: Executor, tmp_path: Path) -> None:
        stdin = tmp_path / "stdin.txt"
        stdin.write_bytes(b"payload\nline 2\n")
        spec = self.spec(tmp_path, self.prog_cat(executor), stdin_path=str(stdin))
        info = await self.run(executor, spec)
        assert info.succeeded, info
        assert await self.log_of(executor, spec.run_id) == b"payload\nline 2\n"

    async def test_stdout_and_stderr_land_in_the_log_in_order(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        spec = self.spec(tmp_path, self.prog_interleaved(executor))
        assert (await self.run(executor, spec)).succeeded
        assert await self.log_of(executor, spec.run_id) == b"out1\nerr1\nout2\n"

    # -- runs that cannot start --------------------------------------------------------------

    async def test_missing_binary_fails_to_start(self, executor: Executor, tmp_path: Path) -> None:
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        spec = self.spec(tmp_path, ("orch-no-such-command", "--flag"), env={"PATH": str(empty)})
        info = await self.submit_and_settle(executor, spec)
        assert info.state is RunState.FAILED_TO_START
        assert info.reason is not None
        assert "command not found" in info.reason
        assert "orch-no-such-command" in info.reason
        assert info.pid is None
        assert not info.succeeded
        assert await executor.wait(spec.run_id) == info
        assert info.reason.encode() in await self.log_of(executor, spec.run_id)

    async def test_missing_cwd_fails_to_start(self, executor: Executor, tmp_path: Path) -> None:
        missing = tmp_path / "no-such-dir"
        spec = self.spec(missing, self.prog_exit(executor, 0), log_path=str(tmp_path / "m.log"))
        info = await self.run(executor, spec)
        assert info.state is RunState.FAILED_TO_START
        assert info.reason == f"working directory not found: {missing}"
        assert info.reason.encode() in await self.log_of(executor, spec.run_id)

    async def test_empty_argv_fails_to_start(self, executor: Executor, tmp_path: Path) -> None:
        info = await self.run(executor, self.spec(tmp_path, ()))
        assert info.state is RunState.FAILED_TO_START
        assert info.reason

    # -- timeouts and cancellation --------------------------------------------------------

    async def test_timeout(self, executor: Executor, tmp_path: Path) -> None:
        spec = self.spec(tmp_path, self.prog_forever(executor), timeout=0.3)
        started = await executor.submit(spec)
        info = await executor.wait(spec.run_id)
        assert info.state is RunState.TIMED_OUT
        assert info.reason == "timed out after 0.3 s"
        assert not info.succeeded
        assert info.duration is not None
        assert 0.25 <= info.duration < 3  # the loop's clock may lag time.monotonic a little
        if self.real_processes and not self.remote:
            assert started.pid is not None
            assert process_gone(started.pid)

    async def test_cancel_ends_the_whole_tree(self, executor: Executor, tmp_path: Path) -> None:
        self.needs_processes("a grandchild that ignores SIGTERM")
        pidfile = tmp_path / "grandchild.pid"
        leader_pidfile = tmp_path / "leader.pid"
        grandchild = (
            "import os, signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"open({str(pidfile)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
            f"os.rename({str(pidfile)!r} + '.tmp', {str(pidfile)!r})\n"
            "time.sleep(60)\n"
        )
        leader = python(
            "import os, subprocess, sys, time\n"
            f"open({str(leader_pidfile)!r}, 'w').write(str(os.getpid()))\n"
            f"subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
            "time.sleep(60)\n"
        )
        spec = self.spec(tmp_path, leader)
        started = await executor.submit(spec)
        await until(pidfile.exists, within=30 if self.remote else 5)
        grandchild_pid = int(pidfile.read_text())
        leader_pid = int(leader_pidfile.read_text())
        if not self.remote:
            assert started.pid == leader_pid
        assert not process_gone(grandchild_pid)
        before = time.monotonic()
        info = await executor.cancel(spec.run_id, GRACE)
        elapsed = time.monotonic() - before
        assert info.state is RunState.CANCELLED
        assert info.reason
        assert GRACE - 0.05 <= elapsed < GRACE + 2, "SIGKILL only after the grace, soon after"
        await until(lambda: process_gone(leader_pid), within=3)
        await until(lambda: process_gone(grandchild_pid), within=3)

    async def test_cancel_is_idempotent(self, executor: Executor, tmp_path: Path) -> None:
        spec = self.spec(tmp_path, self.prog_forever(executor))
        await executor.submit(spec)
        async with anyio.create_task_group() as tg:
            tg.start_soon(executor.cancel, spec.run_id, GRACE)
            first = await executor.cancel(spec.run_id, GRACE)
        assert first.state is RunState.CANCELLED
        if not self.remote:  # a queued remote run ends without ever having an exit status
            assert first.exit_code is not None
        assert await executor.cancel(spec.run_id, GRACE) == first
        assert await executor.wait(spec.run_id) == first

    async def test_cancel_a_finished_run_changes_nothing(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        info = await self.run(executor, self.spec(tmp_path, self.prog_exit(executor, 4)))
        assert await executor.cancel(info.run_id, GRACE) == info
        assert (await executor.status(info.run_id)).state is RunState.EXITED

    async def test_cancel_from_cancelled_cleanup(self, executor: Executor, tmp_path: Path) -> None:
        spec = self.spec(tmp_path, self.prog_forever(executor))
        await executor.submit(spec)
        result: list[RunInfo] = []
        with anyio.CancelScope() as scope:
            try:
                scope.cancel()
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    result.append(await executor.cancel(spec.run_id, GRACE))
        assert result[0].state is RunState.CANCELLED

    async def test_unshielded_cancel_still_ends_the_run(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        spec = self.spec(tmp_path, self.prog_forever(executor))
        await executor.submit(spec)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await executor.cancel(spec.run_id, GRACE)
        with anyio.fail_after(GRACE + 3):
            info = await executor.wait(spec.run_id)
        assert info.state is RunState.CANCELLED

    # -- sharing and idempotence ----------------------------------------------------------

    async def test_duplicate_submit_starts_nothing(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        spec = self.spec(tmp_path, self.prog_exit(executor, 0, b"once\n"))
        first = await executor.submit(spec)
        again = await executor.submit(spec)
        assert again.pid == first.pid
        assert again.started == first.started
        info = await executor.wait(spec.run_id)
        assert await executor.submit(spec) == info
        assert await self.log_of(executor, spec.run_id) == b"once\n"

    async def test_concurrent_waits_all_get_the_result(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        argv, release = self.prog_gated(executor, tmp_path)
        spec = self.spec(tmp_path, argv)
        await executor.submit(spec)
        results: list[RunInfo] = []

        async def waiter() -> None:
            results.append(await executor.wait(spec.run_id))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(waiter)
            await anyio.lowlevel.checkpoint()
            assert (await executor.status(spec.run_id)).state in self.running_states()
            release()
        assert len(results) == 4
        assert all(info == results[0] for info in results)
        assert results[0].succeeded

    async def test_a_cancelled_wait_leaves_the_run_alone(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        argv, release = self.prog_gated(executor, tmp_path)
        spec = self.spec(tmp_path, argv)
        await executor.submit(spec)
        with anyio.move_on_after(0.05) as scope:
            await executor.wait(spec.run_id)
        assert scope.cancelled_caught
        assert (await executor.status(spec.run_id)).state in self.running_states()
        assert [info.run_id for info in await executor.active()] == [spec.run_id]
        release()
        info = await executor.wait(spec.run_id)
        assert info.succeeded
        assert await executor.active() == []

    # -- logs -----------------------------------------------------------------------------

    async def test_read_log_resumes_from_an_offset(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        spec = self.spec(tmp_path, self.prog_exit(executor, 0, b"hello world\n"))
        await self.run(executor, spec)
        assert await executor.read_log(spec.run_id, 0) == (b"hello world\n", 12)
        assert await executor.read_log(spec.run_id, 6) == (b"world\n", 12)
        assert await executor.read_log(spec.run_id, 12) == (b"", 12)
        assert await executor.read_log(spec.run_id, 50) == (b"", 50)

    # -- unknown runs and closing ---------------------------------------------------------

    async def test_unknown_runs(self, executor: Executor) -> None:
        assert (await executor.status("nope")).state is RunState.LOST
        assert (await executor.wait("nope")).state is RunState.LOST
        assert (await executor.cancel("nope", GRACE)).state is RunState.LOST
        with pytest.raises(ExecutorError, match="nope"):
            await executor.read_log("nope", 0)

    async def test_aclose_ends_running_runs(self, executor: Executor, tmp_path: Path) -> None:
        specs = [self.spec(tmp_path, self.prog_forever(executor)) for _ in range(3)]
        pids = [(await executor.submit(spec)).pid for spec in specs]
        done = await self.run(executor, self.spec(tmp_path, self.prog_exit(executor, 0)))
        assert len(await executor.active()) == 3
        with anyio.fail_after(10):
            await executor.aclose()
        for spec in specs:
            info = await executor.status(spec.run_id)
            assert info.state is RunState.CANCELLED
            assert info.reason
        assert await executor.status(done.run_id) == done
        assert await executor.active() == []
        if self.real_processes and not self.remote:
            assert all(pid is not None and process_gone(pid) for pid in pids)
        with pytest.raises(ExecutorError):
            await executor.submit(self.spec(tmp_path, self.prog_exit(executor, 0)))
        await executor.aclose()

    # -- re-attaching and capacity ----------------------------------------------------------

    async def test_attach_finds_a_known_run_and_never_starts_one(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        spec = self.spec(tmp_path, self.prog_exit(executor, 0, b"once\n"))
        unknown = await executor.attach(spec)
        assert unknown.state is RunState.LOST
        assert unknown.reason
        other = self.spec(tmp_path, self.prog_exit(executor, 0, b"twice\n"))
        info = await self.run(executor, other)
        assert await executor.attach(other) == info
        assert await self.log_of(executor, other.run_id) == b"twice\n"

    async def test_capacity_names_at_least_one_node(self, executor: Executor) -> None:
        capacity = await executor.capacity()
        assert capacity.nodes
        assert all(node.get("CPU", 0) > 0 for node in capacity.nodes)
        assert unfit({"CPU": 1}, capacity) is None
        assert unfit({"CPU": 1e9}, capacity)

    async def test_a_run_no_node_can_hold_fails_at_once(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        if not self.reserves_resources:
            pytest.skip("this executor reserves nothing for a run")
        resources = {"CPU": 1.0, "orch_contract_unobtainium": 1.0}
        spec = self.spec(tmp_path, self.prog_exit(executor, 0), resources=resources)
        info = await executor.submit(spec)
        assert info.state is RunState.FAILED_TO_START
        assert info.reason is not None
        assert "can ever run it" in info.reason
        assert "orch_contract_unobtainium=1" in info.reason
        assert await executor.wait(spec.run_id) == info
