"""The posix_spawn spawner: its children are started as Popen starts them, or not at all.

Each check runs the same probe child through :func:`spawn.spawn` and through Popen called as
the local executor calls it, and compares what the children saw: working directory,
environment, session and group, descriptors, signal dispositions and mask.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ExecutorError
from orchestrator.executors import spawn
from orchestrator.executors.base import RunState
from orchestrator.executors.local import LocalExecutor

from .executor_contract import ExecutorContract

pytestmark = pytest.mark.skipif(not spawn.AVAILABLE, reason=f"no posix_spawn: {spawn.UNAVAILABLE}")

PROBE = """
import json, os, sys
json.dump({
    'argv': sys.argv, 'cwd': os.getcwd(), 'env': dict(os.environ),
    'pid': os.getpid(), 'pgid': os.getpgid(0), 'sid': os.getsid(0),
    'fds': sorted(int(fd) for fd in os.listdir('/proc/self/fd')),
    'stdin': list(os.fstat(0)[1:3]), 'out': list(os.fstat(1)[1:3]), 'err': list(os.fstat(2)[1:3]),
}, sys.stdout)
"""
"""Reports what the child sees (a Python child: signals are checked with ``cat`` instead, as
Python itself ignores SIGPIPE and SIGXFSZ)."""


@pytest.fixture
def fds(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """stdin (a file), the log descriptor (append) and the log's path, like the executor's."""
    stdin = tmp_path / "stdin"
    stdin.write_bytes(b"")
    log = tmp_path / "out.log"
    in_fd = os.open(stdin, os.O_RDONLY | os.O_CLOEXEC)
    out_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        yield in_fd, out_fd, log
    finally:
        os.close(in_fd)
        os.close(out_fd)


def by_popen(argv: list[str], cwd: str, env: Mapping[str, str], in_fd: int, out_fd: int) -> int:
    child = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=in_fd,
        stdout=out_fd,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    return child.wait()


def by_spawn(argv: list[str], cwd: str, env: Mapping[str, str], in_fd: int, out_fd: int) -> int:
    pid = spawn.spawn(argv, cwd, env, in_fd, out_fd)
    assert pid is not None, "posix_spawn did not start the child"
    return spawn.Child(pid).wait()


def probe(
    how: Any, cwd: Path, env: Mapping[str, str], fds: tuple[int, int, Path]
) -> dict[str, Any]:
    in_fd, out_fd, log = fds
    log.write_bytes(b"")
    code = how([sys.executable, "-c", PROBE, "arg one"], str(cwd), env, in_fd, out_fd)
    assert code == 0, log.read_text()
    seen: dict[str, Any] = json.loads(log.read_text())
    log.write_bytes(b"")
    assert how(["cat", "/proc/self/status"], str(cwd), env, in_fd, out_fd) == 0
    fields = dict(line.split(":", 1) for line in log.read_text().splitlines())
    seen["ignored"], seen["blocked"] = (int(fields[name], 16) for name in ("SigIgn", "SigBlk"))
    return seen


def _bits(*signals: int) -> int:
    return sum(1 << (sig - 1) for sig in signals)


@contextlib.contextmanager
def ignored(sig: signal.Signals) -> Iterator[None]:
    before = signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(sig, before)


def test_the_child_sees_what_a_popen_child_sees(tmp_path: Path, fds: tuple[int, int, Path]) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",  # else the child's Python sets LC_CTYPE itself
        "ONE": "a b=c",
        "ÜNICODE": "wert ü",
    }
    leaked_r, leaked_w = os.pipe()
    os.set_inheritable(leaked_w, True)  # a descriptor someone made inheritable
    try:
        with ignored(signal.SIGUSR1):  # the daemon's own ignored signals stay ignored
            fast = probe(by_spawn, workdir, env, fds)
            slow = probe(by_popen, workdir, env, fds)
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
    for seen in (fast, slow):
        assert seen["argv"] == ["-c", "arg one"]
        assert seen["cwd"] == str(workdir)
        assert seen["env"] == env
        assert seen["pid"] == seen["pgid"] == seen["sid"], "a new session"
        assert leaked_w not in seen["fds"]
        assert seen["stdin"] == list(os.fstat(fds[0])[1:3])
        assert seen["out"] == seen["err"] == list(os.fstat(fds[1])[1:3])
        assert seen["blocked"] == 0
        assert seen["ignored"] & _bits(signal.SIGUSR1), "ignored by the daemon: stays so"
        assert not seen["ignored"] & _bits(signal.SIGPIPE, signal.SIGXFSZ), "back to default"
    same = ("argv", "cwd", "env", "fds", "stdin", "out", "err", "ignored", "blocked")
    assert {k: fast[k] for k in same} == {k: slow[k] for k in same}


def test_file_actions_are_kept_by_what_they_hold(
    tmp_path: Path, fds: tuple[int, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each spawn runs where it is asked to, whether its file actions are new, kept from an
    earlier spawn with the same descriptors and directory, or made for it alone (when as many
    sets as kept are kept already)."""
    in_fd, out_fd, log = fds
    monkeypatch.setattr(spawn, "_actions", {})
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    where = [tmp_path / name for name in ("one", "two", "three")]
    for directory in where:
        directory.mkdir()

    def cwd_of_child(directory: Path) -> str:
        log.write_bytes(b"")
        argv = [sys.executable, "-c", "import os; print(os.getcwd())"]
        assert by_spawn(argv, str(directory), env, in_fd, out_fd) == 0
        return log.read_text().strip()

    for directory in (where[0], where[1], where[0]):
        assert cwd_of_child(directory) == str(directory.resolve())
    assert set(spawn._actions) == {(in_fd, out_fd, str(d).encode()) for d in where[:2]}
    monkeypatch.setattr(spawn, "_ACTIONS_KEPT", 2)
    assert cwd_of_child(where[2]) == str(where[2].resolve())
    assert len(spawn._actions) == 2


