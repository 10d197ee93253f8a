"""``/metrics``: the daemon in the Prometheus text format.

Gauges are read from the engine when scraped (tasks by status per track, running attempts,
ready tasks, pauses, queue-file errors); counters and the attempt-duration histogram follow
the event hub (attempts by verdict, queue files found invalid, events by type, notifications
that could not be delivered). Counters start at zero with each daemon, as Prometheus expects.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..daemon import Engine
from ..model import STATUS_ORDER, TaskKey
from ..store import EventRow

CONTENT_TYPE = CONTENT_TYPE_LATEST

# ``*_created`` series double the output and mean little for a daemon's counters.
disable_created_metrics()  # type: ignore[no-untyped-call]

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))


class _State(Collector):
    """What the engine holds now, read at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        graph = engine.graph
        tasks = GaugeMetricFamily(
            "orchestratord_tasks", "Tasks by status, per track.", labels=["track", "status"]
        )
        running = GaugeMetricFamily(
            "orchestratord_running_attempts", "Attempts running now, per track.", labels=["track"]
        )
        ready = GaugeMetricFamily(
            "orchestratord_ready_tasks",
            "Tasks ready to start (waiting only for a slot), per track.",
            labels=["track"],
        )
        paused = GaugeMetricFamily(
            "orchestratord_track_paused", "1 when the track is paused.", labels=["track"]
        )
        for name in engine.tracks:
            counts = engine.counts(name)
            for status in STATUS_ORDER:
                tasks.add_metric([name, status.value], counts[status.value])
            running.add_metric([name], engine.running.get(name, 0))
            ready.add_metric([name], graph.ready_count(name) if name in graph.tracks else 0)
            paused.add_metric([name], 1 if name in graph.tracks and graph.track_paused(name) else 0)
        yield from (tasks, running, ready, paused)
        yield GaugeMetricFamily(
            "orchestratord_daemon_paused",
            "1 when the whole daemon is paused.",
            1 if engine.paused else 0,
        )
        errors = GaugeMetricFamily(
            "orchestratord_queue_file_errors",
            "Errors in each queue file as it is on disk now (its last good version runs).",
            labels=["file"],
        )
        found: Tally[str] = Tally()
        for problem in engine.all_problems():
            if problem.is_error:
                found[problem.file] += 1
        for file, count in sorted(found.items()):
            errors.add_metric([file], count)
        yield errors


class Metrics:
    """The daemon's metrics registry; :meth:`observe` is an event-hub consumer."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.registry.register(_State(engine))
        self.attempts = Counter(
            "orchestratord_attempts",
            "Attempts that ended, by verdict (PASS, FAIL, BLOCKED, or INTERRUPTED).",
            ["track", "verdict"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "orchestratord_attempt_duration_seconds",
            "How long attempts took, run and verification together.",
            ["track"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.invalid = Counter(
            "orchestratord_queue_file_invalid",
            "Times a queue file was found invalid (and its edit not applied).",
            registry=self.registry,
        )
        self.events = Counter(
            "orchestratord_events", "Events journaled, by type.", ["type"], registry=self.registry
        )
        self.undelivered = Counter(
            "orchestratord_notifications_failed",
            "Notifications given up on (after retries) or dropped, by hook.",
            ["hook"],
            registry=self.registry,
        )
        self._started: dict[TaskKey, float] = {}

    def observe(self, row: EventRow) -> None:
        self.events.labels(row.type).inc()
        key = row.key
        if row.type == "task_started" and key is not None:
            self._started[key] = row.mono
        elif row.type == "attempt_finished" and key is not None:
            self._ended(key, str(row.data.get("verdict")), row.mono)
        elif key is not None and key in self._started and _cuts_short(row):
            self._ended(key, "INTERRUPTED", row.mono)
        elif row.type == "queue_file_invalid":
            self.invalid.inc()

    def _ended(self, key: TaskKey, verdict: str, mono: float) -> None:
        self.attempts.labels(key.track, verdict).inc()
        started = self._started.pop(key, None)
        if started is not None:
            self.durations.labels(key.track).observe(max(0.0, mono - started))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _cuts_short(row: EventRow) -> bool:
    """An event that ends a running attempt without a verdict: the daemon stopping it, or a
    person's order (skip, cancel, accept) on a running task."""
    if row.type == "attempt_interrupted":
        return True
    return row.type in ("task_skipped", "task_blocked", "task_complete") and (
        row.data.get("by") == "order"
    )
