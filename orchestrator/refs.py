"""Resolving task refs across tracks.

``track:ID`` names one task exactly and ``track:*`` a whole track. A bare ``ID`` means the task
of that id in the same track when there is one, otherwise the only task of that id in any other
track; found nowhere, or in two or more other tracks, it is an error whose message says how to
fix it (the closest existing id, or how to qualify the ref).

Pure: works on track definitions already loaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .errors import RefError
from .model import Ref, Target, TaskKey, TrackAll, TrackDef


class RefIndex:
    """Every track and task id, for resolving refs and suggesting fixes."""

    def __init__(self, tracks: Iterable[TrackDef]) -> None:
        self._ids: dict[str, set[str]] = {}
        self._ordered_ids: dict[str, list[str]] = {}
        self._by_id: dict[str, list[str]] = {}
        for track in tracks:
            if track.name in self._ids:
                continue  # a duplicate track name is reported elsewhere; the first one wins
            ids = [t.key.id for t in track.tasks]
            self._ids[track.name] = set(ids)
            self._ordered_ids[track.name] = ids
            for ident in dict.fromkeys(ids):
                self._by_id.setdefault(ident, []).append(track.name)

    @property
    def track_names(self) -> list[str]:
        return list(self._ids)

    def tracks_with(self, ident: str) -> list[str]:
        return list(self._by_id.get(ident, ()))

    def has_track(self, name: str) -> bool:
        return name in self._ids

    def resolve(self, ref: Ref, home: str | None = None) -> Target:
        """Resolve ``ref`` as written in track ``home`` (None: on the command line)."""
        if ref.track is not None:
            if ref.track not in self._ids:
                raise RefError(
                    f"unknown track {ref.track!r} in {str(ref)!r}{self._track_hint(ref.track)}"
                )
            if ref.is_all:
                return TrackAll(ref.track)
            if ref.id not in self._ids[ref.track]:
                hint = self._id_hint(ref.id, [ref.track])
                raise RefError(f"unknown task {str(ref)!r}{hint}")
            return TaskKey(ref.track, ref.id)
        if home is not None and ref.id in self._ids.get(home, ()):
            return TaskKey(home, ref.id)
        others = [t for t in self._by_id.get(ref.id, ()) if t != home]
        if len(others) == 1:
            return TaskKey(others[0], ref.id)
        if not others:
            where = [home] if home in self._ids else []
            hint = self._id_hint(ref.id, where + [t for t in self._ids if t != home])
            scope = f" in track {home!r} or any other track" if home else " in any track"
            raise RefError(f"unknown task {ref.id!r}: no task has this id{scope}{hint}")
        options = " or ".join(f"'{t}:{ref.id}'" for t in others)
        scope = f"is not in track {home!r} and " if home else ""
        raise RefError(
            f"ambiguous task ref {ref.id!r}: it {scope}is in tracks {', '.join(others)}; "
            f"write {options}"
        )

    def _track_hint(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._ids), n=1)
        if close:
            return f"; did you mean {close[0]!r}?"
        known = ", ".join(self._ids) or "none"
        return f"; known tracks: {known}"

    def _id_hint(self, ident: str, tracks: list[str]) -> str:
        for track in tracks:
            close = difflib.get_close_matches(ident, self._ordered_ids.get(track, ()), n=1)
            if close:
                shown = close[0] if track == tracks[0] else f"{track}:{close[0]}"
                return f"; did you mean {shown!r}?"
        return ""


def resolve_text(text: str, index: RefIndex, home: str | None = None) -> Target:
    """Parse and resolve a ref typed by a user (``explain REF``)."""
    return index.resolve(Ref.parse(text), home)


def key_of(text: str, index: RefIndex) -> TaskKey:
    """Resolve a ref that must name exactly one task (not ``track:*``)."""
    target = resolve_text(text, index)
    if isinstance(target, TrackAll):
        raise RefError(f"{text!r} names a whole track; name one task as track:ID")
    return target
