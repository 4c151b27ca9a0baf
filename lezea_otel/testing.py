"""A test kit: run a tracker with the SDK's in-memory exporters and read what it produced.

The exporter runs in a thread of the test process (``LEZEA_EXPORTER=thread`` for these trackers:
exporter objects cannot cross into a process), and every read first delivers what the audit holds,
so a test reads what the tracker recorded up to that moment, deterministically.

Example:
    ```py
    from lezea_otel.testing import Capture

    capture = Capture(tmp_path)
    tracker = capture.tracker("unit")
    tracker.log_training_step(1, {"loss": 0.5})
    tracker.finalize_experiment()
    assert capture.points("lezea.training.loss")[0].value == 0.5
    ```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lezea_otel.tracker import ExperimentTracker

__all__ = ["Capture", "Point"]


@dataclass(frozen=True)
class Point:
    """One exported metric data point, flattened."""

    name: str
    attributes: dict[str, Any]
    value: Any
    unit: str | None
    kind: str


class CapturedMetrics(MetricExporter):
    """A metric exporter keeping the last ``MetricsData`` it got: the exporter sends every series each
    time."""

    def __init__(self) -> None:
        super().__init__()
        self.data: MetricsData | None = None

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        self.data = metrics_data
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """The data stays readable after the run ends."""

    def get_metrics_data(self) -> MetricsData | None:
        """As ``InMemoryMetricReader.get_metrics_data``: the run's metrics as last exported."""
        return self.data


@dataclass
class Capture:
    """In-memory span, metric and log exporters wired into every tracker made by :meth:`tracker`."""

    runs_dir: Path
    spans_exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    metric_reader: CapturedMetrics = field(default_factory=CapturedMetrics)
    logs_exporter: InMemoryLogRecordExporter = field(default_factory=InMemoryLogRecordExporter)
    _last_points: list[Point] = field(default_factory=list)
    _trackers: list[ExperimentTracker] = field(default_factory=list)

    def tracker(self, name: str = "test", **kwargs: Any) -> ExperimentTracker:
        kwargs.setdefault("runs_dir", self.runs_dir)
        kwargs.setdefault("quiet", True)
        kwargs.setdefault("extra_exporters", (self.spans_exporter, self.metric_reader, self.logs_exporter))
        auto_start = kwargs.pop("auto_start", False)
        tracker = ExperimentTracker(name, **kwargs)
        self._trackers.append(tracker)
        if auto_start:
            tracker.start(prometheus_port=None)
        return tracker

    def close(self) -> None:
        """Finalize the trackers still open (a test that ends without): each ends now, not whenever the
        garbage collector drops it (then it would end ``abandoned`` on a thread of its own, during a later
        test)."""
        for tracker in self._trackers:
            if tracker._session.started:  # one never started leaves nothing to end
                tracker.finalize_experiment()

    def sync(self) -> None:
        """What the trackers recorded so far reaches the capture now (with the exporter in a thread)."""
        for tracker in self._trackers:
            tracker._sync_exporter()

    def sample_observers(self) -> None:
        """Every tracker's resource observers take a sample now, as their sampler does every
        ``LEZEA_OBSERVE_INTERVAL``: a test forces one rather than wait."""
        for tracker in self._trackers:
            tracker._sample_observers()

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        self.sync()
        return [s for s in self.spans_exporter.get_finished_spans() if name is None or s.name == name]

    def logs(self, event_name: str | None = None) -> list[ReadableLogRecord]:
        self.sync()
        records = self.logs_exporter.get_finished_logs()
        return [r for r in records if event_name is None or r.log_record.event_name == event_name]

    def collect(self) -> list[Point]:
        """Collect now; after the tracker's shutdown, the points of its final collection."""
        self.sync()
        data = None
        try:
            data = self.metric_reader.get_metrics_data()
        except Exception:  # noqa: BLE001 - the reader is shut down with its tracker
            data = None
        if data is None:
            return self._last_points
        points = []
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = type(metric.data).__name__
                    for point in metric.data.data_points:
                        value: Any
                        if isinstance(point, NumberDataPoint):
                            value = point.value
                        else:  # a histogram's point: its count and sum
                            value = {"count": point.count, "sum": point.sum}
                        points.append(Point(metric.name, dict(point.attributes or {}), value, metric.unit,
                                            kind))
        self._last_points = points
        return points

    def metrics_data(self) -> MetricsData | None:
        """The run's metrics as last exported (after a sync), as the SDK's ``MetricsData``."""
        self.sync()
        try:
            return self.metric_reader.get_metrics_data()
        except Exception:  # noqa: BLE001 - an SDK reader is shut down with its tracker
            return None

    def points(self, name: str, **attributes: Any) -> list[Point]:
        """Points of metric ``name`` whose attributes include ``attributes`` (dots as ``__``)."""
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        return [p for p in self.collect() if p.name == name
                and all(p.attributes.get(k) == v for k, v in wanted.items())]
