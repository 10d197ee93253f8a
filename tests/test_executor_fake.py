"""FakeExecutor: the executor contract, and its scripting."""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

from orchestrator.executors.base import Executor, RunSpec, RunState

from .executor_contract import GRACE, Argv, ExecutorContract
from .fakes import FakeExecutor, Outcome


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _fake(executor: Executor) -> FakeExecutor:
    assert isinstance(executor, FakeExecutor)
    return executor


class TestFakeExecutor(ExecutorContract):
    real_processes = False
    reserves_resources = True

    def open_executor(self) -> AbstractAsyncContextManager[Executor]:
        return FakeExecutor(kill_grace=GRACE)

    def prog_exit(self, executor: Executor, code: int, output: bytes = b"") -> Argv:
        argv = ("exit", str(code), output.hex())
        _fake(executor).script(argv, exit_code=code, output=output)
        return argv

    def prog_forever(self, executor: Executor) -> Argv:
        _fake(executor).script(("forever",), hang=True)
        return ("forever",)

    def prog_env_cwd(self, executor: Executor, name: str, absent: str) -> Argv:
        def output(spec: RunSpec) -> bytes:
            return f"{spec.env[name]}\n{absent in spec.env}\n{spec.cwd}\n".encode()

        _fake(executor).script(("env-cwd",), output=output)
        return ("env-cwd",)

    def prog_cat(self, executor: Executor) -> Argv:
        def output(spec: RunSpec) -> bytes:
            return b"" if spec.stdin_path is None else Path(spec.stdin_path).read_bytes()

        _fake(executor).script(("cat",), output=output)
        return ("cat",)

    def prog_interleaved(self, executor: Executor) -> Argv:
        _fake(executor).script(("interleaved",), output=b"out1\nerr1\nout2\n")
        return ("interleaved",)

    def prog_gated(self, executor: Executor, directory: Path) -> tuple[Argv, Callable[[], None]]:
        gate = anyio.Event()
        argv = ("gated", str(id(gate)))
        _fake(executor).script(argv, release=gate)
        return argv, gate.set


@pytest.mark.anyio
async def test_scripted_outcomes_and_records(tmp_path: Path) -> None:
    async with FakeExecutor(default=Outcome(exit_code=7)) as fake:
        fake.script(("agent", "--go"), Outcome(exit_code=0, output=b"done\n"))
        fake.script(("broken",), Outcome(start_error="cannot start 'broken': Exec format error"))
        spec = ExecutorContract.spec(tmp_path, ("agent", "--go"))
        info = await fake.wait((await fake.submit(spec)).run_id)
        assert info.succeeded
        assert await fake.read_log(spec.run_id, 0) == (b"done\n", 5)
        other = await fake.wait((await fake.submit(ExecutorContract.spec(tmp_path, ("x",)))).run_id)
        assert other.exit_code == 7
        broken = await fake.submit(ExecutorContract.spec(tmp_path, ("broken",)))
        assert broken.state is RunState.FAILED_TO_START
        assert broken.reason == "cannot start 'broken': Exec format error"
        assert [s.argv for s in fake.submitted] == [("agent", "--go"), ("x",), ("broken",)]


@pytest.mark.anyio
async def test_a_run_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    async with FakeExecutor() as fake:
        fake.script(("stubborn",), Outcome(hang=True, term_delay=60))
        fake.script(("polite",), Outcome(hang=True, term_delay=0.01))
        stubborn = await fake.submit(ExecutorContract.spec(tmp_path, ("stubborn",)))
        polite = await fake.submit(ExecutorContract.spec(tmp_path, ("polite",)))
        killed = await fake.cancel(stubborn.run_id, 0.05)
        termed = await fake.cancel(polite.run_id, 5)
        assert killed.exit_code == -signal.SIGKILL
        assert termed.exit_code == -signal.SIGTERM
        assert fake.cancelled == [stubborn.run_id, polite.run_id]
