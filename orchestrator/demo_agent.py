"""A small stand-in for an AI coding agent, used by ``make run`` (no account, no network).

It reads the prompt it is given (argv[1]) the way an agent would: the task id, the ``File:``
and ``Tests:`` lines, the completion promise, and the previous attempt's failure. It then
really writes the module and its unit test in the working directory, taking a moment over it.

Tasks named in ``DEMO_FLAKY`` (comma-separated ids) get a subtle bug on their first attempt:
the agent still claims success and prints the promise, the verification command catches the
bug, and the next attempt, given the failure output, fixes it. That is the Ralph loop.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
from pathlib import Path

_TASK = re.compile(r"task (\S+) of track (\S+)\.")
_FILE = re.compile(r"^File: (.+)$", re.MULTILINE)
_TESTS = re.compile(r"^Tests: (.+)$", re.MULTILINE)
_PROMISE = re.compile(r"<promise>(.+?)</promise>")


def _think(message: str, rng: random.Random) -> None:
    print(message, flush=True)
    time.sleep(rng.uniform(0.2, 0.6))


def _module(task_id: str, description: str, broken: bool) -> str:
    ready = "False" if broken else "True"
    return (
        f'"""{description}"""\n\n'
        f"TASK = {task_id!r}\n\n\n"
        "def summary() -> str:\n"
        f'    return f"{{TASK}}: " + __doc__.split(":")[0]\n\n\n'
        "def ready() -> bool:\n"
        f"    return {ready}\n"
    )


def _test(module: str) -> str:
    return (
        "import sys\nimport unittest\n\n"
        'sys.path.insert(0, "src")\n\n'
        f"import {module}\n\n\n"
        f"class Test{module.title().replace('_', '')}(unittest.TestCase):\n"
        "    def test_ready(self) -> None:\n"
        f"        self.assertTrue({module}.ready())\n\n"
        "    def test_summary_names_the_task(self) -> None:\n"
        f"        self.assertIn({module}.TASK, {module}.summary())\n\n\n"
        'if __name__ == "__main__":\n    unittest.main()\n'
    )


def main(argv: list[str]) -> int:
    prompt = argv[1] if len(argv) > 1 else sys.stdin.read()
    task = _TASK.search(prompt)
    file = _FILE.search(prompt)
    tests = _TESTS.search(prompt)
    if not (task and file and tests):
        print("<blocked>the prompt names no file or tests to work on</blocked>")
        return 0
    task_id = task.group(1)
    rng = random.Random(f"{task_id}-{os.environ.get('ORCHESTRATORD_ATTEMPT')}")
    retry = "previous failure" in prompt
    description = prompt.split("\n\n", 2)[1].strip().splitlines()[0]
    flaky = task_id in os.environ.get("DEMO_FLAKY", "").split(",")
    broken = flaky and not retry
    if retry:
        failure = prompt.split("----- previous failure -----", 1)[1].strip().splitlines()[0]
        _think(f"the last attempt failed ({failure}); reading the test output", rng)
    _think(f"working on {task_id}: {description[:60]}", rng)
    source, test = Path(file.group(1).strip()), Path(tests.group(1).split(",")[0].strip())
    source.parent.mkdir(parents=True, exist_ok=True)
    test.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(_module(task_id, description, broken), encoding="utf-8")
    _think(f"wrote {source}", rng)
    test.write_text(_test(source.stem), encoding="utf-8")
    _think(f"wrote {test}", rng)
    promise = _PROMISE.search(prompt)
    print("all done" + (" (I think)" if broken else ""), flush=True)
    if promise:
        print(promise.group(0), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
