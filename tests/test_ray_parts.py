"""The parts of running on Ray that need no cluster: the node-side wrapper (run here, as a job's
entrypoint would be), framing and outcomes of job logs, settings, the store's remote runs,
recovery, resuming an attempt, and a cluster that cannot be reached."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator import config, runbranch
from orchestrator import store as store_module
from orchestrator.attempt import AttemptPlan, RemoteRun, run_attempt
from orchestrator.errors import ConfigError
from orchestrator.executors import rayjob
from orchestrator.executors.base import Capacity, Checkout, RunInfo, RunSpec, RunState, unfit
from orchestrator.executors.local import LocalExecutor
from orchestrator.executors.ray import RayCluster, RayExecutor, _recovered
from orchestrator.model import ExecutorChoice, Owned, Status, TaskKey, Verdict
from orchestrator.placement import RayPlan, WorkspaceError, _git_workspace, ray_plan
from orchestrator.queuefile import display_path
from orchestrator.recovery import recover
from orchestrator.runbranch import RunBranchError
from orchestrator.states import TaskState
from orchestrator.store import _SCHEMA, Store
from orchestrator.workspace import load

from .executor_contract import process_gone, python
from .fakes import FixedClock
from .process_harness import wait_for

NONCE = "n0nce"
JOB = "j-1"


# -- the node-side wrapper, run here ---------------------------------------------------------


class Job:
    """A job's entrypoint run by ``/bin/sh`` with its output in a log file, as Ray does."""

    def __init__(self, tmp_path: Path, argv: tuple[str, ...], **options: Any) -> None:
        self.log = tmp_path / f"job-{time.monotonic_ns()}.log"
        # Ray writes this line before the entrypoint's output; the wrapper waits for it.
        self.log.write_text(f"Running entrypoint for job {JOB}: ...\n")
        fields = {k: options.pop(k) for k in ("cwd", "env", "timeout", "checkout") if k in options}
        spec = RunSpec(
            run_id="r",
            argv=argv,
            cwd=str(fields.get("cwd", tmp_path)),
            env=fields.get("env", {"PATH": os.environ["PATH"]}),
            log_path="",
            timeout=fields.get("timeout"),
            checkout=fields.get("checkout"),
        )
        data = rayjob.payload(
            spec,
            job=JOB,
            nonce=NONCE,
            grace=options.pop("grace", 0.3),
            cap=options.pop("cap", 1 << 20),
            env_mode=options.pop("env_mode", "exact"),
            work_root=str(options.pop("work_root", tmp_path / "work")),
            stdin=options.pop("stdin", None),
            files=options.pop("files", None),
        )
        command = rayjob.entrypoint(JOB, sys.executable, data)
        prefix: list[str] = options.pop("prefix", [])
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*prefix, "/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float = 20) -> rayjob.Framed:
        self.proc.wait(timeout)
        return self.framed()

    def framed(self) -> rayjob.Framed:
        return rayjob.frame(self.log.read_bytes(), NONCE)


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    started: list[Job] = []
    yield started
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def start(jobs: list[Job], tmp_path: Path, argv: tuple[str, ...], **options: Any) -> Job:
    job = Job(tmp_path, argv, **options)
    jobs.append(job)
    return job


def test_the_entrypoint_runs_the_wrapper_and_brackets_the_output(
    tmp_path: Path, jobs: list[Job]
) -> None:
    argv = python(
        "import os, sys\n"
        "print('out', os.getcwd(), os.environ.get('ONLY'), 'HOME' in os.environ, flush=True)\n"
        "sys.stderr.write('err\\n'); sys.exit(3)\n"
    )
    env = {"PATH": os.environ["PATH"], "ONLY": "this"}
    job = start(jobs, tmp_path, argv, env=env)
    framed = job.wait()
    assert job.proc.returncode == 3, "the job ends as the command did"
    assert framed.start is not None
    assert framed.start["pid"] == job.proc.pid
    assert framed.body == f"out {tmp_path} this False\nerr\n".encode()
    assert framed.end is not None
    assert (framed.end["state"], framed.end["code"], framed.end["reason"]) == ("exited", 3, None)
    assert framed.end["started"] <= framed.end["t"]


