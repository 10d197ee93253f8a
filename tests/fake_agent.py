"""A stand-in for an agent CLI, for tests: it does what a plan file says, and records its run.

Run as ``fake_agent.py PLAN ARGS...`` (through a small executable that names the plan), with
the prompt in its arguments (after ``-p`` or ``--message``, or as the last argument) or on
stdin. The plan (JSON) says, per task id, what each of its runs does (the last entry repeats):

* ``write``: {path: text} files to write (relative to the working directory), ``delete``: paths;
* ``append``: {path: text} to add to files;
* ``say``: text for the final answer; ``promise``: print the prompt's promise (default true);
* ``blocked``: a reason to report as ``<blocked>``;
* ``json``: print Claude-style stream-json (with ``cost`` and ``tokens`` [in, out]);
* ``limit``: a usage-limit message (printed, then exit 1);
* ``commit``: run ``git commit -am`` itself; ``exit``: the exit status;
* ``touch``: a path to create, ``wait_for``: a path to wait for (to order two agents).

Run N of a task writes ``RECORD/TASK-N.json``: argv, stdin, cwd, environment, the files it saw.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def _prompt(argv: list[str], stdin: str) -> str:
    for flag in ("-p", "--message"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            return argv[argv.index(flag) + 1] or stdin
    return stdin or (argv[-1] if argv else "")


def _seen(cwd: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(cwd):
        dirs[:] = [d for d in dirs if d != ".git"]
        out += [str(Path(root, f).relative_to(cwd)) for f in files]
    return sorted(out)


def main() -> int:
    plan_path, *argv = sys.argv[1:]
    plan = json.loads(Path(plan_path).read_text())
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    task = os.environ.get("ORCHESTRATORD_TASK_ID", "?")
    record = Path(plan["record"])
    record.mkdir(parents=True, exist_ok=True)
    run = len(list(record.glob(f"{glob.escape(task)}-*.json"))) + 1
    steps = plan["tasks"].get(task, [{}])
    step = steps[min(run, len(steps)) - 1]
    cwd = Path.cwd()
    env = {k: v for k, v in os.environ.items() if k.startswith(("ORCHESTRATORD_", "FAKE_"))}
    prompt = _prompt(argv, stdin)
    (record / f"{task}-{run}.json").write_text(
        json.dumps(
            {
                "argv": argv,
                "stdin": stdin,
                "prompt": prompt,
                "cwd": str(cwd),
                "env": env,
                "seen": _seen(cwd),
            },
            indent=1,
        )
    )
    if "touch" in step:
        Path(step["touch"]).touch()
    if "wait_for" in step:
        deadline = time.monotonic() + 20
        while not Path(step["wait_for"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    for path, text in step.get("write", {}).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    for path, text in step.get("append", {}).items():
        with open(path, "a") as handle:
            handle.write(text)
    for path in step.get("delete", []):
        Path(path).unlink()
    if step.get("commit"):
        subprocess.run(["git", "add", "-A"], check=True)
        subprocess.run(["git", "commit", "-qm", "agent's own commit"], check=True)
    answer = step.get("say", "done")
    found = re.search(r"<promise>(.+?)</promise>", prompt)
    if found and step.get("promise", True):
        answer += f"\n{found.group(0)}"
    if "blocked" in step:
        answer += f"\n<blocked>{step['blocked']}</blocked>"
    code = int(step.get("exit", 0))
    if "limit" in step:
        answer, code = step["limit"], 1
    if step.get("json"):
        tokens_in, tokens_out = step.get("tokens", [100, 20])
        print(json.dumps({"type": "system", "subtype": "init", "session_id": "s"}))
        tool = {"type": "tool_result", "content": "<promise>NOT_FROM_A_TOOL</promise>"}
        print(json.dumps({"type": "user", "message": {"content": [tool]}}))
        print(
            json.dumps(
                {
                    "type": "assistant",
                    "message": {
                        "id": "m1",
                        "content": [{"type": "text", "text": "working"}],
                        "usage": {"input_tokens": 1, "output_tokens": 1},
                    },
                }
            )
        )
        print(
            json.dumps(
                {
                    "type": "result",
                    "subtype": "success" if code == 0 else "error_during_execution",
                    "is_error": code != 0,
                    "result": answer,
                    "total_cost_usd": step.get("cost", 0.01),
                    "usage": {
                        "input_tokens": tokens_in,
                        "output_tokens": tokens_out,
                        "cache_read_input_tokens": 0,
                        "cache_creation_input_tokens": 0,
                    },
                }
            )
        )
    else:
        print(answer)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