COMPARE_LIBC_SIGNALS = """
import os, subprocess, sys, threading
from orchestrator.executors import spawn
# glibc catches one of its signals when the first thread starts, after spawn was loaded.
thread = threading.Thread(target=lambda: None)
thread.start()
thread.join()
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
argv, env = ["cat", "/proc/self/status"], {"PATH": os.defpath}
spawn.Child(spawn.spawn(argv, "/", env, null, log)).wait()
subprocess.Popen(argv, cwd="/", env=env, stdin=null, stdout=log, start_new_session=True).wait()
"""


@pytest.mark.parametrize("by_posix_spawn", [True, False], ids=["posix_spawn", "fork"])
def test_the_c_librarys_signals_are_left_as_popen_leaves_them(
    tmp_path: Path, by_posix_spawn: bool
) -> None:
    """glibc's own signals (32 and 33) cannot be changed from Python; Popen's children get
    them as the daemon has them. A daemon started by glibc's posix_spawn (``make`` does) has
    them ignored; one forked gets them as its parent has them (this test process: at default
    under plain pytest, ignored under ``make``). The probe starts a thread after loading the
    spawner, which makes glibc catch 33: a spawn after that must see it."""
    log = tmp_path / "status"
    argv = [sys.executable, "-c", COMPARE_LIBC_SIGNALS, str(log)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    if by_posix_spawn:
        pid = os.posix_spawn(sys.executable, argv, env)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    else:
        subprocess.run(argv, env=env, check=True, preexec_fn=lambda: None)  # fork, not vfork
    masks = [int(line.split()[1], 16) for line in log.read_text().splitlines() if "SigIgn" in line]
    assert len(masks) == 2
    assert masks[0] == masks[1]
    here = int(Path("/proc/self/status").read_text().split("SigIgn:")[1].split()[0], 16)
    assert bool(masks[0] & _bits(32)) is (by_posix_spawn or bool(here & _bits(32)))


def test_the_mask_is_empty_whatever_the_callers(tmp_path: Path, fds: tuple[int, int, Path]) -> None:
    seen: list[dict[str, Any]] = []

    def in_thread() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGTERM})
        seen.append(probe(by_spawn, tmp_path, {"PATH": os.defpath}, fds))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen[0]["blocked"] == 0


def test_path_lookup_follows_the_childs_path(tmp_path: Path, fds: tuple[int, int, Path]) -> None:
    """Relative entries from cwd; directories and non-executable files are passed over."""
    in_fd, out_fd, log = fds
    for name, mode in (("a", None), ("b", 0o644), ("c", 0o755), ("d", 0o755)):
        directory = tmp_path / name
        directory.mkdir()
        if mode is None:
            (directory / "tool").mkdir()
        else:
            (directory / "tool").write_text(f"#!/bin/sh\necho {name}\n")
            (directory / "tool").chmod(mode)
    path = f"{tmp_path / 'nothing'}::{tmp_path / 'a'}:b:{tmp_path / 'c'}:d"
    for how in (by_spawn, by_popen):
        log.write_bytes(b"")
        assert how(["tool"], str(tmp_path), {"PATH": path}, in_fd, out_fd) == 0
        assert log.read_bytes() == b"c\n"
    # Not the daemon's PATH: with none, os.defpath, as for Popen.
    assert by_spawn(["true"], str(tmp_path), {}, in_fd, out_fd) == 0
    assert spawn.spawn(["tool"], str(tmp_path), {"PATH": "/usr/bin"}, in_fd, out_fd) is None


