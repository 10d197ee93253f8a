"""The inotify reader: what a save, a rename and a removal look like, and a watch that ends."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator import inotify

pytestmark = pytest.mark.skipif(not inotify.available(), reason="no inotify on this system")


def settle(watch: inotify.DirWatch) -> inotify.Events:
    """What is queued after the kernel has had a moment."""
    time.sleep(0.01)
    return watch.read()


def test_an_idle_watch_reads_nothing_and_does_not_block(tmp_path: Path) -> None:
    with inotify.DirWatch(tmp_path) as watch:
        assert watch.read() == inotify.Events(frozenset())


def test_writes_renames_and_removals_name_the_entries(tmp_path: Path) -> None:
    with inotify.DirWatch(tmp_path) as watch:
        (tmp_path / "a.json").write_text("{}")
        assert settle(watch).names == {"a.json"}
        tmp = tmp_path / ".a.json.tmp"
        tmp.write_text("{ }")
        os.replace(tmp, tmp_path / "a.json")  # how most editors save
        assert settle(watch).names == {".a.json.tmp", "a.json"}
        (tmp_path / "a.json").unlink()
        assert settle(watch).names == {"a.json"}
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "deep.json").write_text("{}")  # not recursive
        assert settle(watch).names == {"sub"}
        assert watch.read().names == frozenset()


def test_the_watch_ends_when_the_directory_goes(tmp_path: Path) -> None:
    directory = tmp_path / "tracks"
    directory.mkdir()
    with inotify.DirWatch(directory) as watch:
        directory.rename(tmp_path / "elsewhere")
        assert settle(watch).gone
    with pytest.raises(OSError, match="cannot watch"):
        inotify.DirWatch(directory)
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(OSError, match="cannot watch"):
        inotify.DirWatch(file)  # a directory only


def test_a_closed_watch_releases_its_descriptor(tmp_path: Path) -> None:
    watch = inotify.DirWatch(tmp_path)
    fd = watch.fileno()
    watch.close()
    watch.close()
    with pytest.raises(OSError):
        os.fstat(fd)