def test_overlay_keeps_the_nodes_environment_and_stdin_arrives(
    tmp_path: Path, jobs: list[Job]
) -> None:
    argv = python(
        "import os, sys; print(sys.stdin.read(), os.environ['ADDED'], 'HOME' in os.environ)"
    )
    env = {"ADDED": "yes"}
    job = start(jobs, tmp_path, argv, env=env, env_mode="overlay", stdin=b"piped")
    framed = job.wait()
    assert framed.body == b"piped yes True\n"


def test_files_the_environment_names_are_copied_to_the_node(
    tmp_path: Path, jobs: list[Job]
) -> None:
    argv = python(
        "import os\n"
        "path = os.environ['ORCHESTRATORD_FAILURE_FILE']\n"
        "print(open(path).read(), path.endswith('last-failure.txt'), path.startswith('/daemon'))\n"
    )
    env = {"PATH": os.environ["PATH"], "ORCHESTRATORD_FAILURE_FILE": "/daemon/t/last-failure.txt"}
    files = {"ORCHESTRATORD_FAILURE_FILE": b"the command exited with status 7"}
    framed = start(jobs, tmp_path, argv, env=env, files=files).wait()
    assert framed.body == b"the command exited with status 7 True False\n"


def test_the_timeout_ends_the_commands_group_on_the_node(tmp_path: Path, jobs: list[Job]) -> None:
    pidfile = tmp_path / "bg.pid"
    argv = ("/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; sleep 30")
    job = start(jobs, tmp_path, argv, timeout=0.3)
    framed = job.wait()
    assert framed.end is not None
    assert framed.end["state"] == "timed_out"
    assert framed.end["reason"] == "timed out after 0.3 s"
    assert job.proc.returncode == 124
    assert process_gone(int(pidfile.read_text()))


def test_sigterm_cancels_and_kills_what_ignores_it_after_the_grace(
    tmp_path: Path, jobs: list[Job]
) -> None:
    pidfile = tmp_path / "stubborn.pid"
    stubborn = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pidfile)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"os.rename({str(pidfile)!r} + '.tmp', {str(pidfile)!r})\n"
        "time.sleep(60)\n"
    )
    job = start(jobs, tmp_path, python(stubborn), grace=0.5)
    wait_for(pidfile.exists, timeout=10)
    before = time.monotonic()
    job.proc.send_signal(signal.SIGTERM)  # what `ray job stop` sends first
    framed = job.wait()
    assert time.monotonic() - before >= 0.45
    assert framed.end is not None
    assert framed.end["state"] == "cancelled"
    assert process_gone(int(pidfile.read_text()))


def test_when_its_parent_dies_the_wrapper_ends_the_command(tmp_path: Path, jobs: list[Job]) -> None:
    pidfile = tmp_path / "cmd.pid"
    argv = python(
        f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)"
    )
    parent = "import subprocess, sys, time\nsubprocess.Popen(sys.argv[1:]); time.sleep(60)\n"
    job = start(jobs, tmp_path, argv, prefix=[sys.executable, "-c", parent])
    wait_for(lambda: pidfile.exists() and pidfile.read_text() != "", timeout=10)
    job.proc.kill()  # the job's supervisor dies
    job.proc.wait()
    wait_for(lambda: job.framed().end is not None, timeout=10)
    end = job.framed().end
    assert end is not None
    assert end["state"] == "lost"
    assert "supervisor died" in end["reason"]
    wait_for(lambda: process_gone(int(pidfile.read_text())), timeout=5)


def test_what_the_command_leaves_in_its_group_gets_sigterm(tmp_path: Path, jobs: list[Job]) -> None:
    pidfile = tmp_path / "bg.pid"
    job = start(jobs, tmp_path, ("/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}"))
    framed = job.wait()
    assert framed.end is not None
    assert (framed.end["state"], framed.end["code"]) == ("exited", 0)
    wait_for(lambda: process_gone(int(pidfile.read_text())), timeout=5)


