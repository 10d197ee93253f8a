"""What the daemon does with memory it is done with (``orchestrator.memory``)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from orchestrator import memory
from orchestrator.supervisor import Control

from .conftest import WriteTrack
from .daemon_harness import run_once

needs_glibc = pytest.mark.skipif(
    memory._malloc_trim() is None, reason="malloc_trim is glibc's (Linux with glibc only)"
)

# Freed blocks below the C library's mmap threshold stay in its heap, and the last block
# alive keeps the heap from shrinking at its end: the freed pages stay resident until given
# back. Resident sizes in MiB, from /proc (Linux).
_PROGRAM = """
import sys
from orchestrator import memory

def resident():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

blocks = [bytearray(b"x" * 100_000) for _ in range(400)]
last = bytearray(b"x" * 100_000)
del blocks
before = resident()
given = memory.give_back()
print(before, resident(), given)
"""


@needs_glibc
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],  # this checkout's package
    ).stdout.split()
    before, after, given = float(out[0]), float(out[1]), out[2]
    assert given == "True"
    assert before - after > 20, (before, after)  # about 40 MiB were freed


def test_settle_collects_and_keeps_what_is_alive_out_of_the_collectors_sight() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    Cycle()
    frozen = gc.get_freeze_count()
    try:
        memory.settle(keep=True)
        assert gc.get_freeze_count() > frozen
        assert not any(type(o) is Cycle for o in gc.get_objects())
    finally:
        gc.unfreeze()


@pytest.mark.anyio
async def test_what_start_up_loaded_is_kept_out_of_the_collectors_sight(
    tracks_dir: Path, write_track: WriteTrack
) -> None:
    write_track("t", [{"id": f"T{i}", "command": "true"} for i in range(3)])
    gc.unfreeze()
    try:
        frozen: list[int] = []
        await run_once(tracks_dir, on_ready=lambda _engine: frozen.append(gc.get_freeze_count()))
        assert frozen[0] > 0  # the daemon settled its memory once start-up was over
    finally:
        gc.unfreeze()


@pytest.mark.anyio
async def test_a_reload_that_adds_a_track_gives_memory_back(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    # A waits until the task of the track added while the daemon runs has run.
    write_track("t", [{"id": "A", "command": f"while [ ! -e {gate} ]; do sleep 0.02; done"}])
    given: list[str] = []
    real = memory.give_back
    ready = anyio.Event()

    def counted() -> bool:
        given.append("after ready" if ready.is_set() else "start-up")
        return real()

    async def add_a_track() -> None:
        await ready.wait()
        write_track("u", [{"id": "B", "command": f"touch {gate}"}])
        assert control.reload is not None
        result = await control.reload()
        assert result.added == ("u",)

    monkeypatch.setattr(memory, "give_back", counted)
    control = Control()
    async with anyio.create_task_group() as tg:
        tg.start_soon(add_a_track)
        run = await run_once(tracks_dir, control=control, on_ready=lambda _engine: ready.set())
    assert run.code == 0
    assert given == ["start-up", "after ready"]  # the reload that added track u gave back
