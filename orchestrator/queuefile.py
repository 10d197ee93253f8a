"""Queue files on disk: finding them, reading them, and writing them back atomically.

Reading turns bytes into a :class:`QueueFile`: the raw text (kept so that writes change only
what they must), the parsed document, the track it defines, and every problem found. Writing
goes through a temporary file in the same directory, flushed and fsynced, then renamed over
the original, so a reader never sees half a file; the file's own formatting is kept
(``jsonedit``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import jsonedit
from .errors import UsageError
from .model import TrackDef
from .problems import ROOT, Problem
from .schema import TaskMemo, load_document

BOM = "\ufeff"

FileId = tuple[int, int, int]
"""A version of a file: inode, size, modification time (ns)."""


@dataclass(frozen=True, slots=True)
class QueueFile:
    """One queue file as read from disk."""

    path: Path
    display: str
    text: str | None
    doc: dict[str, object] | None
    track: TrackDef | None
    problems: tuple[Problem, ...]
    digest: str
    """SHA-256 of the bytes read: tells the daemon's own writes from a user's."""

    @property
    def ok(self) -> bool:
        return self.track is not None and not any(p.is_error for p in self.problems)


TEMP_SUFFIX = ".tmp"
"""The end of the names of the temporary files a write makes next to the file it replaces."""


def display_path(path: Path, base: Path | None = None) -> str:
    """``path`` relative to ``base`` (default: the working directory) when inside it."""
    base = base or Path.cwd()
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def is_queue_file_name(name: str) -> bool:
    """``*.json``, but not hidden files, editor locks or temporary files."""
    return name.endswith(".json") and not name.startswith((".", "#", "~")) and name != ".json"


def discover(directory: Path) -> list[Path]:
    """The queue files of a tracks directory, sorted by name (not recursive)."""
    return sorted(p for p in directory.iterdir() if is_queue_file_name(p.name) and p.is_file())


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files stay as they are, directories become their queue files; missing paths are errors."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(discover(path))
        elif path.exists():
            out.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse(
    display: str,
    stem: str,
    data: bytes,
    path: Path | None = None,
    *,
    sha: str | None = None,
    memo: TaskMemo | None = None,
) -> QueueFile:
    """Parse the bytes of a queue file (pure); ``sha`` is their digest, if known already;
    ``memo`` the tasks of the previous read of this file."""
    sha = sha or digest(data)
    where = path or Path(display)

    def failed(message: str, location: str = ROOT) -> QueueFile:
        problem = Problem(display, location, message)
        return QueueFile(where, display, None, None, None, (problem,), sha)

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return failed(f"not valid UTF-8 at byte {exc.start}; save the file as UTF-8")
    if not text.strip():
        return failed("the file is empty; a queue file is a JSON object with a 'features' array")
    try:
        doc = orjson.loads(text.removeprefix(BOM))
    except orjson.JSONDecodeError as exc:
        return failed(f"invalid JSON: {exc.msg}", f"line {exc.lineno} column {exc.colno}")
    track, problems = load_document(display, stem, doc, memo)
    parsed = doc if isinstance(doc, dict) else None
    return QueueFile(where, display, text, parsed, track, tuple(problems), sha)


def read(path: Path, base: Path | None = None, memo: TaskMemo | None = None) -> QueueFile:
    """Read and parse one queue file; an unreadable file becomes a problem, not an exception."""
    display = display_path(path, base)
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = Problem(display, ROOT, f"cannot read the file: {exc.strerror or exc}")
        return QueueFile(path, display, None, None, None, (problem,), "")
    return parse(display, path.stem, data, path, memo=memo)


def read_all(
    paths: Sequence[Path],
    base: Path | None = None,
    memos: Callable[[Path], TaskMemo] | None = None,
) -> list[QueueFile]:
    """Read every file; ``memos`` gives the task memo of a file (see ``schema.TaskMemo``)."""
    return [read(p, base, memos(p) if memos is not None else None) for p in paths]


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temp file in the same directory, fsync, rename, fsync dir.

    The file keeps its permission bits. Readers see either the old or the new file, never a
    mix, and a crash at any point leaves one of the two.
    """
    tmp_name, _ = _prepare(path, text)
    _commit(tmp_name, path)


def _prepare(path: Path, text: str | bytes) -> tuple[str, FileId]:
    """The new version in a temporary file next to ``path``, on disk; and its id."""
    directory = path.parent
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
            st = os.fstat(handle.fileno())
        os.chmod(tmp_name, mode)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # A rename keeps inode, size and modification time: this is the id the file will have.
    return tmp_name, (st.st_ino, st.st_size, st.st_mtime_ns)


def remove_leftover_temps(path: Path) -> list[Path]:
    """Remove the temporary files that writes of ``path`` left next to it: a process killed
    between creating one and renaming it into place (``kill -9``, a power cut) leaves it
    there, half written or whole, and nothing else would ever remove it. Only names of the
    form :func:`_prepare` gives (``.NAME.XXXXXXXX.tmp``); for a process that writes ``path``
    alone (the daemon, holding the state directory's lock). Returns what was removed."""
    removed = []
    pattern = f".{glob.escape(path.name)}.{'?' * 8}{TEMP_SUFFIX}"
    for temp in sorted(path.parent.glob(pattern)):
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            removed.append(temp)
    return removed


def _commit(tmp_name: str, path: Path) -> None:
    try:
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def render(qf: QueueFile, edits: Sequence[tuple[jsonedit.Path, jsonedit.JSONValue]]) -> str:
    """The file's new text with ``edits`` applied and everything else kept as it was."""
    if qf.text is None:
        raise ValueError(f"{qf.display}: cannot edit a file that did not parse")
    insert_before: dict[jsonedit.Path, str] = {}
    if qf.track is not None:
        insert_before[()] = qf.track.list_key
    return jsonedit.apply_edits(qf.text, edits, insert_before=insert_before)


def save(qf: QueueFile, edits: Sequence[tuple[jsonedit.Path, jsonedit.JSONValue]]) -> str:
    """Apply ``edits`` to the file on disk atomically; return the text written."""
    text = render(qf, edits)
    write_atomic(qf.path, text)
    return text


def file_id(path: Path) -> FileId | None:
    """What tells one version of a file from another: inode, size, modification time."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def write_if_unchanged(
    path: Path,
    text: str | bytes,
    expected: FileId | None,
    *,
    announce: Callable[[FileId], None] | None = None,
) -> FileId | None:
    """Write ``text`` (or bytes) atomically unless the file changed since ``expected`` was taken.

    The caller read the file after taking ``expected``; if someone saved it since, the write
    is skipped (None) so that it can be merged again: an edit is never overwritten by a write
    that did not see it. The check is made again after the new version is on disk, right
    before the rename, so the window left is that of one ``stat`` and one ``rename``.
    Returns the id of the version written.

    ``announce`` is called with that id right before the rename: a watcher can see the new
    file before this function returns (the directory is fsynced after the rename).
    """
    if file_id(path) != expected:
        return None
    tmp_name, written = _prepare(path, text)
    if file_id(path) != expected:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        return None
    if announce is not None:
        announce(written)
    _commit(tmp_name, path)
    return written