@pytest.mark.parametrize(
    ("argv", "cwd", "env"),
    [
        pytest.param(["orch-no-such-command"], None, {}, id="command not found"),
        pytest.param(["true"], "missing", {}, id="no such cwd"),
        pytest.param(["/bin/true", "a\0b"], None, {}, id="NUL in an argument"),
        pytest.param(["true"], None, {"A=B": "x"}, id="= in a name"),
        pytest.param(["true"], None, {"A": "x\0y"}, id="NUL in a value"),
        pytest.param(["true"], None, {"A": "\udcff"}, id="lone surrogate"),
        pytest.param([], None, {}, id="no argv"),
    ],
)
def test_what_it_does_not_start_is_left_to_popen(
    tmp_path: Path,
    fds: tuple[int, int, Path],
    argv: list[str],
    cwd: str | None,
    env: dict[str, str],
) -> None:
    in_fd, out_fd, log = fds
    env = {"PATH": os.environ.get("PATH", os.defpath), **env}
    where = str(tmp_path / cwd) if cwd else str(tmp_path)
    assert spawn.spawn(argv, where, env, in_fd, out_fd) is None
    assert log.read_bytes() == b"", "nothing ran"


def test_stdio_descriptors_below_3_are_left_to_popen(fds: tuple[int, int, Path]) -> None:
    in_fd, out_fd, _ = fds
    assert spawn.spawn(["true"], "/", {}, 0, out_fd) is None
    assert spawn.spawn(["true"], "/", {}, in_fd, 2) is None


def test_a_failed_exec_returns_none(tmp_path: Path, fds: tuple[int, int, Path]) -> None:
    script = tmp_path / "script"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    assert spawn.spawn([str(script)], str(tmp_path), {}, fds[0], fds[1]) is None


def test_child_reaps_like_popen(fds: tuple[int, int, Path]) -> None:
    in_fd, out_fd, _ = fds
    pid = spawn.spawn(["sh", "-c", "read x; exit 3"], "/", {"PATH": os.defpath}, in_fd, out_fd)
    assert pid is not None
    assert spawn.Child(pid).wait() == 3
    pid = spawn.spawn(["sleep", "30"], "/", {"PATH": os.defpath}, in_fd, out_fd)
    assert pid is not None
    child = spawn.Child(pid)
    assert child.poll() is None
    os.kill(pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert child.poll() == -signal.SIGKILL
    other = spawn.Child(pid)  # reaped already: its status is gone, as for Popen
    assert other.poll() == 0


@pytest.mark.anyio
async def test_the_executor_uses_it_and_falls_back_to_popen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command posix_spawn cannot start (an earlier PATH entry's interpreter is missing)
    is started by Popen, which goes on along PATH, as it always did."""
    started: list[int | None] = []
    real = spawn.spawn

    def counted(*args: Any) -> int | None:
        started.append(real(*args))
        return started[-1]

    monkeypatch.setattr(spawn, "spawn", counted)
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, text in ((first, "#!/no/such/interpreter\n"), (second, "#!/bin/sh\necho 2\n")):
        directory.mkdir()
        (directory / "tool").write_text(text)
        (directory / "tool").chmod(0o755)
    async with LocalExecutor(1.0) as executor:
        run = ExecutorContract.spec(tmp_path, ("/bin/true",))
        assert (await executor.wait((await executor.submit(run)).run_id)).succeeded
        assert len(started) == 1
        assert started[0] is not None
        env = {"PATH": f"{first}:{second}"}
        run = ExecutorContract.spec(tmp_path, ("tool",), env=env)
        info = await executor.wait((await executor.submit(run)).run_id)
        assert info.succeeded, info
        assert started[1:] == [None]
        assert await ExecutorContract.log_of(executor, run.run_id) == b"2\n"


@pytest.mark.anyio
async def test_asking_for_it_where_it_cannot_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spawn, "AVAILABLE", False)
    monkeypatch.setattr(spawn, "UNAVAILABLE", "no such libc function")
    with pytest.raises(ExecutorError, match="no such libc function"):
        LocalExecutor(fast_spawn=True)
    async with LocalExecutor(1.0) as executor:  # the default: Popen
        info = await executor.submit(ExecutorContract.spec(tmp_path, ("true",)))
        assert (await executor.wait(info.run_id)).state is RunState.EXITED