@pytest.mark.parametrize(
    ("argv", "cwd", "reason"),
    [
        (("true",), "missing", "working directory not found: {tmp}/missing"),
        (("orch-no-such-command",), ".", "command not found: 'orch-no-such-command'"),
    ],
)
def test_a_command_that_cannot_start_is_reported_so(
    tmp_path: Path, jobs: list[Job], argv: tuple[str, ...], cwd: str, reason: str
) -> None:
    job = start(jobs, tmp_path, argv, cwd=tmp_path / cwd)
    framed = job.wait()
    assert job.proc.returncode == 127
    assert framed.end is not None
    assert framed.end["state"] == "failed_to_start"
    assert framed.end["reason"].startswith(reason.format(tmp=tmp_path))
    assert framed.body.decode().startswith(reason.format(tmp=tmp_path))


def test_output_becomes_valid_utf8_and_only_its_tail_is_kept_past_the_cap(
    tmp_path: Path, jobs: list[Job]
) -> None:
    argv = python(
        "import sys\n"
        "sys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff\\n')\n"
        "for i in range(300): print(f'{i:04}')\n"
    )
    framed = start(jobs, tmp_path, argv, cap=100).wait()
    text = framed.body.decode("utf-8")
    assert text.startswith("café \ufffd\n0000\n")
    assert "bytes of output dropped on the node" in text
    assert text.endswith("0298\n0299\n")
    assert len(framed.body) < 300


