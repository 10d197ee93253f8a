"""A ``sh -c`` command the shell would only exec is started without the shell, and its program
sees exactly what it would have seen through the shell; anything else goes through the shell."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.executors import direct, spawn
from orchestrator.executors.base import RunState
from orchestrator.executors.local import LocalExecutor

from .executor_contract import ExecutorContract

SH = direct.SHELL


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("/bin/true", ("/bin/true",)),
        ("pytest -x tests/test_a.py", ("pytest", "-x", "tests/test_a.py")),
        ("  make\t -j2  check ", ("make", "-j2", "check")),
        ("./run --level=3 a,b +x @y", ("./run", "--level=3", "a,b", "+x", "@y")),
        ("python3 -m über", ("python3", "-m", "über")),
    ],
)
def test_a_simple_command_is_execd_as_its_words(command: str, argv: tuple[str, ...]) -> None:
    assert direct.exec_argv((SH, "-c", command)) == argv


@pytest.mark.parametrize(
    "command",
    [
        "true",  # builtins: the shell runs them itself
        "echo hi",
        "test -f x",
        "[ -f x ]",
        "cd sub",
        "exit 3",
        "if",
        "time make",  # bash's keyword where /bin/sh is bash, /usr/bin/time elsewhere
        "chdir sub",  # dash's builtin
        "shopt -s nullglob",  # bash's
        "A=1 make",  # an assignment
        "make 'a b'",  # quotes, escapes
        'make "a b"',
        "make a\\ b",
        "ls *.py",  # globs, tilde
        "ls ?",
        "ls [ab]",
        "ls ~",
        "echo $HOME",  # expansions
        "ls `pwd`",
        "a; b",  # lists, pipes, redirections, groups, comments, lines
        "a && b",
        "a | b",
        "a > out",
        "a < in",
        "(a)",
        "{ a; }",
        "a # note",
        "a\nb",
        "! a",
        "",
        "   ",
    ],
)
def test_anything_the_shell_interprets_goes_through_the_shell(command: str) -> None:
    assert direct.exec_argv((SH, "-c", command)) is None


def test_only_a_shell_command_line_is_looked_at() -> None:
    assert direct.exec_argv(("/bin/true",)) is None
    assert direct.exec_argv(("/bin/bash", "-c", "/bin/true")) is None
    assert direct.exec_argv((SH, "-e", "/bin/true")) is None
    assert direct.exec_argv((SH, "-c", "/bin/true", "name")) is None


PROBE = """#!{python}
import json, os, sys
json.dump({{'argv': sys.argv, 'cwd': os.getcwd(), 'env': dict(os.environ),
           'session': os.getpid() == os.getpgid(0) == os.getsid(0)}}, sys.stdout)
"""


def _run(argv: tuple[str, ...], cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``argv`` as the local executor's fast path does; what the probe saw."""
    log.write_bytes(b"")
    out_fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    in_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = spawn.spawn(argv, str(cwd), env, in_fd, out_fd)
    finally:
        os.close(out_fd)
        os.close(in_fd)
    assert pid is not None
    assert spawn.Child(pid).wait() == 0, log.read_text()
    seen: dict[str, Any] = json.loads(log.read_text())
    return seen


@pytest.mark.skipif(not spawn.AVAILABLE, reason=f"no posix_spawn: {spawn.UNAVAILABLE}")
@pytest.mark.parametrize("inherited", [None, "link", "real", "elsewhere", "relative"])
def test_the_program_sees_what_it_sees_through_the_shell(
    tmp_path: Path, inherited: str | None
) -> None:
    """Same arguments, directory and environment, ``PWD`` included: the inherited one when it
    names the directory (through a symbolic link too), else the physical path. Without the
    shell, the program leads its session, as an argv command does."""
    real = tmp_path / "real dir"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "elsewhere").mkdir()
    cwd = tmp_path / "link"
    probe = tmp_path / "probe"
    probe.write_text(PROBE.format(python=sys.executable))
    probe.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "ONE": "1"}
    if inherited is not None:
        env["PWD"] = "link" if inherited == "relative" else str(tmp_path / inherited)
    shell = (SH, "-c", f"{probe} one  two\tthree")
    argv = direct.exec_argv(shell)
    assert argv is not None
    direct_env = direct.exec_env(env, str(cwd), str(probe))
    assert direct_env is not None
    through_shell = _run(shell, cwd, env, tmp_path / "a.log")
    without_shell = _run(argv, cwd, direct_env, tmp_path / "b.log")
    assert without_shell.pop("session")
    through_shell.pop("session")  # the shell's child (dash), or the shell itself (bash)
    assert without_shell == through_shell
    assert through_shell["argv"] == [str(probe), "one", "two", "three"]
    expected = str(cwd) if inherited == "link" else str(real)
    assert through_shell["env"]["PWD"] == expected


