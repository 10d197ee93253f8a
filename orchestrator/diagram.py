"""The graph across tracks drawn as text, Mermaid or Graphviz dot.

Cross-track edges and ``start_after`` triggers are drawn explicitly, so that the shape of a
multi-track run can be read before anything starts. Pure: returns strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .graph import Graph
from .model import Status, Target, TaskKey, TrackAll

Format = Literal["text", "mermaid", "dot"]

_MARK = {
    Status.PENDING: " ",
    Status.IN_PROGRESS: ">",
    Status.COMPLETE: "x",
    Status.BLOCKED: "!",
    Status.FAILED: "F",
    Status.SKIPPED: "-",
}


def render(graph: Graph, fmt: Format = "text") -> str:
    if fmt == "mermaid":
        return "\n".join(_mermaid(graph)) + "\n"
    if fmt == "dot":
        return "\n".join(_dot(graph)) + "\n"
    return "\n".join(_text(graph)) + "\n"


def _dep_label(target: Target, home: str) -> str:
    if isinstance(target, TrackAll):
        return str(target)
    return target.id if target.track == home else str(target)


def _text(graph: Graph) -> Iterator[str]:
    yield "legend: [ ] pending  [>] in progress  [x] complete  [!] blocked  [F] failed  [-] skipped"
    for name, spec in graph.tracks.items():
        yield ""
        header = f"track {name} ({graph.remaining(name)} of {len(spec.tasks)} not done)"
        if spec.trigger:
            state = "holds" if graph.trigger_holds(name) else "waiting"
            header += f"  start_after: {', '.join(str(t) for t in spec.trigger)} [{state}]"
        if spec.paused:
            header += "  [paused]"
        yield header
        for node in spec.tasks:
            line = f"  [{_MARK[graph.status(node.key)]}] {node.key.id}"
            if node.deps:
                line += "  <- " + ", ".join(_dep_label(d, name) for d in node.deps)
            if graph.is_ready(node.key):
                line += "  (ready)"
            yield line


def _ids(graph: Graph) -> dict[TaskKey, str]:
    return {key: f"t{i}" for i, key in enumerate(graph.keys())}


def _quote(text: str) -> str:
    return text.replace('"', "'")


def _mermaid(graph: Graph) -> Iterator[str]:
    ids = _ids(graph)
    tracks = {name: f"track{i}" for i, name in enumerate(graph.tracks)}
    yield "flowchart LR"
    for name, spec in graph.tracks.items():
        yield f'  subgraph {tracks[name]}["{_quote(name)}"]'
        for node in spec.tasks:
            yield f'    {ids[node.key]}["{_quote(node.key.id)}"]:::{graph.status(node.key).value}'
        yield "  end"
    for name, spec in graph.tracks.items():
        for node in spec.tasks:
            for dep in node.deps:
                source = tracks.get(dep.track) if isinstance(dep, TrackAll) else ids.get(dep)
                if source is None:
                    continue
                arrow = "==>" if dep.track != name else "-->"
                yield f"  {source} {arrow} {ids[node.key]}"
        for target in spec.trigger:
            source = tracks.get(target.track) if isinstance(target, TrackAll) else ids.get(target)
            if source is not None:
                yield f"  {source} -. start_after .-> {tracks[name]}"
    for status, colour in _COLOURS.items():
        yield f"  classDef {status.value} fill:{colour}"


_COLOURS = {
    Status.PENDING: "#eeeeee",
    Status.IN_PROGRESS: "#ffe08a",
    Status.COMPLETE: "#b8e6b8",
    Status.BLOCKED: "#f4b6b6",
    Status.FAILED: "#e57373",
    Status.SKIPPED: "#d0d0d0",
}


def _dot(graph: Graph) -> Iterator[str]:
    ids = _ids(graph)
    yield "digraph orchestratord {"
    yield "  rankdir=LR; compound=true; node [shape=box, style=filled];"
    for i, (name, spec) in enumerate(graph.tracks.items()):
        yield f"  subgraph cluster_{i} {{"
        yield f'    label="{_quote(name)}";'
        if spec.trigger:
            yield f'    start_{i} [label="start_after", shape=diamond, fillcolor="#ffffff"];'
        for node in spec.tasks:
            colour = _COLOURS[graph.status(node.key)]
            yield f'    {ids[node.key]} [label="{_quote(node.key.id)}", fillcolor="{colour}"];'
        yield "  }"
    anchors = {name: ids[spec.tasks[0].key] for name, spec in graph.tracks.items() if spec.tasks}
    clusters = {name: f"cluster_{i}" for i, name in enumerate(graph.tracks)}
    for i, (name, spec) in enumerate(graph.tracks.items()):
        for node in spec.tasks:
            for dep in node.deps:
                yield from _dot_edge(dep, ids[node.key], ids, anchors, clusters, name)
        for target in spec.trigger:
            yield from _dot_edge(target, f"start_{i}", ids, anchors, clusters, name, dashed=True)
    yield "}"


def _dot_edge(
    dep: Target,
    head: str,
    ids: dict[TaskKey, str],
    anchors: dict[str, str],
    clusters: dict[str, str],
    home: str,
    dashed: bool = False,
) -> Iterator[str]:
    attrs = ["style=dashed"] if dashed else []
    if isinstance(dep, TrackAll):
        if dep.track not in anchors:
            return
        tail = anchors[dep.track]
        attrs.append(f"ltail={clusters[dep.track]}")
    else:
        if dep not in ids:
            return
        tail = ids[dep]
        if dep.track != home:
            attrs.append("penwidth=2")
    suffix = f" [{', '.join(attrs)}]" if attrs else ""
    yield f"  {tail} -> {head}{suffix};"