def git(*args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    return subprocess.run([*base, *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    bare, seed = tmp_path / "origin.git", tmp_path / "seed"
    git("init", "-q", "--bare", str(bare))
    git("init", "-q", str(seed))
    (seed / "sub").mkdir()
    (seed / "sub" / "f").write_text("1\n")
    git("-C", str(seed), "add", "-A")
    git("-C", str(seed), "commit", "-qm", "seed")
    git("-C", str(seed), "push", "-q", str(bare), "HEAD:main")
    return bare


def test_a_git_workspace_is_checked_out_and_its_result_pushed(
    tmp_path: Path, jobs: list[Job], origin: Path
) -> None:
    work = tmp_path / "work"
    argv = ("/bin/sh", "-c", "cat f; echo 2 > f; echo new > g")
    checkout = Checkout(str(origin), "main", push=True)
    framed = start(jobs, tmp_path, argv, cwd="sub", checkout=checkout, work_root=work).wait()
    assert framed.body == b"1\n"
    assert framed.end is not None
    assert framed.end["branch"] == f"orchestratord/{JOB}"
    assert git("-C", str(origin), "rev-parse", framed.end["branch"]).strip() == framed.end["commit"]
    assert git("-C", str(origin), "show", f"{framed.end['branch']}:sub/f") == "2\n"
    assert git("-C", str(origin), "show", f"{framed.end['branch']}:sub/g") == "new\n"
    assert not os.listdir(work)


def test_a_git_workspace_on_a_missing_ref_fails_to_start(
    tmp_path: Path, jobs: list[Job], origin: Path
) -> None:
    checkout = Checkout(str(origin), "no-such-branch")
    framed = start(jobs, tmp_path, ("true",), cwd=".", checkout=checkout).wait()
    assert framed.end is not None
    assert framed.end["state"] == "failed_to_start"
    assert "has no ref 'no-such-branch' (push it first)" in framed.end["reason"]


@pytest.mark.anyio
async def test_the_daemon_side_of_a_git_workspace(tmp_path: Path, origin: Path) -> None:
    """What a run starts from (repository, commit, directory inside it), and fetching the
    branch the run pushed, with clear failures."""
    clone = tmp_path / "clone"
    git("clone", "-q", str(origin), str(clone))
    head = git("-C", str(clone), "rev-parse", "HEAD").strip()
    ray = RayPlan("ray://x", {}, 0, "git", None, None)
    for workdir, cwd in ((clone, "."), (clone / "sub", "sub")):
        remote, got = await _git_workspace(workdir, ray, RemoteRun())
        assert got == cwd
        assert remote.checkout == Checkout(str(origin), head, push=True)
        assert remote.fetch_into == str(clone.resolve())
    with pytest.raises(WorkspaceError, match=r"workdir in a git repository: .*gone: no such dir"):
        await _git_workspace(tmp_path / "gone", ray, RemoteRun())

    git("-C", str(clone), "push", "-q", str(origin), "HEAD:orchestratord/r1")
    ref = await runbranch.fetch(str(clone), str(origin), "orchestratord/r1", head)
    assert ref == "refs/heads/orchestratord/r1"
    assert git("-C", str(clone), "rev-parse", ref).strip() == head
    with pytest.raises(
        RunBranchError, match=r"is at \w+ after fetching, not at the commit the run pushed"
    ):
        await runbranch.fetch(str(clone), str(origin), "orchestratord/r1", "0" * 40)
    with pytest.raises(RunBranchError, match="cannot fetch the run's branch orchestratord/r2"):
        await runbranch.fetch(str(clone), str(origin), "orchestratord/r2", head)


# -- reading job logs and states -----------------------------------------------------------------


def log_of(body: bytes, end: dict[str, Any] | None = None, nonce: str = NONCE) -> bytes:
    data = b"Runtime env is setting up.\nRunning entrypoint for job j: x\n"
    data += f'\x1eorchestratord start {nonce} {{"pid": 1, "node": "n", "t": 1.0}}\n'.encode()
    data += body
    if end is not None:
        data += f"\x1eorchestratord end {nonce} {json.dumps(end)}\n".encode()
    return data


def test_frame_cuts_out_the_output_and_holds_back_a_partial_end_marker() -> None:
    assert rayjob.frame(b"Runtime env is setting up.\n", NONCE) == rayjob.Framed(None, b"", None)
    whole = log_of(b"a\nno newline", {"state": "exited", "code": 0})
    framed = rayjob.frame(whole, NONCE)
    assert framed.body == b"a\nno newline"
    assert framed.end == {"state": "exited", "code": 0}
    cut = whole.index(b"\x1eorchestratord end") + 5
    partial = rayjob.frame(whole[:cut], NONCE)
    assert partial.body == b"a\nno newline"
    assert partial.end is None
    no_line_end = rayjob.frame(whole[:-1], NONCE)
    assert (no_line_end.body, no_line_end.end) == (b"a\nno newline", None)


def test_output_past_the_journaled_size_counts_only_when_it_is_the_output_that_follows(
    tmp_path: Path,
) -> None:
    """After a restart: what a daemon killed between writing output and journaling it left at
    the end of the log is not written again; nothing else is taken for output."""
    log, body = tmp_path / "run.log", b"line 1\nline 2\nline 3\n"
    log.write_bytes(b"$ cmd\nline 1\n")
    size = log.stat().st_size  # journaled: 7 bytes of output, the file this long
    assert _recovered(str(log), body, 7, size) == 7
    with log.open("ab") as handle:
        handle.write(b"line 2\n")  # written, then killed before journaling
    assert _recovered(str(log), body, 7, size) == 14
    assert _recovered(str(log), body[:10], 7, size) == 7  # more than there is output
    log.write_bytes(b"$ cmd\nline 1\n--- note\n")  # something else
    assert _recovered(str(log), body, 7, size) == 7
    log.write_bytes(b"[... dropped ...]\n")  # trimmed since
    assert _recovered(str(log), body, 7, size) == 7
    assert _recovered(str(tmp_path / "gone.log"), body, 7, size) == 7


def test_markers_of_another_nonce_are_output() -> None:
    fake = b'\x1eorchestratord end other {"state": "exited", "code": 0}\n'
    framed = rayjob.frame(log_of(b"x\n" + fake), NONCE)
    assert framed.body == b"x\n" + fake
    assert framed.end is None


@pytest.mark.parametrize(
    ("job", "end", "stopped", "state", "words"),
    [
        ({"status": "SUCCEEDED"}, {"state": "exited", "code": 0}, False, RunState.EXITED, None),
        (
            {"status": "FAILED"},
            {"state": "timed_out", "code": 124, "reason": "timed out after 2 s"},
            False,
            RunState.TIMED_OUT,
            "timed out after 2 s",
        ),
        ({"status": "STOPPED"}, None, True, RunState.CANCELLED, "cancelled"),
        ({"status": "STOPPED"}, None, False, RunState.CANCELLED, "ray job stop"),
        (
            {"status": "FAILED", "error_type": "JOB_SUPERVISOR_ACTOR_DIED", "message": "boom"},
            None,
            False,
            RunState.LOST,
            "JOB_SUPERVISOR_ACTOR_DIED",
        ),
        (
            {"status": "FAILED", "error_type": "JOB_SUPERVISOR_ACTOR_DIED", "message": "boom"},
            {"state": "lost", "code": -15, "reason": "x"},
            False,
            RunState.LOST,
            "boom",
        ),
        (
            {"status": "FAILED", "error_type": "RUNTIME_ENV_SETUP_FAILURE", "message": "pip"},
            None,
            False,
            RunState.FAILED_TO_START,
            "could not start",
        ),
        (
            {"status": "FAILED", "driver_exit_code": 127, "message": "python3: not found"},
            None,
            False,
            RunState.FAILED_TO_START,
            "is `python3` on the node's PATH",
        ),
        ({"status": "SUCCEEDED"}, None, False, RunState.LOST, "without an outcome"),
    ],
)
def test_outcomes_of_ended_jobs(
    job: dict[str, Any],
    end: dict[str, Any] | None,
    stopped: bool,
    state: RunState,
    words: str | None,
) -> None:
    result = rayjob.outcome(job, end, stopped)
    assert result.state is state
    if words is None:
        assert result.reason is None
    else:
        assert result.reason is not None
        assert words in result.reason


def test_unfit_says_what_was_asked_and_what_the_nodes_offer() -> None:
    capacity = Capacity(({"CPU": 4.0, "agent_slot": 2.0}, {"CPU": 16.0}), "the Ray cluster at X")
    assert unfit({"CPU": 4.0, "agent_slot": 1.0}, capacity) is None
    assert unfit({"CPU": 16.0, "GPU": 0.0}, capacity) is None
    reason = unfit({"CPU": 8.0, "agent_slot": 1.0, "memory": float(1 << 30)}, capacity)
    assert reason is not None
    assert reason.startswith("no node of the Ray cluster at X can ever run it: it asks for ")
    assert "agent_slot=1, memory=1024 MiB" in reason
    assert unfit({"CPU": 1.0}, Capacity((), "the Ray cluster at X")) == (
        "the Ray cluster at X has no node that is up"
    )


# -- a cluster that cannot be reached --------------------------------------------------------


@pytest.mark.anyio
async def test_an_unreachable_cluster_fails_runs_with_its_address(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cluster = RayCluster(address, unreachable_limit=0.3)
    spec = RunSpec("r1", ("true",), str(tmp_path), {}, str(tmp_path / "r1.log"))
    async with RayExecutor(cluster) as executor:
        with anyio.fail_after(10):
            info = await executor.submit(spec)
            lost = await executor.attach(RunSpec("r2", ("true",), "/", {}, str(tmp_path / "x")))
    assert info.state is RunState.FAILED_TO_START
    assert info.reason is not None
    assert info.reason.startswith(f"cannot reach the Ray Jobs API at {address}")
    assert info.reason in (tmp_path / "r1.log").read_text()
    assert lost.state is RunState.LOST


@pytest.mark.anyio
async def test_a_run_too_large_for_a_job_is_refused_before_submitting(tmp_path: Path) -> None:
    huge = os.urandom(100_000).hex()  # does not compress: more than one argument may hold
    spec = RunSpec("r", ("echo", huge), str(tmp_path), {}, str(tmp_path / "r.log"))
    async with RayExecutor(RayCluster("http://127.0.0.1:9", unreachable_limit=0.1)) as executor:
        info = await executor.submit(spec)
    assert info.state is RunState.FAILED_TO_START
    assert info.reason is not None
    assert "too large for a Ray job" in info.reason


# -- settings ---------------------------------------------------------------------------------


def test_ray_settings_refuse_runs_that_reserve_nothing(tmp_path: Path) -> None:
    (tmp_path / "orchestratord.toml").write_text('executor = "ray"\n[ray]\ncpus = 0\n')
    with pytest.raises(ConfigError, match="a run would reserve nothing"):
        config.load(env={}, cwd=tmp_path)
    (tmp_path / "orchestratord.toml").write_text("[ray]\ncpus = 0\nresources = {agent_slot = 1}\n")
    assert config.load(env={}, cwd=tmp_path).settings.ray.resources == {"agent_slot": 1.0}
    (tmp_path / "orchestratord.toml").write_text('[ray]\nadress = "http://x"\n')
    with pytest.raises(ConfigError, match="did you mean 'address'"):
        config.load(env={}, cwd=tmp_path)
    cfg = config.load(env={"ORCHESTRATORD_EXECUTOR": "ray"}, cwd=tmp_path / "..")
    assert cfg.settings.executor == "ray"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cluster", 'unknown executor string "cluster"; allowed: "local", "ray"'),
        ({"type": "ray", "cpu": 2}, "unknown executor setting 'cpu'; did you mean 'cpus'?"),
        ({"cpus": 2}, 'executor "type" must be "local" or "ray"'),
        ({"type": "ray", "cpus": 0}, "cpus: 0 with no other resource would reserve nothing"),
        ({"type": "ray", "resources": {"agent_slot": 0}}, "names to amounts > 0"),
        ({"type": "ray", "workspace": "nfs"}, 'workspace: "shared" or "git"'),
    ],
)
def test_track_executor_errors_name_the_file_and_place(
    tmp_path: Path, value: object, message: str
) -> None:
    doc = {"track": {"executor": value}, "tasks": [{"id": "T", "command": "true"}]}
    (tmp_path / "t.json").write_text(json.dumps(doc))
    problems = [p.render() for p in load([tmp_path]).report.problems]
    assert len(problems) == 1
    assert problems[0].startswith(f"{display_path(tmp_path / 't.json')}: track.executor: ")
    assert message in problems[0]


def test_a_tracks_executor_overrides_the_config() -> None:
    settings = config.Settings.model_validate(
        {"ray": {"address": "http://head:8265/", "cpus": 2, "resources": {"agent_slot": 1}}}
    )
    assert ray_plan(settings, None) is None
    assert ray_plan(settings, ExecutorChoice("local")) is None
    plan = ray_plan(settings, ExecutorChoice("ray"))
    assert plan is not None
    assert plan.address == "http://head:8265"
    assert plan.resources == {"CPU": 2.0, "agent_slot": 1.0}
    choice = ExecutorChoice(
        "ray",
        address="http://other:8265",
        cpus=0,
        memory_mb=512,
        resources=(("agent_slot", 2.0), ("gpu_box", 1.0)),
        workspace="git",
        ref="dev",
    )
    plan = ray_plan(settings, choice)
    assert plan is not None
    assert plan.address == "http://other:8265"
    assert plan.resources == {"memory": float(512 << 20), "agent_slot": 2.0, "gpu_box": 1.0}
    assert (plan.workspace, plan.ref, plan.repo) == ("git", "dev", None)
    everywhere = config.Settings.model_validate({"executor": "ray"})
    assert ray_plan(everywhere, None) is not None
    assert ray_plan(everywhere, ExecutorChoice("local")) is None


# -- the store and recovery -------------------------------------------------------------------


def test_a_schema_1_database_gains_remote_runs_and_keeps_its_data(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.executescript(f"{_SCHEMA}\nPRAGMA user_version=1;")
        db.execute(
            "INSERT INTO attempts (id, track, task_id, number, iteration, state, started_at,"
            " log_path, daemon_pid) VALUES (1, 't', 'A', 1, 1, 'finished', 'x', 'l', 1)"
        )
        db.execute(
            "INSERT INTO processes (attempt_id, role, argv, cwd, pid, pgid, started_at, ended_at)"
            " VALUES (1, 'run', '[\"true\"]', '/', 5, 5, 'x', 'y')"
        )
    store = Store.open(tmp_path, FixedClock())
    [proc] = store.processes(1)
    assert (proc.pid, proc.executor, proc.run_id) == (5, "local", None)
    assert store.run_log_mark("a1-run") == (0, None)
    store.set_run_log_mark("a1-run", 10, 300)
    store.set_run_log_mark("a1-run", 42, None)  # no size, as an older daemon journaled it
    store.close()
    again = Store.open(tmp_path, FixedClock())
    assert again.run_log_mark("a1-run") == (42, None)
    again.set_run_log_mark("a1-run", 50, 900)
    assert again.run_log_mark("a1-run") == (50, 900)
    assert again.run_log_mark("a2-run") == (0, None)
    version = again._db.execute("PRAGMA user_version").fetchone()[0]
    assert version == store_module.SCHEMA_VERSION


def test_recovery_leaves_attempts_with_remote_runs_for_the_daemon(tmp_path: Path) -> None:
    store = Store.open(tmp_path, FixedClock())
    local, remote = TaskKey("t", "LOCAL"), TaskKey("t", "REMOTE")
    running = TaskState(Owned(status=Status.IN_PROGRESS))
    ids = {}
    for key in (local, remote):
        ids[key] = store.begin_attempt(key, running, 1, 1, f"{key.id}.log")
    store.record_process(ids[local], "run", ["x"], "/", None, None, None, run_id="l")
    store.record_process(
        ids[remote], "run", ["x"], "/", None, None, None, executor="ray:http://h", run_id="a2-run"
    )
    result = recover(store, 0.1)
    assert result.attempts_interrupted == (ids[local],)
    assert result.attempts_remote == (ids[remote],)
    assert result.tasks_requeued == (local,)
    states = store.load_tasks()
    assert states[local].status is Status.PENDING
    assert states[remote].status is Status.IN_PROGRESS
    assert [r.run_id for r in store.remote_attempts()[ids[remote]]] == ["a2-run"]
    assert store.open_run("a2-run") is not None


# -- resuming an attempt ----------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.roles: list[str] = []

    def started(self, role: str, spec: RunSpec, info: RunInfo) -> int:
        self.roles.append(role)
        return len(self.roles)

    def ended(self, record_id: int, info: RunInfo) -> None:
        pass


@pytest.mark.anyio
async def test_a_resumed_attempt_attaches_and_writes_no_header_twice(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    argv = python("print('work'); print('<promise>DONE</promise>')")
    plan = AttemptPlan(
        key=TaskKey("t", "A"),
        attempt_id=7,
        number=1,
        run_argv=argv,
        run_error=None,
        cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"]},
        timeout=10,
        verify=("true",),
        verify_timeout=10,
        promise="DONE",
        log_path=str(log),
    )
    async with LocalExecutor(0.5) as executor:
        # What the daemon did before it stopped: the headers, then the run was submitted.
        import shlex

        log.write_text(f"=== t:A attempt 1 ===\n$ {shlex.join(argv)}\n")
        spec = RunSpec("a7-run", argv, str(tmp_path), plan.env, str(log), timeout=10)
        await executor.wait((await executor.submit(spec)).run_id)
        recorder = Recorder()
        result = await run_attempt(plan, executor, recorder, frozenset({"a7-run"}))
    assert result.verdict is Verdict.PASS, result
    text = log.read_text()
    assert text.count("=== t:A attempt 1 ===") == 1
    assert text.count("$ ") == 1
    assert text.count("work\n") == 1, "the run was attached to, not run again"
    assert "=== verify 1/1: true ===" in text
    assert recorder.roles == ["run", "verify 1"]