@pytest.mark.skipif(not spawn.AVAILABLE, reason=f"no posix_spawn: {spawn.UNAVAILABLE}")
@pytest.mark.anyio
async def test_the_executor_starts_it_directly_and_leaves_the_rest_to_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[tuple[str, ...], bool]] = []
    real = spawn.spawn

    def noted(argv: tuple[str, ...], *args: Any) -> int | None:
        pid = real(argv, *args)
        started.append((tuple(argv), pid is not None))
        return pid

    monkeypatch.setattr(spawn, "spawn", noted)
    script = tmp_path / "no-shebang"
    script.write_text("echo from the script\nexit 4\n")  # the shell runs it, not exec
    script.chmod(0o755)
    async with LocalExecutor(1.0) as executor:

        async def run(command: str) -> tuple[Any, bytes]:
            spec = ExecutorContract.spec(tmp_path, (SH, "-c", command))
            info = await executor.wait((await executor.submit(spec)).run_id)
            return info, await ExecutorContract.log_of(executor, spec.run_id)

        info, _ = await run("/bin/true")
        assert info.succeeded
        assert started == [(("/bin/true",), True)]  # one start, no shell

        started.clear()
        info, out = await run("no-such-program-here --flag")
        assert (info.state, info.exit_code) == (RunState.EXITED, 127)
        assert b"not found" in out  # the shell's own words
        assert [ok for _, ok in started] == [False, True]

        started.clear()
        info, out = await run(str(script))
        assert (info.state, info.exit_code) == (RunState.EXITED, 4)
        assert out == b"from the script\n"
        assert started == [((str(script),), False), ((SH, "-c", str(script)), True)]

        started.clear()
        info, out = await run("echo $0")
        assert out == b"/bin/sh\n"
        assert started == [((SH, "-c", "echo $0"), True)]


@pytest.mark.parametrize(
    "env",
    [
        {},  # no PATH: the shell's default path is not Python's
        {"PATH": "/usr/bin:/bin", "SHELLOPTS": "xtrace"},  # bash: prints "+ make check"
        {"PATH": "/usr/bin:/bin", "BASH_FUNC_make%%": "() { echo not make; }"},  # bash runs it
        {"PATH": "/usr/bin:/bin", "BASH_FUNC_make()": "() { echo not make; }"},
    ],
)
def test_an_environment_the_shell_would_act_on_goes_through_the_shell(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert direct.exec_env(env, str(tmp_path), "make") is None
    other = {"PATH": "/usr/bin:/bin", "BASH_FUNC_other%%": "() { :; }"}
    assert direct.exec_env(other, str(tmp_path), "make") is not None


def test_pwd_follows_the_file_system_as_it_changes(tmp_path: Path) -> None:
    """An inherited PWD that no longer names the directory, or a physical path that changed,
    is not taken for the directory's (the shell looks each time)."""
    real = tmp_path / "real"
    (real / "work").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    cwd = str(real / "work")
    env = {"PATH": os.defpath, "PWD": str(link / "work")}
    assert _pwd(env, cwd) == str(link / "work")
    link.unlink()
    link.symlink_to(tmp_path / "other")  # the inherited PWD names another directory now
    assert _pwd(env, cwd) == os.path.realpath(cwd)

    via = tmp_path / "via"
    via.symlink_to(real)
    cwd = str(via / "work")
    assert _pwd({"PATH": os.defpath}, cwd) == os.path.realpath(real / "work")
    real.rename(tmp_path / "moved")
    via.unlink()
    via.symlink_to(tmp_path / "moved")  # the same directory, its physical path another
    assert _pwd({"PATH": os.defpath}, cwd) == os.path.realpath(tmp_path / "moved" / "work")


def _pwd(env: dict[str, str], cwd: str) -> str:
    out = direct.exec_env(env, cwd, "make")
    assert out is not None
    return out["PWD"]
