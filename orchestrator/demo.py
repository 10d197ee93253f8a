"""``make run``: the demo tracks, run for real, offline, in a scratch directory.

It copies ``tracks/`` into a new directory outside the project, makes a scratch git repository
for the work, writes a config whose agent is the bundled demo agent, and runs every track with
``start --once``: live progress, the patient-facing track starting when PROVIDER-013 completes,
verification failures on first attempts fixed by the next, and a summary at the end. The three
tracks share the scratch repository, so each works in a worktree of its own on its own branch,
and every verified task becomes one commit merged into the repository's default branch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from . import config, logs, queuefile, supervisor

PROJECT = Path(__file__).resolve().parent.parent
FLAKY = "PROVIDER-007,PROVIDER-012,PROVIDER-018"

CONFIG = """\
tracks = "tracks"
state_dir = "state"
max_parallel = 3
writeback_delay = 0.1

[defaults]
max_iterations = 3
timeout = 60
verify_timeout = 60

[agents.demo]
argv = [{python!r}, "-m", "orchestrator.demo_agent", "{{prompt}}"]
env = {{ DEMO_FLAKY = "{flaky}" }}
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def prepare(scratch: Path, source: Path) -> Path:
    """Lay out the scratch directory; return its config file."""
    tracks = scratch / "tracks"
    tracks.mkdir(parents=True)
    for path in queuefile.discover(source):
        shutil.copy2(path, tracks / path.name)
    repo = scratch / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "README.md").write_text("Scratch project for the orchestratord demo.\n")
    if shutil.which("git"):
        _git(repo, "init", "-q")
        _git(repo, "config", "user.name", "orchestratord demo")
        _git(repo, "config", "user.email", "demo@localhost")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "An empty project")
    path = scratch / "orchestratord.toml"
    path.write_text(
        CONFIG.format(python=sys.executable, flaky=FLAKY),
        encoding="utf-8",
    )
    return path


def git_summary(repo: Path) -> list[str]:
    """What the tracks committed: task commits per track branch, and on the default branch."""
    if not shutil.which("git") or not (repo / ".git").exists():
        return []

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    base = git("symbolic-ref", "--short", "HEAD")
    lines = [f"git: {repo} on {base}"]
    branches = git("for-each-ref", "--format=%(refname:short)", "refs/heads/orchestratord/")
    for branch in branches.splitlines():
        track = branch.removeprefix("orchestratord/")
        count = len(
            git("log", "--no-merges", "--format=%H", f"--grep=^Track: {track}$", branch).split()
        )
        lines.append(f"  {branch:<34} {count} task commit{'s' if count != 1 else ''}")
    merged = len(git("log", "--no-merges", "--format=%H", "--grep=^Task: ", base).split())
    lines.append(f"  {base:<34} {merged} task commits merged")
    lines.append(f"  see them: git -C {repo} log --graph --oneline --all")
    return lines


def main() -> int:
    console = Console()
    scratch = Path(tempfile.mkdtemp(prefix="orchestratord-demo-"))
    config_file = prepare(scratch, PROJECT / "tracks")
    cfg = config.load(config_file=str(config_file), env={})
    console.print(
        f"[bold]orchestratord demo[/]: the three tracks of tracks/ in {scratch}\n"
        "  backend and credentialing-ui start now; patient-facing waits for "
        "backend:PROVIDER-013.\n"
        f"  The demo agent gets {FLAKY.replace(',', ', ')} wrong on the first attempt; "
        "verification catches it.\n"
    )
    logs.configure("warning", "console")
    code = supervisor.run(cfg, once=True, progress=True)
    console.print(
        f"\nqueue files: {scratch / 'tracks'}   work: {scratch / 'repo'}\n"
        f"look closer: .venv/bin/orchestratord status --config {config_file}\n"
        f"             .venv/bin/orchestratord prompt PROVIDER-013 --config {config_file}\n"
        f"             jq .summary {scratch / 'tracks'}/*.json",
        soft_wrap=True,
        highlight=False,
    )
    for line in git_summary(scratch / "repo"):
        console.print(line, highlight=False, soft_wrap=True)
    done = "[green]all tracks complete[/]"
    console.print(done if code == 0 else "[red]some tasks did not complete[/]")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
